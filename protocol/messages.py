"""The message catalogue: every payload the meter and the agent exchange.

Each message is a frozen dataclass with a ``TYPE`` byte and a construct ``STRUCT``
(with an ASCII diagram of its bytes in the docstring).  ``encode()`` builds the
payload, ``decode(type, payload)`` parses one.  Requests have TYPE < 0x80; replies
have TYPE >= 0x80 and carry the SEQ of the request they answer.

Common field types::

    u8 / u16 / u32 / u64   unsigned big-endian integers
    str8                   u8 byte count N, then N bytes of UTF-8
    digest16               16 bytes (protocol.digest.list_digest)
    date32                 u32 calendar date as YYYYMMDD in decimal (20261122), 0 = none

Every payload must be consumed exactly and be the canonical encoding of its
fields: trailing bytes, a string shorter than its length byte, or a reserved
flag bit set make a message MALFORMED.
Payloads are parsed with *compiled* structs only after the frame decoder has
checked LEN and CRC (construct's own advice for untrusted input).  A payload
that still fails to parse raises ``MessageError``, which the meter answers with
``ERROR(MALFORMED)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Self

from construct import (
    BitStruct,
    Bytes,
    Construct,
    Flag,
    If,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Padding,
    PascalString,
    PrefixedArray,
    Struct,
    Terminated,
    this,
)

from protocol.digest import DIGEST_SIZE
from protocol.errors import ErrorCode
from protocol.frames import MAX_PAYLOAD

Str8 = PascalString(Int8ub, "utf8")
Digest16 = Bytes(DIGEST_SIZE)
NO_DIGEST = bytes(DIGEST_SIZE)
NO_INDEX = 0xFFFF


class _Short(Exception):
    """A hand-written parser ran past the end of the payload (or met bad UTF-8)."""


def _str8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"str8 of {len(data)} bytes (at most 255)")
    return bytes((len(data),)) + data


def _read_str8(payload: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(payload):
        raise _Short("str8 length missing")
    end = pos + 1 + payload[pos]
    if end > len(payload):
        raise _Short("str8 cut short")
    try:
        return payload[pos + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise _Short("str8 is not UTF-8") from None


class MessageError(ValueError):
    """A payload that does not parse as the message its TYPE names."""

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.code = code


class Period(IntEnum):
    """Accounting period lengths (SET_SETTINGS.period)."""

    NONE = 0
    WEEKLY = 1
    MONTHLY = 2
    QUARTERLY = 3
    HALF_YEARLY = 4
    YEARLY = 5


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; subclasses set TYPE and STRUCT."""

    TYPE: ClassVar[int]
    STRUCT: ClassVar[Construct]
    IS_REQUEST: ClassVar[bool] = True

    def to_container(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        return cls(**{f.name: c[f.name] for f in dataclasses.fields(cls)})

    def encode(self) -> bytes:
        try:
            return bytes(_COMPILED[self.TYPE].build(self.to_container()))
        except Exception as exc:  # construct raises many types; one clear error out
            raise ValueError(f"cannot encode {type(self).__name__}: {exc}") from None


# --------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """HELLO (0x01): open a session; the meter answers IDENTIFY.

    ::

        +--------+-------------+----------------+
        | nonce  | max_version | client         |
        | u32    | u8          | str8           |
        +--------+-------------+----------------+

    ``nonce`` is a random number per client session.  A HELLO resets the meter's
    sequence window and duplicate cache, drops any staged list transaction and
    forgets a previous AUTH; a retransmission of the HELLO just answered (same SEQ,
    same nonce) gets the cached IDENTIFY instead.
    """

    TYPE = 0x01
    STRUCT = Struct("nonce" / Int32ub, "max_version" / Int8ub, "client" / Str8, Terminated)
    nonce: int
    max_version: int = 1
    client: str = ""


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """AUTH (0x02): give the supervisor password; ACK or ERROR.

    ::

        +----------------+
        | password str8  |
        +----------------+

    Required before any accounting change (BEGIN, PUT, DELETE, COMMIT, RESET,
    SET_SETTINGS) and before READ_ACCOUNTS reveals account passwords.  Five wrong
    passwords in a row lock AUTH out for a while (ERROR LOCKED_OUT).
    """

    TYPE = 0x02
    STRUCT = Struct("password" / Str8, Terminated)
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReadAccounts(Message):
    """READ_ACCOUNTS (0x03): one page of the account list; answered by ACCOUNT_PAGE.

    ::

        +--------+--------+
        | offset | limit  |
        | u16    | u16    |
        +--------+--------+

    Accounts come in list order (parents before children).  The meter may return
    fewer than ``limit`` to fit its maximum payload; ask again from offset+count.
    """

    TYPE = 0x03
    STRUCT = Struct("offset" / Int16ub, "limit" / Int16ub, Terminated)
    offset: int = 0
    limit: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class Begin(Message):
    """BEGIN (0x04): open a list transaction; ACK.

    ::

        +--------+
        | txn    |
        | u32    |
        +--------+

    The meter stages every PUT/DELETE carrying this ``txn`` on a copy of its list;
    the live list is untouched until COMMIT.  A new BEGIN discards any earlier
    staged transaction (its agent is gone).
    """

    TYPE = 0x04
    STRUCT = Struct("txn" / Int32ub, Terminated)
    txn: int


@dataclass(frozen=True, slots=True)
class PutRecord:
    """One account to create or update, keyed by ``code`` (see PUT_ACCOUNTS)."""

    code: str
    parent_code: str = ""
    name: str = ""
    active: bool = True
    password_enabled: bool = False
    password: str | None = field(default=None, repr=False)  # None: keep / roll down
    number: int = 0  # 0: meter assigns (or keeps) the number


_PutFlags = BitStruct(
    Padding(4),
    "has_number" / Flag,
    "set_password" / Flag,
    "password_enabled" / Flag,
    "active" / Flag,
)
_PutRecordStruct = Struct(
    "flags" / _PutFlags,
    "code" / Str8,
    "name" / Str8,
    "password" / If(this.flags.set_password, Str8),
    "number" / If(this.flags.has_number, Int16ub),
)


@dataclass(frozen=True, slots=True)
class PutAccounts(Message):
    """PUT_ACCOUNTS (0x05): create or update accounts in the open transaction; ACK(n).

    Records are grouped by parent so a parent code is sent once per group::

        +-----+--------+-------------------------------------------------------+
        | txn | ngroup | group * ngroup                                        |
        | u32 | u8     | +---------------+--------+------------------------+   |
        |     |        | | parent str8   | nrec u8| record * nrec          |   |
        |     |        | +---------------+--------+------------------------+   |
        +-----+--------+-------------------------------------------------------+

        record:
        +-------+-----------+-----------+------------------+-------------------+
        | flags | code str8 | name str8 | password str8    | number u16        |
        | u8    |           |           | if SET_PASSWORD  | if HAS_NUMBER     |
        +-------+-----------+-----------+------------------+-------------------+

        flags: bit0 ACTIVE  bit1 PASSWORD_ENABLED  bit2 SET_PASSWORD  bit3 HAS_NUMBER

    An empty parent is the top level.  Creating the first child under a chargeable
    account rolls that account's number, password and counters down onto it.  The
    batch is all-or-nothing: an ERROR reply names the failing record's index.
    """

    TYPE = 0x05
    STRUCT = Struct(
        "txn" / Int32ub,
        "groups"
        / PrefixedArray(
            Int8ub, Struct("parent" / Str8, "accounts" / PrefixedArray(Int8ub, _PutRecordStruct))
        ),
        Terminated,
    )
    txn: int
    records: tuple[PutRecord, ...] = ()

    def encode(self) -> bytes:
        """The same bytes as ``STRUCT.build(self.to_container())`` (the round-trip tests
        hold them together), written with plain byte operations: this is the one
        message whose size grows with the list, and construct costs ~20 us a record."""
        try:
            return self._encode()
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"cannot encode PutAccounts: {exc}") from None

    def _encode(self) -> bytes:
        out = bytearray(self.txn.to_bytes(4, "big"))
        out.append(0)  # ngroups, patched below
        ngroups = 0
        count_at = -1
        in_group = 0
        parent: str | None = None
        for rec in self.records:
            if count_at < 0 or rec.parent_code != parent or in_group == 255:
                if count_at >= 0:
                    out[count_at] = in_group
                ngroups += 1
                if ngroups > 255:
                    raise ValueError("more than 255 groups")
                parent = rec.parent_code
                out += _str8(parent)
                count_at = len(out)
                out.append(0)
                in_group = 0
            password, number = rec.password, rec.number
            out.append(
                (1 if rec.active else 0)
                | (2 if rec.password_enabled else 0)
                | (4 if password is not None else 0)
                | (8 if number != 0 else 0)
            )
            out += _str8(rec.code)
            out += _str8(rec.name)
            if password is not None:
                out += _str8(password)
            if number != 0:
                out += number.to_bytes(2, "big")
            in_group += 1
        if count_at >= 0:
            out[count_at] = in_group
        out[4] = ngroups
        return bytes(out)

    @classmethod
    def _decode(cls, payload: bytes) -> PutAccounts:
        """Strict parse: what ``decode``'s parse-and-rebuild check accepts, and only that."""
        n = len(payload)
        if n < 5:
            raise _Short("header cut short")
        txn = int.from_bytes(payload[:4], "big")
        pos = 5
        records: list[PutRecord] = []
        append = records.append
        read = _read_str8
        for _ in range(payload[4]):
            parent, pos = read(payload, pos)
            if pos >= n:
                raise _Short("nrec missing")
            nrec = payload[pos]
            pos += 1
            for _ in range(nrec):
                if pos >= n:
                    raise _Short("record cut short")
                flags = payload[pos]
                if flags & 0xF0:
                    raise _Short("reserved flag bits set")
                code, pos = read(payload, pos + 1)
                name, pos = read(payload, pos)
                password = None
                if flags & 4:
                    password, pos = read(payload, pos)
                number = 0
                if flags & 8:
                    if pos + 2 > n:
                        raise _Short("number cut short")
                    number = (payload[pos] << 8) | payload[pos + 1]
                    pos += 2
                append(
                    PutRecord(
                        code, parent, name, bool(flags & 1), bool(flags & 2), password, number
                    )
                )
        if pos != n:
            raise _Short("trailing bytes")
        return cls(txn, tuple(records))

    def to_container(self) -> dict[str, Any]:
        groups: list[dict[str, Any]] = []
        for rec in self.records:
            if (
                not groups
                or groups[-1]["parent"] != rec.parent_code
                or len(groups[-1]["accounts"]) == 255
            ):
                groups.append({"parent": rec.parent_code, "accounts": []})
            groups[-1]["accounts"].append(
                {
                    "flags": {
                        "active": rec.active,
                        "password_enabled": rec.password_enabled,
                        "set_password": rec.password is not None,
                        "has_number": rec.number != 0,
                    },
                    "code": rec.code,
                    "name": rec.name,
                    "password": rec.password,
                    "number": rec.number or None,
                }
            )
        return {"txn": self.txn, "groups": groups}

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        records = tuple(
            PutRecord(
                code=a["code"],
                parent_code=g["parent"],
                name=a["name"],
                active=a["flags"]["active"],
                password_enabled=a["flags"]["password_enabled"],
                password=a["password"],
                number=a["number"] or 0,
            )
            for g in c["groups"]
            for a in g["accounts"]
        )
        return cls(txn=c["txn"], records=records)


@dataclass(frozen=True, slots=True)
class DeleteAccounts(Message):
    """DELETE_ACCOUNTS (0x06): delete accounts (children first) in the transaction; ACK(n).

    ::

        +-----+--------+------------------+
        | txn | ncodes | code str8 * n    |
        | u32 | u16    |                  |
        +-----+--------+------------------+

    An account that has ever been charged is never deleted (ERROR HAS_HISTORY):
    deactivate it with PUT instead.
    """

    TYPE = 0x06
    STRUCT = Struct("txn" / Int32ub, "codes" / PrefixedArray(Int16ub, Str8), Terminated)
    txn: int
    codes: tuple[str, ...] = ()

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        return cls(txn=c["txn"], codes=tuple(c["codes"]))

    def to_container(self) -> dict[str, Any]:
        return {"txn": self.txn, "codes": list(self.codes)}

    def encode(self) -> bytes:
        """Plain byte operations, the same bytes as the STRUCT builds (see PutAccounts)."""
        try:
            return b"".join(
                (
                    self.txn.to_bytes(4, "big"),
                    len(self.codes).to_bytes(2, "big"),
                    *(_str8(c) for c in self.codes),
                )
            )
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"cannot encode DeleteAccounts: {exc}") from None

    @classmethod
    def _decode(cls, payload: bytes) -> DeleteAccounts:
        if len(payload) < 6:
            raise _Short("header cut short")
        pos = 6
        codes: list[str] = []
        for _ in range(int.from_bytes(payload[4:6], "big")):
            code, pos = _read_str8(payload, pos)
            codes.append(code)
        if pos != len(payload):
            raise _Short("trailing bytes")
        return cls(int.from_bytes(payload[:4], "big"), tuple(codes))


@dataclass(frozen=True, slots=True)
class Commit(Message):
    """COMMIT (0x07): make the staged list live, atomically and durably; COMMITTED.

    ::

        +-----+----------------------+
        | txn | expected_digest      |
        | u32 | digest16             |
        +-----+----------------------+

    If ``expected_digest`` is not all zero and differs from the staged list's
    digest, the meter refuses (ERROR DIGEST_MISMATCH) and keeps its old list.
    """

    TYPE = 0x07
    STRUCT = Struct("txn" / Int32ub, "expected_digest" / Digest16, Terminated)
    txn: int
    expected_digest: bytes = NO_DIGEST


@dataclass(frozen=True, slots=True)
class Abort(Message):
    """ABORT (0x08): drop the staged transaction; ACK.

    ::

        +-----+
        | txn |
        | u32 |
        +-----+
    """

    TYPE = 0x08
    STRUCT = Struct("txn" / Int32ub, Terminated)
    txn: int


@dataclass(frozen=True, slots=True)
class ReadCounters(Message):
    """READ_COUNTERS (0x09): one page of chargeable accounts' counters; COUNTER_PAGE.

    ::

        +--------+--------+
        | offset | limit  |
        | u16    | u16    |
        +--------+--------+
    """

    TYPE = 0x09
    STRUCT = Struct("offset" / Int16ub, "limit" / Int16ub, Terminated)
    offset: int = 0
    limit: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class ResetCounters(Message):
    """RESET (0x0A): clear counters; ACK(number of accounts cleared).

    ::

        +--------+
        | number |
        | u16    |
        +--------+

    ``number`` 0 resets every account (and moves the period cutoff forward); a
    number resets that one lowest-level account, only when individual reset is
    enabled (ERROR RESET_DISABLED otherwise).
    """

    TYPE = 0x0A
    STRUCT = Struct("number" / Int16ub, Terminated)
    number: int = 0


@dataclass(frozen=True, slots=True)
class RunMail(Message):
    """RUN_MAIL (0x0B, simulator only): the operator runs mail; MAIL_DONE.

    ::

        +--------+---------------+--------+---------------+-------------+
        | number | password str8 | pieces | postage_mills | duration_ms |
        | u16    |               | u32    | u32           | u16         |
        +--------+---------------+--------+---------------+-------------+

    Charges ``pieces`` and ``postage_mills`` (the run's total, in tenths of a cent)
    to the account.  While the run lasts (``duration_ms``) the meter is away from
    its home screen and answers every other request with BUSY.
    """

    TYPE = 0x0B
    STRUCT = Struct(
        "number" / Int16ub,
        "password" / Str8,
        "pieces" / Int32ub,
        "postage_mills" / Int32ub,
        "duration_ms" / Int16ub,
        Terminated,
    )
    number: int
    password: str = field(default="", repr=False)
    pieces: int = 1
    postage_mills: int = 0
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class SetSettings(Message):
    """SET_SETTINGS (0x0C): accounting settings; ACK.

    ::

        +------------------+--------+--------+--------+
        | reset_individual | period | cutoff | today  |
        | u8 (0/1)         | u8     | date32 | date32 |
        +------------------+--------+--------+--------+

    ``period`` is a Period; ``cutoff`` the end of the current period (0 = none).
    ``today`` (simulator only) pins the meter's calendar date; 0 = real clock.
    """

    TYPE = 0x0C
    STRUCT = Struct(
        "reset_individual" / Flag,
        "period" / Int8ub,
        "cutoff" / Int32ub,
        "today" / Int32ub,
        Terminated,
    )
    reset_individual: bool = False
    period: int = Period.NONE
    cutoff: int = 0
    today: int = 0


# ---------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """ACK (0x80): the request was applied.

    ::

        +--------+
        | value  |
        | u32    |
        +--------+

    ``value`` is a count where the request names one (records applied, accounts
    reset), else 0.
    """

    TYPE = 0x80
    IS_REQUEST = False
    STRUCT = Struct("value" / Int32ub, Terminated)
    value: int = 0

    def encode(self) -> bytes:
        try:
            return self.value.to_bytes(4, "big")
        except (TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"cannot encode Ack: {exc}") from None

    @classmethod
    def _decode(cls, payload: bytes) -> Ack:
        if len(payload) != 4:
            raise _Short("an ACK payload is 4 bytes")
        return cls(int.from_bytes(payload, "big"))


_IdentifyState = BitStruct(
    Padding(5),
    "period_expired" / Flag,
    "transaction_open" / Flag,
    "authenticated" / Flag,
)


@dataclass(frozen=True, slots=True)
class Identify(Message):
    """IDENTIFY (0x81): the meter introduces itself (answer to HELLO).

    ::

        +---------+-------+--------+----------+----------+------------+----------+
        | version | model | serial | firmware | capacity | chargeable | accounts |
        | u8      | str8  | str8   | str8     | u16      | u16        | u16      |
        +---------+-------+--------+----------+----------+------------+----------+
        +----------+-------------+--------+-------+
        | digest   | max_payload | window | state |
        | digest16 | u16         | u8     | u8    |
        +----------+-------------+--------+-------+

        state: bit0 AUTHENTICATED  bit1 TRANSACTION_OPEN  bit2 PERIOD_EXPIRED

    ``version`` is the protocol version the meter will speak (<= HELLO.max_version);
    ``window`` is how many requests the client may have in flight.
    """

    TYPE = 0x81
    IS_REQUEST = False
    STRUCT = Struct(
        "version" / Int8ub,
        "model" / Str8,
        "serial" / Str8,
        "firmware" / Str8,
        "capacity" / Int16ub,
        "chargeable" / Int16ub,
        "accounts" / Int16ub,
        "digest" / Digest16,
        "max_payload" / Int16ub,
        "window" / Int8ub,
        "state" / _IdentifyState,
        Terminated,
    )
    version: int
    model: str
    serial: str
    firmware: str
    capacity: int
    chargeable: int
    accounts: int
    digest: bytes
    max_payload: int
    window: int
    authenticated: bool = False
    transaction_open: bool = False
    period_expired: bool = False

    _STATE: ClassVar[tuple[str, ...]] = ("authenticated", "transaction_open", "period_expired")

    def to_container(self) -> dict[str, Any]:
        c = Message.to_container(self)
        c["state"] = {k: c.pop(k) for k in self._STATE}
        return c

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        flat = {k: v for k, v in c.items() if k != "state" and not k.startswith("_")}
        flat.update({k: c["state"][k] for k in cls._STATE})
        return super(Identify, cls).from_container(flat)


@dataclass(frozen=True, slots=True)
class AccountEntry:
    """One account in an ACCOUNT_PAGE."""

    number: int
    code: str
    parent_code: str
    name: str
    active: bool
    chargeable: bool
    password_enabled: bool
    ever_charged: bool
    password: str = field(default="", repr=False)
    pieces: int = 0
    postage_mills: int = 0


_EntryFlags = BitStruct(
    Padding(4),
    "ever_charged" / Flag,
    "password_enabled" / Flag,
    "chargeable" / Flag,
    "active" / Flag,
)
_AccountEntryStruct = Struct(
    "number" / Int16ub,
    "flags" / _EntryFlags,
    "code" / Str8,
    "parent_code" / Str8,
    "name" / Str8,
    "password" / Str8,
    "pieces" / Int32ub,
    "postage_mills" / Int64ub,
)
_ENTRY_FLAGS = ("active", "chargeable", "password_enabled", "ever_charged")


@dataclass(frozen=True, slots=True)
class AccountPage(Message):
    """ACCOUNT_PAGE (0x83): accounts ``offset .. offset+n-1`` of ``total``.

    ::

        +-------+--------+-----+------------------+
        | total | offset | n   | entry * n        |
        | u16   | u16    | u16 |                  |
        +-------+--------+-----+------------------+

        entry:
        +--------+-------+------+--------+------+----------+--------+---------------+
        | number | flags | code | parent | name | password | pieces | postage_mills |
        | u16    | u8    | str8 | str8   | str8 | str8     | u32    | u64           |
        +--------+-------+------+--------+------+----------+--------+---------------+

        flags: bit0 ACTIVE  bit1 CHARGEABLE  bit2 PASSWORD_ENABLED  bit3 EVER_CHARGED

    ``number`` is 0 for administrative (parent) accounts.  ``password`` is empty
    unless the session is authenticated.
    """

    TYPE = 0x83
    IS_REQUEST = False
    STRUCT = Struct(
        "total" / Int16ub,
        "offset" / Int16ub,
        "entries" / PrefixedArray(Int16ub, _AccountEntryStruct),
        Terminated,
    )
    total: int
    offset: int
    entries: tuple[AccountEntry, ...] = ()

    def to_container(self) -> dict[str, Any]:
        entries = []
        for e in self.entries:
            d = dataclasses.asdict(e)
            d["flags"] = {k: d.pop(k) for k in _ENTRY_FLAGS}
            entries.append(d)
        return {"total": self.total, "offset": self.offset, "entries": entries}

    def encode(self) -> bytes:
        """Plain byte operations, the same bytes as the STRUCT builds (see PutAccounts)."""
        try:
            out = bytearray(
                self.total.to_bytes(2, "big")
                + self.offset.to_bytes(2, "big")
                + len(self.entries).to_bytes(2, "big")
            )
            for e in self.entries:
                out += e.number.to_bytes(2, "big")
                out.append(
                    (1 if e.active else 0)
                    | (2 if e.chargeable else 0)
                    | (4 if e.password_enabled else 0)
                    | (8 if e.ever_charged else 0)
                )
                out += _str8(e.code)
                out += _str8(e.parent_code)
                out += _str8(e.name)
                out += _str8(e.password)
                out += e.pieces.to_bytes(4, "big")
                out += e.postage_mills.to_bytes(8, "big")
            return bytes(out)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"cannot encode AccountPage: {exc}") from None

    @classmethod
    def _decode(cls, payload: bytes) -> AccountPage:
        n = len(payload)
        if n < 6:
            raise _Short("header cut short")
        entries: list[AccountEntry] = []
        read = _read_str8
        pos = 6
        for _ in range(int.from_bytes(payload[4:6], "big")):
            if pos + 3 > n:
                raise _Short("entry cut short")
            number = (payload[pos] << 8) | payload[pos + 1]
            flags = payload[pos + 2]
            if flags & 0xF0:
                raise _Short("reserved flag bits set")
            code, pos = read(payload, pos + 3)
            parent, pos = read(payload, pos)
            name, pos = read(payload, pos)
            password, pos = read(payload, pos)
            if pos + 12 > n:
                raise _Short("counters cut short")
            entries.append(
                AccountEntry(
                    number,
                    code,
                    parent,
                    name,
                    bool(flags & 1),
                    bool(flags & 2),
                    bool(flags & 4),
                    bool(flags & 8),
                    password,
                    int.from_bytes(payload[pos : pos + 4], "big"),
                    int.from_bytes(payload[pos + 4 : pos + 12], "big"),
                )
            )
            pos += 12
        if pos != n:
            raise _Short("trailing bytes")
        return cls(
            int.from_bytes(payload[:2], "big"), int.from_bytes(payload[2:4], "big"), tuple(entries)
        )

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        entries = tuple(
            AccountEntry(
                number=e["number"],
                code=e["code"],
                parent_code=e["parent_code"],
                name=e["name"],
                password=e["password"],
                pieces=e["pieces"],
                postage_mills=e["postage_mills"],
                **{k: e["flags"][k] for k in _ENTRY_FLAGS},
            )
            for e in c["entries"]
        )
        return cls(total=c["total"], offset=c["offset"], entries=entries)


@dataclass(frozen=True, slots=True)
class Committed(Message):
    """COMMITTED (0x87): the staged list is live and durable.

    ::

        +----------+-------+---------+---------+------------+
        | digest   | added | changed | deleted | chargeable |
        | digest16 | u16   | u16     | u16     | u16        |
        +----------+-------+---------+---------+------------+
    """

    TYPE = 0x87
    IS_REQUEST = False
    STRUCT = Struct(
        "digest" / Digest16,
        "added" / Int16ub,
        "changed" / Int16ub,
        "deleted" / Int16ub,
        "chargeable" / Int16ub,
        Terminated,
    )
    digest: bytes
    added: int = 0
    changed: int = 0
    deleted: int = 0
    chargeable: int = 0


@dataclass(frozen=True, slots=True)
class CounterEntry:
    number: int
    pieces: int
    postage_mills: int


@dataclass(frozen=True, slots=True)
class CounterPage(Message):
    """COUNTER_PAGE (0x89): counters of chargeable accounts, by number.

    ::

        +-------+--------+-----+--------------------------------------------+
        | total | offset | n   | entry * n: number u16, pieces u32,         |
        | u16   | u16    | u16 |            postage_mills u64               |
        +-------+--------+-----+--------------------------------------------+
    """

    TYPE = 0x89
    IS_REQUEST = False
    STRUCT = Struct(
        "total" / Int16ub,
        "offset" / Int16ub,
        "entries"
        / PrefixedArray(
            Int16ub, Struct("number" / Int16ub, "pieces" / Int32ub, "postage_mills" / Int64ub)
        ),
        Terminated,
    )
    total: int
    offset: int
    entries: tuple[CounterEntry, ...] = ()

    def to_container(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "offset": self.offset,
            "entries": [dataclasses.asdict(e) for e in self.entries],
        }

    @classmethod
    def from_container(cls, c: Mapping[str, Any]) -> Self:
        entries = tuple(
            CounterEntry(e["number"], e["pieces"], e["postage_mills"]) for e in c["entries"]
        )
        return cls(total=c["total"], offset=c["offset"], entries=entries)


@dataclass(frozen=True, slots=True)
class MailDone(Message):
    """MAIL_DONE (0x8B): the mail run was charged; the account's new totals.

    ::

        +--------+--------+---------------+
        | number | pieces | postage_mills |
        | u16    | u32    | u64           |
        +--------+--------+---------------+
    """

    TYPE = 0x8B
    IS_REQUEST = False
    STRUCT = Struct("number" / Int16ub, "pieces" / Int32ub, "postage_mills" / Int64ub, Terminated)
    number: int
    pieces: int
    postage_mills: int


@dataclass(frozen=True, slots=True)
class Busy(Message):
    """BUSY (0x8E): the meter is not at its home screen; nothing was applied.

    ::

        +----------------+
        | retry_after_ms |
        | u16            |
        +----------------+

    Retransmit the same request (same SEQ) after at least ``retry_after_ms``.
    BUSY is never cached as the answer to a SEQ.
    """

    TYPE = 0x8E
    IS_REQUEST = False
    STRUCT = Struct("retry_after_ms" / Int16ub, Terminated)
    retry_after_ms: int = 100


@dataclass(frozen=True, slots=True)
class Error(Message):
    """ERROR (0x8F): the request was refused and changed nothing.

    ::

        +------+-------+--------------+
        | code | index | message str8 |
        | u16  | u16   |              |
        +------+-------+--------------+

    ``code`` is an ErrorCode; ``index`` the failing record within a batch
    (0xFFFF when not about a record); ``message`` is for humans.
    """

    TYPE = 0x8F
    IS_REQUEST = False
    STRUCT = Struct("code" / Int16ub, "index" / Int16ub, "message" / Str8, Terminated)
    code: int
    index: int = NO_INDEX
    message: str = ""


CATALOGUE: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Auth,
        ReadAccounts,
        Begin,
        PutAccounts,
        DeleteAccounts,
        Commit,
        Abort,
        ReadCounters,
        ResetCounters,
        RunMail,
        SetSettings,
        Ack,
        Identify,
        AccountPage,
        Committed,
        CounterPage,
        MailDone,
        Busy,
        Error,
    )
}
"""Every message type, by TYPE byte."""

_COMPILED: dict[int, Construct] = {t: cls.STRUCT.compile() for t, cls in CATALOGUE.items()}

_FAST_DECODE: dict[int, Callable[[bytes], Message]] = {
    cls.TYPE: cls._decode for cls in (PutAccounts, DeleteAccounts, AccountPage, Ack)
}
"""Messages parsed by hand-written strict parsers instead of construct: the ones
whose size grows with the list (and ACK, the reply to each of their batches).
Each accepts exactly the payloads that the compiled parse plus the canonical
rebuild below accepts (tests/protocol round-trips them against ``STRUCT``)."""


def decode(msg_type: int, payload: bytes) -> Message:
    """Parse one payload (whose frame CRC already checked) into its message."""
    cls = CATALOGUE.get(msg_type)
    if cls is None:
        raise MessageError(ErrorCode.UNKNOWN_MESSAGE, f"unknown message type 0x{msg_type:02x}")
    fast = _FAST_DECODE.get(msg_type)
    if fast is not None:
        try:
            return fast(payload)
        except _Short as exc:
            raise MessageError(
                ErrorCode.MALFORMED, f"malformed {cls.__name__} payload ({exc})"
            ) from None
    compiled = _COMPILED[msg_type]
    try:
        container = compiled.parse(payload)
        # Compiled Bytes/PascalString parse and build do not notice a short field, and
        # padding bits and flag bytes are read leniently: accept only a payload that the
        # plain (checking) struct builds back byte for byte from what was parsed.
        canonical = cls.STRUCT.build(container) == payload
    except Exception as exc:  # construct raises many exception types; collapse them
        raise MessageError(
            ErrorCode.MALFORMED, f"malformed {cls.__name__} payload ({type(exc).__name__})"
        ) from None
    if not canonical:
        raise MessageError(ErrorCode.MALFORMED, f"malformed {cls.__name__} payload (not canonical)")
    return cls.from_container(container)


def message_name(msg_type: int) -> str:
    cls = CATALOGUE.get(msg_type)
    return cls.__name__ if cls else f"0x{msg_type:02x}"


def redacted(msg: Message) -> str:
    """A one-line description safe for logs and traces (passwords never shown)."""
    return repr(msg)


def put_payload_size(records: Sequence[PutRecord]) -> int:
    """Payload bytes PUT_ACCOUNTS needs for ``records`` (for batching to max_payload)."""
    return len(PutAccounts(0, tuple(records)).encode())


# ------------------------------------------------------------------ batching

MAX_BATCH_RECORDS = 256
"""The most records one PUT_ACCOUNTS or DELETE_ACCOUNTS may carry (BATCH_TOO_LARGE)."""
_PUT_HEADER = 5  # txn u32 + ngroups u8
_DELETE_HEADER = 6  # txn u32 + ncodes u16


def _str8_size(text: str) -> int:
    return 1 + len(text.encode("utf-8"))


def batch_puts(
    txn: int, puts: Sequence[PutRecord], max_payload: int = MAX_PAYLOAD
) -> list[PutAccounts]:
    """Pack PUT records into as few frames as fit ``max_payload`` (grouped by parent)."""
    batches: list[PutAccounts] = []
    current: list[PutRecord] = []
    size = _PUT_HEADER
    groups = 0
    group_len = 0
    last_parent: str | None = None
    for rec in puts:
        rec_size = 1 + _str8_size(rec.code) + _str8_size(rec.name)
        rec_size += _str8_size(rec.password) if rec.password is not None else 0
        rec_size += 2 if rec.number else 0
        new_group = rec.parent_code != last_parent or group_len == 255
        extra = rec_size + (_str8_size(rec.parent_code) + 1 if new_group else 0)
        if current and (
            size + extra > max_payload
            or len(current) >= MAX_BATCH_RECORDS
            or (new_group and groups == 255)
        ):
            batches.append(PutAccounts(txn, tuple(current)))
            current, size, groups, group_len, last_parent = [], _PUT_HEADER, 0, 0, None
            new_group = True
            extra = rec_size + _str8_size(rec.parent_code) + 1
        if new_group:
            groups += 1
            group_len = 0
            last_parent = rec.parent_code
        current.append(rec)
        group_len += 1
        size += extra
    if current:
        batches.append(PutAccounts(txn, tuple(current)))
    return batches


def batch_deletes(
    txn: int, codes: Sequence[str], max_payload: int = MAX_PAYLOAD
) -> list[DeleteAccounts]:
    batches: list[DeleteAccounts] = []
    current: list[str] = []
    size = _DELETE_HEADER
    for code in codes:
        n = _str8_size(code)
        if current and (size + n > max_payload or len(current) >= MAX_BATCH_RECORDS):
            batches.append(DeleteAccounts(txn, tuple(current)))
            current, size = [], _DELETE_HEADER
        current.append(code)
        size += n
    if current:
        batches.append(DeleteAccounts(txn, tuple(current)))
    return batches
