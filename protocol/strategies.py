"""Public hypothesis strategies for the meterlink protocol.

Use them to write your own property tests::

    from hypothesis import given
    from protocol import strategies as mst

    @given(mst.messages())
    def test_my_encoder(msg): ...

* ``messages()`` — any message of the catalogue (``requests()``, ``replies()``).
* ``frames()`` — encoded frames (bytes) of valid messages, with their message.
* ``streams()`` — a valid byte stream of several frames and the messages in it.
* ``corrupted_streams()`` — a valid stream with garbage inserted before, between
  or inside frames, plus which frames are guaranteed to survive intact.
* ``chunkings(data)`` — a way to split ``data`` into chunks (one byte each included).
* ``account_lists()`` / ``account_lists_breaking_one_rule()`` — account lists
  for the meter: see ``firmware_sim.testing`` (they need the meter's rules).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from protocol.digest import DIGEST_SIZE
from protocol.errors import ErrorCode
from protocol.frames import MAX_PAYLOAD, encode_frame
from protocol.messages import (
    Abort,
    AccountEntry,
    AccountPage,
    Ack,
    Auth,
    Begin,
    Busy,
    Commit,
    Committed,
    CounterEntry,
    CounterPage,
    DeleteAccounts,
    Error,
    Hello,
    Identify,
    MailDone,
    Message,
    Period,
    PutAccounts,
    PutRecord,
    ReadAccounts,
    ReadCounters,
    ResetCounters,
    RunMail,
    SetSettings,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
digests = st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)


def str8(max_size: int = 20) -> st.SearchStrategy[str]:
    """Text whose UTF-8 form fits a str8 field."""
    return st.text(max_size=max_size).filter(lambda s: len(s.encode("utf-8")) <= 255)


codes = str8(12)
passwords = str8(8)

put_records = st.builds(
    PutRecord,
    code=codes,
    parent_code=codes,
    name=str8(16),
    active=st.booleans(),
    password_enabled=st.booleans(),
    password=st.none() | passwords,
    number=u16,
)
account_entries = st.builds(
    AccountEntry,
    number=u16,
    code=codes,
    parent_code=codes,
    name=str8(16),
    active=st.booleans(),
    chargeable=st.booleans(),
    password_enabled=st.booleans(),
    ever_charged=st.booleans(),
    password=passwords,
    pieces=u32,
    postage_mills=u64,
)

_BUILDERS: dict[type[Message], Callable[[], st.SearchStrategy[Any]]] = {
    Hello: lambda: st.builds(Hello, nonce=u32, max_version=u8, client=str8()),
    Auth: lambda: st.builds(Auth, password=passwords),
    ReadAccounts: lambda: st.builds(ReadAccounts, offset=u16, limit=u16),
    Begin: lambda: st.builds(Begin, txn=u32),
    PutAccounts: lambda: st.builds(
        PutAccounts, txn=u32, records=st.lists(put_records, max_size=8).map(tuple)
    ),
    DeleteAccounts: lambda: st.builds(
        DeleteAccounts, txn=u32, codes=st.lists(codes, max_size=8).map(tuple)
    ),
    Commit: lambda: st.builds(Commit, txn=u32, expected_digest=digests),
    Abort: lambda: st.builds(Abort, txn=u32),
    ReadCounters: lambda: st.builds(ReadCounters, offset=u16, limit=u16),
    ResetCounters: lambda: st.builds(ResetCounters, number=u16),
    RunMail: lambda: st.builds(
        RunMail, number=u16, password=passwords, pieces=u32, postage_mills=u32, duration_ms=u16
    ),
    SetSettings: lambda: st.builds(
        SetSettings,
        reset_individual=st.booleans(),
        period=st.sampled_from(list(Period)).map(int),
        cutoff=u32,
        today=u32,
    ),
    Ack: lambda: st.builds(Ack, value=u32),
    Identify: lambda: st.builds(
        Identify,
        version=u8,
        model=str8(),
        serial=str8(),
        firmware=str8(),
        capacity=u16,
        chargeable=u16,
        accounts=u16,
        digest=digests,
        max_payload=u16,
        window=u8,
        authenticated=st.booleans(),
        transaction_open=st.booleans(),
        period_expired=st.booleans(),
    ),
    AccountPage: lambda: st.builds(
        AccountPage, total=u16, offset=u16, entries=st.lists(account_entries, max_size=6).map(tuple)
    ),
    Committed: lambda: st.builds(
        Committed, digest=digests, added=u16, changed=u16, deleted=u16, chargeable=u16
    ),
    CounterPage: lambda: st.builds(
        CounterPage,
        total=u16,
        offset=u16,
        entries=st.lists(
            st.builds(CounterEntry, number=u16, pieces=u32, postage_mills=u64), max_size=10
        ).map(tuple),
    ),
    MailDone: lambda: st.builds(MailDone, number=u16, pieces=u32, postage_mills=u64),
    Busy: lambda: st.builds(Busy, retry_after_ms=u16),
    Error: lambda: st.builds(
        Error, code=st.sampled_from(list(ErrorCode)).map(int), index=u16, message=str8(40)
    ),
}


def message_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Any instance of one message class."""
    return _BUILDERS[cls]()


def messages() -> st.SearchStrategy[Message]:
    """Any message of the catalogue."""
    return st.one_of([b() for b in _BUILDERS.values()])


def requests() -> st.SearchStrategy[Message]:
    return st.one_of([b() for cls, b in _BUILDERS.items() if cls.IS_REQUEST])


def replies() -> st.SearchStrategy[Message]:
    return st.one_of([b() for cls, b in _BUILDERS.items() if not cls.IS_REQUEST])


def _fits(msg: Message) -> bool:
    return len(msg.encode()) <= MAX_PAYLOAD


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, int, Message]:
    """An encoded frame of a valid message: (bytes, seq, message)."""
    msg = draw(messages().filter(_fits))
    seq = draw(u8)
    return encode_frame(msg.TYPE, seq, msg.encode()), seq, msg


@st.composite
def streams(draw: st.DrawFn, max_frames: int = 6) -> tuple[bytes, list[tuple[int, Message]]]:
    """Several frames back to back: (stream, [(seq, message), ...])."""
    items = draw(st.lists(frames(), min_size=1, max_size=max_frames))
    return b"".join(f for f, _, _ in items), [(s, m) for _, s, m in items]


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Split ``data`` into consecutive chunks (possibly one byte each)."""
    if not data:
        return []
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=len(data))))
    bounds = [0, *[c for c in cuts if 0 < c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def corrupted_streams(
    draw: st.DrawFn, max_frames: int = 6
) -> tuple[bytes, list[tuple[int, Message]], list[bool]]:
    """A stream with garbage before, between or inside frames.

    Returns ``(stream, [(seq, message), ...], intact)`` where ``intact[i]`` tells
    whether frame ``i`` was left untouched (and so must be decoded).
    """
    items = draw(st.lists(frames(), min_size=1, max_size=max_frames))
    out = bytearray()
    intact: list[bool] = []
    for frame, _, _ in items:
        if draw(st.booleans()):
            out += draw(st.binary(min_size=1, max_size=40))  # garbage before/between
        if len(frame) > 2 and draw(st.integers(0, 3)) == 0:
            cut = draw(st.integers(1, len(frame) - 1))
            if draw(st.booleans()):
                out += frame[:cut]  # truncated: the rest never comes
            else:
                out += frame[:cut] + draw(st.binary(min_size=1, max_size=8)) + frame[cut:]
            intact.append(False)
        else:
            out += frame
            intact.append(True)
    if draw(st.booleans()):
        out += draw(st.binary(max_size=40))  # trailing garbage
    return bytes(out), [(s, m) for _, s, m in items], intact
