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
* ``account_lists()`` / ``put_record_lists()`` — account lists a meter accepts;
  ``account_lists_breaking_one_rule()`` — ``(list, rule)`` with exactly one rule
  broken (``BROKEN_RULES[rule]`` is the meter's ErrorCode).  Load them with
  ``firmware_sim.testing.load_accounts``; docs/TESTING.md has examples.
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
from protocol.records import AccountRecord

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


# ----------------------------------------------------------------- account lists
#
# The meter's list rules (docs/PROTOCOL.md; firmware_sim.accounts enforces them):
# at most three levels; names 1..32 characters at the top level, 1..16 below, unique
# among siblings; codes unique; passwords 4..32 characters; at most ``capacity``
# chargeable (lowest-level) accounts.  Lists come parents first, in the order a
# PUT_ACCOUNTS batch may create them.

MAX_LEVELS = 3
TOP_NAME_MAX = 32
SUB_NAME_MAX = 16
PASSWORD_MIN = 4
PASSWORD_MAX = 32

#: The rules ``account_lists_breaking_one_rule`` can break, and the ErrorCode a meter
#: answers each with.
BROKEN_RULES: dict[str, ErrorCode] = {
    "name_too_long": ErrorCode.NAME_TOO_LONG,
    "fourth_level": ErrorCode.TOO_DEEP,
    "duplicate_sibling_name": ErrorCode.DUPLICATE_NAME,
    "short_password": ErrorCode.BAD_PASSWORD_FORMAT,
    "unknown_parent": ErrorCode.UNKNOWN_PARENT,
    "over_capacity": ErrorCode.CAPACITY,
}

_NAME_CHARS = st.characters(
    codec="utf-8", categories=("Lu", "Ll", "Nd"), include_characters=" -&.'/"
)
account_codes = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12
)
account_passwords = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")),
    min_size=PASSWORD_MIN,
    max_size=12,
)


def account_names(max_size: int) -> st.SearchStrategy[str]:
    """A valid account name of at most ``max_size`` characters (never blank)."""
    return st.text(alphabet=_NAME_CHARS, min_size=1, max_size=max_size).filter(
        lambda s: bool(s.strip())
    )


def _name_max(depth: int) -> int:
    return TOP_NAME_MAX if depth == 1 else SUB_NAME_MAX


class _Tree:
    """A list under construction, with what the rules need to know."""

    def __init__(self) -> None:
        self.records: list[AccountRecord] = []
        self.depth: dict[str, int] = {"": 0}
        self.children: dict[str, list[str]] = {"": []}
        self.names: dict[str, set[str]] = {"": set()}

    def chargeable(self) -> int:
        return sum(1 for r in self.records if not self.children[r.code])

    def is_leaf(self, code: str) -> bool:
        return code != "" and not self.children[code]

    def adds_chargeable(self, parent: str) -> bool:
        return not self.is_leaf(parent)

    def add(self, rec: AccountRecord) -> None:
        self.records.append(rec)
        self.depth[rec.code] = self.depth[rec.parent_code] + 1
        self.children[rec.parent_code].append(rec.code)
        self.children[rec.code] = []
        self.names[rec.parent_code].add(rec.name)
        self.names[rec.code] = set()


@st.composite
def _new_code(draw: st.DrawFn, tree: _Tree) -> str:
    return draw(account_codes.filter(lambda c: c not in tree.depth))


@st.composite
def _new_name(draw: st.DrawFn, tree: _Tree, parent: str) -> str:
    limit = _name_max(tree.depth[parent] + 1)
    taken = tree.names[parent]
    return draw(account_names(limit).filter(lambda n: n not in taken))


@st.composite
def _account(draw: st.DrawFn, tree: _Tree, parent: str) -> AccountRecord:
    enabled = draw(st.booleans())
    password = draw(account_passwords) if enabled or draw(st.booleans()) else ""
    return AccountRecord(
        code=draw(_new_code(tree)),
        parent_code=parent,
        name=draw(_new_name(tree, parent)),
        active=draw(st.booleans()),
        password_enabled=enabled,
        password=password,
    )


def _grow(draw: st.DrawFn, tree: _Tree, capacity: int, count: int) -> None:
    for _ in range(count):
        parents = [
            code
            for code, depth in tree.depth.items()
            if depth < MAX_LEVELS and (tree.chargeable() < capacity or tree.is_leaf(code))
        ]
        if not parents:
            return
        tree.add(draw(_account(tree, draw(st.sampled_from(parents)))))


@st.composite
def account_lists(
    draw: st.DrawFn, capacity: int = 25, min_size: int = 0, max_size: int = 12
) -> list[AccountRecord]:
    """A list of ``AccountRecord`` that a meter of ``capacity`` accepts, parents first.

    Every rule holds: <= 3 levels, names <= 32 (top) / <= 16 (sub) characters and
    unique among siblings, unique codes, passwords of 4+ characters (an enabled
    password always has one), at most ``capacity`` chargeable accounts.  Send it with
    ``firmware_sim.testing.load_accounts`` or convert with ``put_record_lists``.
    """
    tree = _Tree()
    _grow(draw, tree, capacity, draw(st.integers(min_size, max_size)))
    return tree.records


def put_record_lists(
    capacity: int = 25, min_size: int = 0, max_size: int = 12
) -> st.SearchStrategy[list[PutRecord]]:
    """``account_lists`` as PUT_ACCOUNTS records."""
    return account_lists(capacity, min_size, max_size).map(lambda rs: [_as_put(r) for r in rs])


def _as_put(rec: AccountRecord) -> PutRecord:
    return PutRecord(
        code=rec.code,
        parent_code=rec.parent_code,
        name=rec.name,
        active=rec.active,
        password_enabled=rec.password_enabled,
        password=rec.password or None,
        number=rec.number,
    )


@st.composite
def account_lists_breaking_one_rule(
    draw: st.DrawFn, capacity: int = 25, max_size: int = 8, rules: tuple[str, ...] = ()
) -> tuple[list[AccountRecord], str]:
    """``(records, rule)``: a list that breaks exactly one rule, the LAST record.

    ``rule`` is a key of ``BROKEN_RULES`` (whose value is the meter's ErrorCode):
    ``name_too_long``, ``fourth_level``, ``duplicate_sibling_name``,
    ``short_password``, ``unknown_parent``, ``over_capacity``.  Every record before
    the last is valid; the last breaks only ``rule``.  ``rules`` limits the choice.
    """
    rule = draw(st.sampled_from(rules or tuple(BROKEN_RULES)))
    if rule not in BROKEN_RULES:
        raise ValueError(f"unknown rule {rule!r}")
    tree = _Tree()
    room = capacity - 1  # so that one more chargeable account still fits
    _grow(draw, tree, room, draw(st.integers(1, max_size)))

    def fitting_parents() -> list[str]:
        return [
            c for c, d in tree.depth.items()
            if d < MAX_LEVELS and (not tree.adds_chargeable(c) or tree.chargeable() < capacity)
        ]

    if rule == "over_capacity":
        while tree.chargeable() < capacity:
            tree.add(draw(_account(tree, "")))
        parents = [c for c, d in tree.depth.items() if d < MAX_LEVELS and not tree.is_leaf(c)]
        parent = draw(st.sampled_from(parents))
        bad = AccountRecord(draw(_new_code(tree)), parent, draw(_new_name(tree, parent)))
    elif rule == "fourth_level":
        deepest = [c for c, d in tree.depth.items() if d == MAX_LEVELS]
        if not deepest:
            parent = ""
            while tree.depth[parent] < MAX_LEVELS:  # a chain down to the third level
                leafs = [c for c in tree.children[parent] if tree.is_leaf(c)]
                if leafs and tree.depth[parent] > 0:
                    parent = leafs[0]
                    continue
                child = draw(_account(tree, parent))
                tree.add(child)
                parent = child.code
            deepest = [parent]
        parent = draw(st.sampled_from(deepest))
        bad = AccountRecord(draw(_new_code(tree)), parent, draw(account_names(SUB_NAME_MAX)))
    elif rule == "duplicate_sibling_name":
        twin = draw(st.sampled_from(tree.records))
        bad = AccountRecord(draw(_new_code(tree)), twin.parent_code, twin.name)
    elif rule == "unknown_parent":
        code = draw(_new_code(tree))
        ghost = draw(_new_code(tree).filter(lambda c: c != code))
        bad = AccountRecord(code, ghost, draw(account_names(SUB_NAME_MAX)))
    else:
        code = draw(_new_code(tree))
        parent = draw(st.sampled_from(fitting_parents()))
        if rule == "name_too_long":
            limit = _name_max(tree.depth[parent] + 1)
            name = draw(st.text(alphabet=_NAME_CHARS, min_size=limit + 1, max_size=limit + 12))
            bad = AccountRecord(code, parent, name)
        else:  # short_password
            short = draw(
                st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=3)
            )
            bad = AccountRecord(
                code, parent, draw(_new_name(tree, parent)), password_enabled=True,
                password=short,
            )
    return [*tree.records, bad], rule
