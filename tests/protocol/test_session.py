from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode
from protocol.frames import encode_frame
from protocol.messages import Ack, Begin, Busy, Error, Hello, decode
from protocol.session import ClientSession, ServerSession
from tests.protocol.lossy import LossyLine, run_exchange


def _reqs(n: int) -> list[Begin]:
    return [Begin(txn=i) for i in range(n)]


def test_clean_line_applies_each_request_once_in_order() -> None:
    applied, replies, client, _ = run_exchange(_reqs(40), LossyLine(1), LossyLine(2), window=8)
    assert applied == _reqs(40)
    assert replies == [Ack(i) for i in range(40)]
    assert client.stats.retransmissions == 0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 60),
    window=st.integers(1, 16),
    drop=st.floats(0, 0.3),
    corrupt=st.floats(0, 0.3),
    dup=st.floats(0, 0.3),
)
def test_lossy_line_never_applies_twice_nor_skips(
    seed: int, n: int, window: int, drop: float, corrupt: float, dup: float
) -> None:
    applied, replies, _, _ = run_exchange(
        _reqs(n),
        LossyLine(seed, drop, corrupt, dup),
        LossyLine(seed + 1, drop, corrupt, dup),
        window=window,
    )
    assert applied == _reqs(n)  # exactly once, in order
    assert replies == [Ack(i) for i in range(n)]


def test_busy_is_waited_out_and_not_cached() -> None:
    applied, replies, client, server = run_exchange(
        _reqs(5), LossyLine(3), LossyLine(4), busy_steps=30
    )
    assert applied == _reqs(5)
    assert replies == [Ack(i) for i in range(5)]
    assert client.stats.busy > 0 and server.stats.busy > 0


def _with_session(seq: int = 255) -> ServerSession:
    server = ServerSession()
    server.receive(encode_frame(Hello.TYPE, seq, Hello(1).encode()))
    req = server.next_request()
    assert req is not None
    server.respond(req, Ack())
    return server


def test_no_session_no_service() -> None:
    out = ServerSession().receive(encode_frame(Begin.TYPE, 0, Begin(7).encode()))
    reply = decode(out[3], out[7:-2])
    assert isinstance(reply, Error) and reply.code == ErrorCode.SEQUENCE


def test_retransmission_gets_the_cached_reply() -> None:
    server = _with_session()
    frame = encode_frame(Begin.TYPE, 0, Begin(7).encode())
    assert server.receive(frame) == b""
    req = server.next_request()
    assert req is not None
    first = server.respond(req, Ack(7))
    assert server.next_request() is None
    assert server.receive(frame) == first  # not applied again
    assert server.next_request() is None


def test_out_of_window_sequence_is_an_error() -> None:
    server = ServerSession(window=4)
    server.receive(encode_frame(Hello.TYPE, 10, Hello(1).encode()))
    req = server.next_request()
    assert req is not None
    server.respond(req, Ack())
    out = server.receive(encode_frame(Begin.TYPE, 40, Begin(1).encode()))
    reply = decode(out[3], out[7:-2])
    assert isinstance(reply, Error) and reply.code == ErrorCode.SEQUENCE


def test_snapshot_restores_durable_replies_after_a_restart() -> None:
    server = _with_session(2)
    frame = encode_frame(Begin.TYPE, 3, Begin(9).encode())
    server.receive(frame)
    req = server.next_request()
    assert req is not None
    reply = server.respond(req, Ack(9), durable=True)
    reborn = ServerSession()
    reborn.restore(server.snapshot())
    assert reborn.receive(frame) == reply
    assert reborn.next_request() is None
    # a new request after the restart needs a new session
    out = reborn.receive(encode_frame(Begin.TYPE, 4, Begin(10).encode()))
    assert reborn.next_request() is None
    assert isinstance(decode(out[3], out[7:-2]), Error)


def test_busy_reply_does_not_move_the_window() -> None:
    server = _with_session()
    frame = encode_frame(Begin.TYPE, 0, Begin(1).encode())
    out = server.receive(frame, busy=True)
    assert isinstance(decode(out[3], out[7:-2]), Busy)
    server.receive(frame)
    assert server.next_request() is not None


def test_client_gives_up_on_a_dead_line() -> None:
    client = ClientSession(rto=0.1, max_attempts=3)
    client.send(Begin(1), 0.0)
    events = []
    now = 0.0
    for _ in range(20):
        now += 1.0
        _, ev = client.poll(now)
        events += ev
    assert len(events) == 1 and events[0].attempts == 3
    assert client.in_flight == 0
