"""The transition table through the wire: InProcessLink + MeterClient, or raw frames."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from firmware_sim.accounts import CAPACITY_MESSAGE, AccountBook, Settings, Supervisor
from firmware_sim.meter import MAX_BATCH_RECORDS, TRANSITIONS, Meter, State, refusal
from firmware_sim.testing import InProcessLink
from protocol.client import MeterClient, MeterError
from protocol.decoder import FrameDecoder, FrameReceived
from protocol.errors import ErrorCode
from protocol.frames import encode_frame
from protocol.messages import (
    CATALOGUE,
    Abort,
    Ack,
    Auth,
    Begin,
    Busy,
    Commit,
    CounterPage,
    DeleteAccounts,
    Error,
    Hello,
    Identify,
    MailDone,
    Message,
    PutAccounts,
    PutRecord,
    ReadAccounts,
    ReadCounters,
    ResetCounters,
    RunMail,
    SetSettings,
)

SUPER = "Super1"


def make_meter(capacity: int = 25) -> Meter:
    sup = Supervisor(n=2**4)
    sup.set_password(SUPER)
    book = AccountBook(Settings(capacity=capacity))
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("ops", "", "Operations")
    book.charge(2, None, 4, 1_960, book.settings.cutoff or __import__("datetime").date.today())
    return Meter(serial="T-1", book=book, supervisor=sup)


def client_for(meter: Meter) -> MeterClient:
    return MeterClient(InProcessLink(meter))


SAMPLES: dict[type[Message], Message] = {
    Hello: Hello(1),
    Auth: Auth(SUPER),
    ReadAccounts: ReadAccounts(),
    Begin: Begin(1),
    PutAccounts: PutAccounts(1, (PutRecord("new", "", "New"),)),
    DeleteAccounts: DeleteAccounts(1, ("ops",)),
    Commit: Commit(1),
    Abort: Abort(1),
    ReadCounters: ReadCounters(),
    ResetCounters: ResetCounters(0),
    RunMail: RunMail(2, "", 1, 500),
    SetSettings: SetSettings(reset_individual=True),
}


def test_samples_cover_every_request_type() -> None:
    requests = {cls for cls in CATALOGUE.values() if cls.IS_REQUEST}
    assert set(SAMPLES) == requests


def _into(state: State, client: MeterClient) -> None:
    if state is State.NO_SESSION:
        return
    client.hello()
    if state in (State.SUPERVISOR, State.TRANSACTION):
        client.call(Auth(SUPER), expect=Ack)
    if state is State.TRANSACTION:
        client.call(Begin(1), expect=Ack)


def _fingerprint(meter: Meter) -> object:
    return meter.book.digest(), meter.book.records(include_passwords=True), meter.book.settings


ABSENT = [
    (state, cls)
    for state in State
    for cls in SAMPLES
    if (state, cls) not in TRANSITIONS
]


@pytest.mark.parametrize(("state", "cls"), ABSENT, ids=lambda v: getattr(v, "__name__", str(v)))
def test_absent_pairs_are_refused_and_change_nothing(state: State, cls: type[Message]) -> None:
    meter = make_meter()
    client = client_for(meter)
    _into(state, client)
    assert meter.state is state
    before = _fingerprint(meter)
    with pytest.raises(MeterError) as info:
        client.call(SAMPLES[cls])
    assert info.value.code == refusal(state, cls)
    assert _fingerprint(meter) == before
    assert not meter.is_busy(time.monotonic())


def test_the_refusal_codes_are_the_documented_ones() -> None:
    assert refusal(State.READY, Begin) is ErrorCode.NOT_AUTHENTICATED
    assert refusal(State.SUPERVISOR, Commit) is ErrorCode.NO_TRANSACTION
    assert refusal(State.TRANSACTION, RunMail) is ErrorCode.SETUP_IN_PROGRESS
    assert refusal(State.NO_SESSION, ReadAccounts) is ErrorCode.SEQUENCE


@pytest.mark.parametrize("reply_cls", [c for c in CATALOGUE.values() if not c.IS_REQUEST])
def test_replies_are_never_accepted_as_requests(reply_cls: type[Message]) -> None:
    assert not any(cls is reply_cls for _, cls in TRANSITIONS)
    for state in State:
        assert refusal(state, reply_cls) is ErrorCode.UNKNOWN_MESSAGE


def test_a_reply_frame_sent_to_the_meter_is_unknown() -> None:
    meter = make_meter()
    wire = Wire(meter)
    wire.call(Hello(4))
    before = _fingerprint(meter)
    reply = wire.call(Ack(1))
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_MESSAGE
    assert _fingerprint(meter) == before


# ----------------------------------------------------------------- raw frames


class Wire:
    """Raw frames into a meter at explicit times; one reply frame back per send."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.decoder = FrameDecoder()
        self.seq = 0

    def send(self, msg_type: int, payload: bytes, now: float = 0.0, seq: int | None = None
             ) -> Message:
        from protocol.messages import decode

        use = self.seq if seq is None else seq
        if seq is None:
            self.seq += 1
        out = self.meter.receive(encode_frame(msg_type, use, payload), now)
        frames = [e.frame for e in self.decoder.feed(out) if isinstance(e, FrameReceived)]
        assert len(frames) == 1 and frames[0].seq == use
        return decode(frames[0].type, frames[0].payload)

    def call(self, msg: Message, now: float = 0.0, seq: int | None = None) -> Message:
        return self.send(msg.TYPE, msg.encode(), now, seq)


def _wire_supervisor(meter: Meter) -> Wire:
    wire = Wire(meter)
    assert isinstance(wire.call(Hello(9)), Identify)
    assert isinstance(wire.call(Auth(SUPER)), Ack)
    return wire


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        (Auth.TYPE, b""),
        (Auth.TYPE, b"\x05ab"),  # str8 says 5 bytes, 2 follow
        (Begin.TYPE, b"\x00\x00"),  # u32 cut short
        (Begin.TYPE, b"\x00\x00\x00\x01\xff"),  # trailing byte
        (RunMail.TYPE, b""),
        (PutAccounts.TYPE, b"\x00\x00\x00\x01\x01\x00\x01"),  # group promises a record
    ],
)
def test_malformed_payload_is_error_malformed(msg_type: int, payload: bytes) -> None:
    meter = make_meter()
    wire = _wire_supervisor(meter)
    before = _fingerprint(meter)
    reply = wire.send(msg_type, payload)
    assert isinstance(reply, Error) and reply.code == ErrorCode.MALFORMED
    assert _fingerprint(meter) == before
    assert isinstance(wire.call(ReadCounters()), CounterPage)  # the session goes on


def test_commit_without_a_transaction() -> None:
    meter = make_meter()
    client = client_for(meter)
    _into(State.SUPERVISOR, client)
    with pytest.raises(MeterError) as info:
        client.call(Commit(1))
    assert info.value.code == ErrorCode.NO_TRANSACTION
    client.call(Begin(2), expect=Ack)
    with pytest.raises(MeterError) as info:
        client.call(Commit(3))  # not the open transaction
    assert info.value.code == ErrorCode.NO_TRANSACTION
    assert meter.state is State.SUPERVISOR  # an error drops the staged transaction


def test_put_for_an_unknown_parent_drops_the_transaction() -> None:
    meter = make_meter()
    client = client_for(meter)
    _into(State.TRANSACTION, client)
    before = _fingerprint(meter)
    batch = (PutRecord("a", "", "A"), PutRecord("b", "nowhere", "B"))
    with pytest.raises(MeterError) as info:
        client.call(PutAccounts(1, batch))
    assert info.value.code == ErrorCode.UNKNOWN_PARENT and info.value.index == 1
    with pytest.raises(MeterError) as info:
        client.call(Commit(1))
    assert info.value.code == ErrorCode.NO_TRANSACTION
    assert _fingerprint(meter) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda n: PutAccounts(1, tuple(PutRecord("", "", "") for _ in range(n))),
        lambda n: DeleteAccounts(1, ("",) * n),
    ],
    ids=["put", "delete"],
)
def test_oversized_batch(make: Callable[[int], Message]) -> None:
    meter = make_meter()
    client = client_for(meter)
    _into(State.TRANSACTION, client)
    before = _fingerprint(meter)
    with pytest.raises(MeterError) as info:
        client.call(make(MAX_BATCH_RECORDS + 1))
    assert info.value.code == ErrorCode.BATCH_TOO_LARGE
    assert _fingerprint(meter) == before


def test_capacity_refusal() -> None:
    meter = make_meter(capacity=25)
    client = client_for(meter)
    _into(State.TRANSACTION, client)
    records = tuple(PutRecord(f"c{i}", "", f"Cost {i}") for i in range(24))
    with pytest.raises(MeterError) as info:
        client.call(PutAccounts(1, records))
    assert info.value.code == ErrorCode.CAPACITY
    assert info.value.index == 23  # 2 exist: the 24th new one is the 26th
    assert CAPACITY_MESSAGE in str(info.value)
    client.call(Begin(2), expect=Ack)
    client.call(PutAccounts(2, records[:23]), expect=Ack)
    client.call(Commit(2))
    assert meter.book.chargeable_count() == 25


def test_busy_during_a_mail_run_with_duration() -> None:
    meter = make_meter()
    wire = Wire(meter)
    wire.call(Hello(3), now=10.0)
    done = wire.call(RunMail(2, "", 2, 1_000, duration_ms=500), now=10.0)
    assert isinstance(done, MailDone) and done.pieces == 6
    seq = wire.seq
    busy = wire.call(ReadCounters(), now=10.1, seq=seq)
    assert isinstance(busy, Busy) and busy.retry_after_ms > 0
    busy_again = wire.call(ReadCounters(), now=10.3, seq=seq)  # BUSY is not cached
    assert isinstance(busy_again, Busy)
    page = wire.call(ReadCounters(), now=10.51, seq=seq)
    assert isinstance(page, CounterPage)
    assert {e.number: e.pieces for e in page.entries} == {1: 0, 2: 6}


def test_busy_is_retried_by_the_client() -> None:
    meter = make_meter()
    client = client_for(meter)
    client.hello()
    client.call(RunMail(2, "", 1, 10, duration_ms=150), expect=MailDone)
    page = client.call(ReadCounters(), expect=CounterPage)
    assert client.session.stats.busy >= 1
    assert {e.number: e.pieces for e in page.entries}[2] == 5


def test_wrong_supervisor_password_and_lockout() -> None:
    meter = make_meter()
    client = client_for(meter)
    client.hello()
    for _ in range(meter.supervisor.max_failures - 1):
        with pytest.raises(MeterError) as info:
            client.call(Auth("wrong-one"))
        assert info.value.code == ErrorCode.BAD_SUPERVISOR_PASSWORD
        assert "wrong-one" not in str(info.value)
        assert meter.state is State.READY
    with pytest.raises(MeterError) as info:
        client.call(Auth("wrong-one"))
    assert info.value.code == ErrorCode.LOCKED_OUT
    with pytest.raises(MeterError) as info:
        client.call(Auth(SUPER))  # even the right one, while locked out
    assert info.value.code == ErrorCode.LOCKED_OUT
    with pytest.raises(MeterError) as info:
        client.call(Begin(1))
    assert info.value.code == ErrorCode.NOT_AUTHENTICATED


def test_abort_and_commit_happy_path() -> None:
    meter = make_meter()
    client = client_for(meter)
    _into(State.TRANSACTION, client)
    client.call(PutAccounts(1, (PutRecord("x", "", "X"),)), expect=Ack)
    client.call(Abort(1), expect=Ack)
    assert "x" not in meter.book
    client.call(Begin(2), expect=Ack)
    client.call(PutAccounts(2, (PutRecord("x", "", "X"),)), expect=Ack)
    client.call(Commit(2))
    assert "x" in meter.book and meter.state is State.SUPERVISOR
