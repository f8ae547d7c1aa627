"""The meter's accounting model: accounts, linked sets, counters, settings, supervisor.

Pure: no I/O and no clock.  Dates (``today``) and times (``now``) are passed in.

Vocabulary (docs/NVM.md and /work/shared/DOMAIN.md items 1-13):

* An account is keyed by its ``code`` (opaque, <= 75 characters, set by the agent).
* Up to three levels: account > sub > subsub.  An account with no children is
  *chargeable*: it holds the linked set's number, password and counters.  An
  account with children is *administrative*: number 0, no password, no counters of
  its own; reports show it with the totals of everything below it.
* Roll-down: the FIRST child created under a chargeable account takes over that
  account's number, password (and enabled flag), counters and history.
* Postage is kept in integer mills (tenths of a cent), never floats.

Every mutating method validates fully before it mutates: a call that raises
:class:`AccountError` has changed nothing.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from protocol.digest import list_digest
from protocol.errors import ErrorCode
from protocol.records import AccountRecord

__all__ = [
    "CAPACITY_TIERS",
    "MAX_DEPTH",
    "AccountBook",
    "AccountError",
    "Cleared",
    "Period",
    "PutRequest",
    "Settings",
    "Supervisor",
]

CAPACITY_TIERS: tuple[int, ...] = (25, 100, 300, 500, 3000)
MAX_DEPTH = 3
CODE_MAX = 75
TOP_NAME_MAX = 32
SUB_NAME_MAX = 16
PASSWORD_MIN = 4
PASSWORD_MAX = 32
NUMBER_MAX = 2**31 - 1
#: One mail run may not charge more than this many pieces / mills.
RUN_PIECES_MAX = 10**9
RUN_MILLS_MAX = 10**15
#: Counters never exceed this (fits a signed 64-bit SQLite INTEGER with room to spare).
COUNTER_MAX = 2**62
CAPACITY_MESSAGE = "Cannot create any more accounts"
STATE_VERSION = 1


class AccountError(Exception):
    """A refused accounting operation.  ``code`` is the wire error code.

    The message never contains a password.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Period(StrEnum):
    NONE = "none"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    HALF_YEARLY = "half-yearly"
    YEARLY = "yearly"


_PERIOD_MONTHS = {
    Period.MONTHLY: 1,
    Period.QUARTERLY: 3,
    Period.HALF_YEARLY: 6,
    Period.YEARLY: 12,
}


def _add_months(day: _dt.date, months: int, anchor_day: int) -> _dt.date:
    """``day`` moved by ``months``, landing on ``anchor_day`` clamped to the month's end."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return _dt.date(year, month, min(anchor_day, last))


@dataclass(frozen=True, slots=True)
class Settings:
    """Accounting settings (supervisor-protected).

    ``cutoff`` is the last day of the current accounting period (mail on that day is
    still allowed); ``cutoff_day`` is the day of month the supervisor chose, kept so
    that monthly periods do not drift after a short month (Jan 31 -> Feb 28 -> Mar 31).
    """

    capacity: int = 25
    reset_individual_enabled: bool = False
    period: Period = Period.NONE
    cutoff: _dt.date | None = None
    cutoff_day: int = 0

    def expired(self, today: _dt.date) -> bool:
        return self.period is not Period.NONE and self.cutoff is not None and today > self.cutoff

    def next_cutoff(self, today: _dt.date) -> _dt.date | None:
        """The cutoff moved forward by whole periods until it lies after ``today``."""
        if self.period is Period.NONE or self.cutoff is None:
            return self.cutoff
        cutoff = self.cutoff
        if self.period is Period.WEEKLY:
            if cutoff > today:
                return cutoff
            weeks = (today - cutoff).days // 7 + 1
            return cutoff + _dt.timedelta(days=7 * weeks)
        step = _PERIOD_MONTHS[self.period]
        anchor = self.cutoff_day or cutoff.day
        k = 0
        candidate = cutoff
        while candidate <= today:
            k += 1
            candidate = _add_months(cutoff, k * step, anchor)
        return candidate

    def to_state(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "reset_individual_enabled": self.reset_individual_enabled,
            "period": self.period.value,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "cutoff_day": self.cutoff_day,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Settings:
        cutoff = data.get("cutoff")
        return cls(
            capacity=int(data["capacity"]),
            reset_individual_enabled=bool(data["reset_individual_enabled"]),
            period=Period(data["period"]),
            cutoff=_dt.date.fromisoformat(cutoff) if cutoff else None,
            cutoff_day=int(data.get("cutoff_day", 0)),
        )


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One create-or-update, as carried by a list transaction (see AccountBook.put)."""

    code: str
    parent_code: str = ""
    name: str = ""
    active: bool = True
    password_enabled: bool | None = None
    password: str | None = field(default=None, repr=False)
    number: int = 0

    @classmethod
    def from_record(cls, rec: AccountRecord) -> PutRequest:
        """A wire record as a put.  An empty password means "keep the current one"."""
        return cls(
            code=rec.code,
            parent_code=rec.parent_code,
            name=rec.name,
            active=rec.active,
            password_enabled=rec.password_enabled,
            password=rec.password or None,
            number=rec.number,
        )


@dataclass(frozen=True, slots=True)
class Cleared:
    """What a reset cleared (for the "print a report first" step and for audits)."""

    pieces: int = 0
    postage_mills: int = 0

    def __add__(self, other: Cleared) -> Cleared:
        return Cleared(self.pieces + other.pieces, self.postage_mills + other.postage_mills)


@dataclass(slots=True)
class _Account:
    code: str
    parent_code: str
    name: str
    active: bool = True
    password_enabled: bool = False
    password: str = field(default="", repr=False)
    number: int = 0
    pieces: int = 0
    postage_mills: int = 0
    ever_charged: bool = False

    def clone(self) -> _Account:
        return _Account(
            self.code,
            self.parent_code,
            self.name,
            self.active,
            self.password_enabled,
            self.password,
            self.number,
            self.pieces,
            self.postage_mills,
            self.ever_charged,
        )


_CONTROL = re.compile("[\x00-\x1f\x7f]")
"""A control character (C0 or DEL): one regex scan instead of a generator per character."""


def _err(code: ErrorCode, message: str) -> AccountError:
    return AccountError(code, message)


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _err(ErrorCode.INVALID_FIELD, f"{what} must be text")
    if _CONTROL.search(value):
        raise _err(ErrorCode.INVALID_FIELD, f"{what} contains a control character")
    if len(value.encode("utf-8")) > 255:
        raise _err(ErrorCode.INVALID_FIELD, f"{what} is longer than 255 bytes")
    return value


def _check_code(code: object) -> str:
    text = _check_text(code, "code")
    if not text:
        raise _err(ErrorCode.INVALID_FIELD, "code is empty")
    if len(text) > CODE_MAX:
        raise _err(ErrorCode.INVALID_FIELD, f"code longer than {CODE_MAX} characters")
    return text


def _check_password(password: str) -> None:
    """Validate a non-empty account or supervisor password (never echo it)."""
    if not isinstance(password, str):
        raise _err(ErrorCode.BAD_PASSWORD_FORMAT, "password must be text")
    if len(password) < PASSWORD_MIN:
        raise _err(
            ErrorCode.BAD_PASSWORD_FORMAT, f"password shorter than {PASSWORD_MIN} characters"
        )
    if len(password) > PASSWORD_MAX:
        raise _err(ErrorCode.BAD_PASSWORD_FORMAT, f"password longer than {PASSWORD_MAX} characters")
    if _CONTROL.search(password):
        raise _err(ErrorCode.BAD_PASSWORD_FORMAT, "password contains a control character")


def _check_amounts(pieces: int, postage_mills: int) -> None:
    for value, what, top in (
        (pieces, "pieces", RUN_PIECES_MAX),
        (postage_mills, "postage", RUN_MILLS_MAX),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _err(ErrorCode.INVALID_FIELD, f"{what} must be an integer")
        if value < 0 or value > top:
            raise _err(ErrorCode.INVALID_FIELD, f"{what} out of range")


class AccountBook:
    """The whole accounting state of one meter: the account tree plus its settings.

    Order: top-level accounts and the children of each account keep their creation
    order; :meth:`records` and reports walk the tree depth-first (parents first).
    """

    __slots__ = ("_accounts", "_by_number", "_children", "_digest", "_free_hint", "_retired",
                 "settings")

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings: Settings = settings or Settings()
        if self.settings.capacity not in CAPACITY_TIERS:
            raise _err(ErrorCode.INVALID_FIELD, "capacity is not a known tier")
        self._accounts: dict[str, _Account] = {}
        self._children: dict[str, list[str]] = {"": []}
        self._by_number: dict[int, str] = {}
        self._retired: set[int] = set()
        self._free_hint = 1
        self._digest: bytes | None = None

    # ------------------------------------------------------------------ queries

    def __repr__(self) -> str:
        return (
            f"AccountBook(accounts={len(self._accounts)}, chargeable={self.chargeable_count()}, "
            f"capacity={self.settings.capacity})"
        )

    def __len__(self) -> int:
        return len(self._accounts)

    def __contains__(self, code: object) -> bool:
        return code in self._accounts

    def codes(self) -> list[str]:
        """All codes in tree order (parents before children)."""
        return [a.code for a in self._walk()]

    def chargeable_count(self) -> int:
        return len(self._by_number)

    def is_chargeable(self, code: str) -> bool:
        self._get(code)
        return not self._children.get(code)

    def depth(self, code: str) -> int:
        """1 for a top-level account, 2 for a sub, 3 for a subsub."""
        depth = 1
        acc = self._get(code)
        while acc.parent_code:
            depth += 1
            acc = self._accounts[acc.parent_code]
        return depth

    def children(self, code: str = "") -> list[str]:
        if code:
            self._get(code)
        return list(self._children.get(code, ()))

    def code_of(self, number: int) -> str:
        try:
            return self._by_number[number]
        except (KeyError, TypeError):
            raise _err(ErrorCode.UNKNOWN_ACCOUNT, f"no account number {number!r}") from None

    def get(self, code: str) -> AccountRecord:
        """One account as a record, without its password."""
        return self._record(self._get(code), include_passwords=False)

    def by_number(self, number: int) -> AccountRecord:
        return self.get(self.code_of(number))

    def path(self, code: str) -> list[str]:
        """Names from the top level down to ``code``."""
        names: list[str] = []
        acc: _Account | None = self._get(code)
        while acc is not None:
            names.append(acc.name)
            acc = self._accounts.get(acc.parent_code) if acc.parent_code else None
        return names[::-1]

    def usable(self, code: str) -> bool:
        """True when the account and all its ancestors are active."""
        acc: _Account | None = self._get(code)
        while acc is not None:
            if not acc.active:
                return False
            acc = self._accounts.get(acc.parent_code) if acc.parent_code else None
        return True

    def totals(self, code: str = "") -> Cleared:
        """Pieces and postage of ``code`` (a parent: everything below it; "": the meter)."""
        if code:
            self._get(code)
        pieces = mills = 0
        for acc in self._walk(code):
            if not self._children.get(acc.code):
                pieces += acc.pieces
                mills += acc.postage_mills
        return Cleared(pieces, mills)

    def records(self, include_passwords: bool = False) -> list[AccountRecord]:
        """Every account in tree order (parents before children, creation order)."""
        out: list[AccountRecord] = []
        subtotal: dict[str, list[int]] = {}
        walk = list(self._walk())
        # Bottom-up subtotals for administrative accounts.
        for acc in reversed(walk):
            if self._children.get(acc.code):
                continue
            parent = acc.parent_code
            while parent:
                entry = subtotal.setdefault(parent, [0, 0, 0])
                entry[0] += acc.pieces
                entry[1] += acc.postage_mills
                entry[2] |= int(acc.ever_charged)
                parent = self._accounts[parent].parent_code
        for acc in walk:
            out.append(self._record(acc, include_passwords, subtotal.get(acc.code)))
        return out

    def digest(self) -> bytes:
        """protocol.digest.list_digest of this list (cached; counters do not count)."""
        if self._digest is None:
            # The accounts themselves carry every field the digest reads: the same
            # digest as over records(include_passwords=True), without building them.
            self._digest = list_digest(self._accounts.values())
        return self._digest

    # ------------------------------------------------------------ list changes

    def put(
        self,
        code: str,
        parent_code: str = "",
        name: str = "",
        active: bool = True,
        password_enabled: bool | None = None,
        password: str | None = None,
        number: int = 0,
    ) -> AccountRecord:
        """Create or update the account ``code``; returns it (without password).

        * ``password_enabled``: ``None`` keeps the current flag (on create: the
          rolled-down flag, or off for a new linked set).
        * ``password``: ``None`` keeps the current one (on create: the rolled-down
          one, or none); ``""`` clears it; otherwise 4..32 characters.  A given value
          replaces a rolled-down one (like a supervisor edit).
        * ``number``: 0 keeps/auto-assigns; otherwise a supervisor edit of the
          chargeable account's number (NUMBER_IN_USE when another account holds it or
          it was retired with history).
        * On an administrative account the password fields are stored but dormant:
          they take effect again if the account becomes chargeable (its last child
          deleted).
        """
        code = _check_code(code)
        parent_code = _check_text(parent_code, "parent code")
        name = _check_text(name, "name")
        if not isinstance(active, bool):
            raise _err(ErrorCode.INVALID_FIELD, "active must be a boolean")
        if password_enabled is not None and not isinstance(password_enabled, bool):
            raise _err(ErrorCode.INVALID_FIELD, "password_enabled must be a boolean")
        if password is not None and password != "":
            _check_password(password)
        if not isinstance(number, int) or isinstance(number, bool) or not (
            0 <= number <= NUMBER_MAX
        ):
            raise _err(ErrorCode.INVALID_FIELD, "account number out of range")

        existing = self._accounts.get(code)
        if existing is not None:
            return self._update(existing, parent_code, name, active, password_enabled, password,
                                number)
        return self._create(code, parent_code, name, active, password_enabled, password, number)

    def put_request(self, req: PutRequest) -> AccountRecord:
        return self.put(req.code, req.parent_code, req.name, req.active, req.password_enabled,
                        req.password, req.number)

    def _check_name(self, name: str, depth: int, parent_code: str, own_code: str | None) -> None:
        if not name.strip():
            raise _err(ErrorCode.INVALID_FIELD, "name is empty")
        limit = TOP_NAME_MAX if depth == 1 else SUB_NAME_MAX
        if len(name) > limit:
            raise _err(ErrorCode.NAME_TOO_LONG, f"name longer than {limit} characters")
        for sibling in self._children.get(parent_code, ()):
            if sibling != own_code and self._accounts[sibling].name == name:
                raise _err(ErrorCode.DUPLICATE_NAME, f"a sibling is already named {name!r}")

    def _check_number(self, number: int, holder: str | None) -> None:
        """``number`` may be given to an account that will end up as ``holder``'s."""
        if number in self._retired:
            raise _err(ErrorCode.NUMBER_IN_USE, f"number {number} is retired with history")
        owner = self._by_number.get(number)
        if owner is not None and owner != holder:
            raise _err(ErrorCode.NUMBER_IN_USE, f"number {number} is in use")

    def _create(
        self,
        code: str,
        parent_code: str,
        name: str,
        active: bool,
        password_enabled: bool | None,
        password: str | None,
        number: int,
    ) -> AccountRecord:
        parent: _Account | None = None
        depth = 1
        if parent_code:
            parent = self._accounts.get(parent_code)
            if parent is None:
                raise _err(ErrorCode.UNKNOWN_PARENT, f"no parent account {parent_code!r}")
            depth = self.depth(parent_code) + 1
            if depth > MAX_DEPTH:
                raise _err(ErrorCode.TOO_DEEP, "accounts have at most three levels")
        self._check_name(name, depth, parent_code, None)
        roll_down = parent is not None and not self._children.get(parent_code)
        if not roll_down and self.chargeable_count() >= self.settings.capacity:
            raise _err(ErrorCode.CAPACITY, CAPACITY_MESSAGE)
        # The final password state.
        if roll_down:
            assert parent is not None
            base_enabled, base_password = parent.password_enabled, parent.password
        else:
            base_enabled, base_password = False, ""
        final_enabled = base_enabled if password_enabled is None else password_enabled
        final_password = base_password if password is None else password
        if final_enabled and len(final_password) < PASSWORD_MIN:
            raise _err(ErrorCode.BAD_PASSWORD_FORMAT, "password protection needs a password")
        if number:
            # Rolling down, the parent's number moves to this account, so it may keep it.
            holder = parent_code if roll_down else None
            self._check_number(number, holder)

        # ---- validated: mutate.
        acc = _Account(code, parent_code, name, active, final_enabled, final_password)
        if roll_down:
            assert parent is not None
            acc.number = parent.number
            acc.pieces, acc.postage_mills = parent.pieces, parent.postage_mills
            acc.ever_charged = parent.ever_charged
            parent.number = 0
            parent.pieces = parent.postage_mills = 0
            parent.ever_charged = False
            self._by_number[acc.number] = code
        else:
            acc.number = self._allocate()
            self._by_number[acc.number] = code
        self._accounts[code] = acc
        self._children[parent_code].append(code)
        self._children[code] = []
        if number and number != acc.number:
            self._renumber(acc, number)
        self._digest = None
        return self._record(acc, include_passwords=False)

    def _update(
        self,
        acc: _Account,
        parent_code: str,
        name: str,
        active: bool,
        password_enabled: bool | None,
        password: str | None,
        number: int,
    ) -> AccountRecord:
        if parent_code != acc.parent_code:
            raise _err(ErrorCode.MOVE_NOT_SUPPORTED, "an account cannot move to another parent")
        self._check_name(name, self.depth(acc.code), parent_code, acc.code)
        final_enabled = acc.password_enabled if password_enabled is None else password_enabled
        final_password = acc.password if password is None else password
        if final_enabled and len(final_password) < PASSWORD_MIN:
            raise _err(ErrorCode.BAD_PASSWORD_FORMAT, "password protection needs a password")
        chargeable = not self._children.get(acc.code)
        if number and number != acc.number:
            if not chargeable:
                raise _err(ErrorCode.INVALID_FIELD, "an administrative account has no number")
            self._check_number(number, acc.code)
        # ---- validated: mutate.
        changed = (acc.name, acc.active, acc.password_enabled, acc.password) != (
            name, active, final_enabled, final_password)
        acc.name, acc.active = name, active
        acc.password_enabled, acc.password = final_enabled, final_password
        if number and number != acc.number:
            self._renumber(acc, number)
        if changed:
            self._digest = None
        return self._record(acc, include_passwords=False)

    def delete(self, code: str) -> None:
        """Delete an account that has no children and has never been charged.

        Deleting the LAST child of a parent makes the parent chargeable again: it gets
        the next free number, zero counters, and its own (dormant) password settings.
        """
        acc = self._get(code)
        if self._children.get(code):
            raise _err(ErrorCode.HAS_CHILDREN, "delete the children first")
        if acc.ever_charged:
            raise _err(ErrorCode.HAS_HISTORY, "the account has been charged; deactivate it")
        # ---- validated: mutate.
        del self._by_number[acc.number]
        self._free(acc.number)
        del self._accounts[code]
        del self._children[code]
        siblings = self._children[acc.parent_code]
        siblings.remove(code)
        if acc.parent_code and not siblings:
            parent = self._accounts[acc.parent_code]
            parent.number = self._allocate()
            parent.pieces = parent.postage_mills = 0
            parent.ever_charged = False
            self._by_number[parent.number] = parent.code
        self._digest = None

    def apply_batch(self, puts: Iterable[PutRequest | AccountRecord],
                    deletes: Iterable[str] = ()) -> None:
        """Apply a batch atomically: all of it or (on AccountError) none of it.

        Deletes go first (deepest accounts first), then puts (parents before the
        children that name them in the same batch, otherwise in the order given).
        """
        staged = self.copy()
        staged._apply_batch(puts, deletes)
        self._adopt(staged)

    def _apply_batch(self, puts: Iterable[PutRequest | AccountRecord],
                     deletes: Iterable[str]) -> None:
        delete_list = list(deletes)
        for code in delete_list:
            self._get(code)
        for code in sorted(delete_list, key=lambda c: -self.depth(c) if c in self else 0):
            self.delete(code)
        reqs = [p if isinstance(p, PutRequest) else PutRequest.from_record(p) for p in puts]
        for req in _parents_first(reqs):
            self.put_request(req)

    def copy(self) -> AccountBook:
        """An independent copy (for staging a list transaction)."""
        other = AccountBook.__new__(AccountBook)
        other.settings = self.settings
        other._accounts = {c: a.clone() for c, a in self._accounts.items()}
        other._children = {c: list(k) for c, k in self._children.items()}
        other._by_number = dict(self._by_number)
        other._retired = set(self._retired)
        other._free_hint = self._free_hint
        other._digest = self._digest
        return other

    stage = copy

    def _adopt(self, other: AccountBook) -> None:
        self.settings = other.settings
        self._accounts = other._accounts
        self._children = other._children
        self._by_number = other._by_number
        self._retired = other._retired
        self._free_hint = other._free_hint
        self._digest = other._digest

    # ---------------------------------------------------------------- mail runs

    def check_charge(self, account: int | str, password: str | None,
                     today: _dt.date) -> str:
        """Everything :meth:`charge` checks except the amounts; returns the code."""
        acc = self._get(account) if isinstance(account, str) else self._by_num(account)
        if self._children.get(acc.code):
            raise _err(ErrorCode.NOT_CHARGEABLE, "an administrative account cannot be charged")
        if not self.usable(acc.code):
            raise _err(ErrorCode.INACTIVE, "the account (or a parent) is inactive")
        if self.settings.expired(today):
            raise _err(ErrorCode.PERIOD_EXPIRED, "the accounting period has ended; reset first")
        if acc.password_enabled:
            given = (password or "").encode("utf-8")
            if not hmac.compare_digest(given, acc.password.encode("utf-8")):
                raise _err(ErrorCode.BAD_ACCOUNT_PASSWORD, "wrong account password")
        return acc.code

    def charge(self, account: int | str, password: str | None, pieces: int,
               postage_mills: int, today: _dt.date) -> AccountRecord:
        """Record a mail run on a chargeable account (by number, or by code if a str)."""
        _check_amounts(pieces, postage_mills)
        code = self.check_charge(account, password, today)
        acc = self._accounts[code]
        if acc.pieces + pieces > COUNTER_MAX or acc.postage_mills + postage_mills > COUNTER_MAX:
            raise _err(ErrorCode.INVALID_FIELD, "counter overflow; reset the account")
        acc.pieces += pieces
        acc.postage_mills += postage_mills
        acc.ever_charged = True
        return self._record(acc, include_passwords=False)

    # ------------------------------------------------------------------- resets

    def reset(self, account: int | str) -> Cleared:
        """Clear one lowest-level account's counters (history flag stays)."""
        acc = self._get(account) if isinstance(account, str) else self._by_num(account)
        if self._children.get(acc.code):
            raise _err(ErrorCode.NOT_CHARGEABLE, "only a lowest-level account can be reset")
        if not self.settings.reset_individual_enabled:
            raise _err(ErrorCode.RESET_DISABLED, "resetting individual accounts is disabled")
        cleared = Cleared(acc.pieces, acc.postage_mills)
        acc.pieces = acc.postage_mills = 0
        return cleared

    def reset_all(self, today: _dt.date) -> Cleared:
        """Clear every account; move an accounting-period cutoff past ``today``."""
        cleared = Cleared()
        for code in self._by_number.values():
            acc = self._accounts[code]
            cleared = cleared + Cleared(acc.pieces, acc.postage_mills)
            acc.pieces = acc.postage_mills = 0
        if self.settings.period is not Period.NONE:
            self.settings = replace(self.settings, cutoff=self.settings.next_cutoff(today))
        return cleared

    # ----------------------------------------------------------------- settings

    def configure(
        self,
        *,
        capacity: int | None = None,
        reset_individual_enabled: bool | None = None,
        period: Period | str | None = None,
        cutoff: _dt.date | None = None,
    ) -> Settings:
        """Change settings (validated first).  Setting ``cutoff`` also sets its day."""
        s = self.settings
        new_capacity = s.capacity if capacity is None else capacity
        if new_capacity not in CAPACITY_TIERS:
            raise _err(ErrorCode.INVALID_FIELD, "capacity is not a known tier")
        if new_capacity < self.chargeable_count():
            raise _err(ErrorCode.CAPACITY, "more chargeable accounts than the new capacity")
        try:
            new_period = s.period if period is None else Period(period)
        except ValueError:
            raise _err(ErrorCode.INVALID_FIELD, "unknown accounting period") from None
        new_cutoff = s.cutoff if cutoff is None else cutoff
        if new_period is not Period.NONE and new_cutoff is None:
            raise _err(ErrorCode.INVALID_FIELD, "an accounting period needs a cutoff date")
        if cutoff is not None and not isinstance(cutoff, _dt.date):
            raise _err(ErrorCode.INVALID_FIELD, "cutoff must be a date")
        self.settings = Settings(
            capacity=new_capacity,
            reset_individual_enabled=(
                s.reset_individual_enabled
                if reset_individual_enabled is None
                else bool(reset_individual_enabled)
            ),
            period=new_period,
            cutoff=new_cutoff,
            cutoff_day=cutoff.day if cutoff is not None else s.cutoff_day,
        )
        return self.settings

    # ----------------------------------------------------------------- snapshot

    def to_state(self) -> dict[str, Any]:
        """Plain data (JSON-able) for the NVM.  Contains passwords."""
        return {
            "version": STATE_VERSION,
            "settings": self.settings.to_state(),
            "retired": sorted(self._retired),
            "accounts": [account_to_state(a) for a in self._walk()],
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> AccountBook:
        """Rebuild from :meth:`to_state` data; raises ValueError on inconsistent data."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown account state version {data.get('version')!r}")
        book = cls(Settings.from_state(data["settings"]))
        book._retired = {int(n) for n in data.get("retired", ())}
        for item in data["accounts"]:
            acc = account_from_state(item)
            if acc.code in book._accounts or (
                acc.parent_code and acc.parent_code not in book._accounts
            ):
                raise ValueError("account state: duplicate code or parent after child")
            book._accounts[acc.code] = acc
            book._children[acc.parent_code].append(acc.code)
            book._children[acc.code] = []
        for acc in book._accounts.values():
            chargeable = not book._children[acc.code]
            if chargeable:
                if acc.number <= 0 or acc.number in book._by_number or acc.number in book._retired:
                    raise ValueError("account state: bad or duplicate account number")
                book._by_number[acc.number] = acc.code
            elif acc.number or acc.pieces or acc.postage_mills:
                raise ValueError("account state: administrative account with a number/counters")
        return book

    # ----------------------------------------------------------------- helpers

    def _get(self, code: str) -> _Account:
        try:
            return self._accounts[code]
        except (KeyError, TypeError):
            raise _err(ErrorCode.UNKNOWN_ACCOUNT, f"no account with code {code!r}") from None

    def _by_num(self, number: int) -> _Account:
        return self._accounts[self.code_of(number)]

    def _walk(self, root: str = "") -> Iterator[_Account]:
        stack = list(reversed(self._children.get(root, ())))
        if root:
            yield self._accounts[root]
        while stack:
            code = stack.pop()
            yield self._accounts[code]
            stack.extend(reversed(self._children[code]))

    def _allocate(self) -> int:
        n = self._free_hint
        while n in self._by_number or n in self._retired:
            n += 1
        if n > NUMBER_MAX:  # pragma: no cover - capacity is far below this
            raise _err(ErrorCode.CAPACITY, CAPACITY_MESSAGE)
        self._free_hint = n + 1
        return n

    def _free(self, number: int) -> None:
        if 0 < number < self._free_hint:
            self._free_hint = number

    def _renumber(self, acc: _Account, number: int) -> None:
        old = acc.number
        del self._by_number[old]
        if acc.ever_charged:
            self._retired.add(old)
        else:
            self._free(old)
        acc.number = number
        self._by_number[number] = acc.code

    def _record(self, acc: _Account, include_passwords: bool,
                subtotal: list[int] | None = None) -> AccountRecord:
        chargeable = not self._children.get(acc.code)
        if chargeable:
            return AccountRecord(
                code=acc.code,
                parent_code=acc.parent_code,
                name=acc.name,
                active=acc.active,
                password_enabled=acc.password_enabled,
                password=acc.password if include_passwords else "",
                number=acc.number,
                chargeable=True,
                ever_charged=acc.ever_charged,
                pieces=acc.pieces,
                postage_mills=acc.postage_mills,
            )
        if subtotal is None:
            t = self.totals(acc.code)
            ever = any(a.ever_charged for a in self._walk(acc.code))
            subtotal = [t.pieces, t.postage_mills, int(ever)]
        return AccountRecord(
            code=acc.code,
            parent_code=acc.parent_code,
            name=acc.name,
            active=acc.active,
            password_enabled=False,
            password="",
            number=0,
            chargeable=False,
            ever_charged=bool(subtotal[2]),
            pieces=subtotal[0],
            postage_mills=subtotal[1],
        )


def _parents_first(reqs: Sequence[PutRequest]) -> list[PutRequest]:
    """Stable order in which a put naming a parent created in the same batch follows it."""
    pending = {r.code for r in reqs}
    done: set[str] = set()
    out: list[PutRequest] = []
    remaining = list(reqs)
    while remaining:
        progress: list[PutRequest] = []
        rest: list[PutRequest] = []
        for r in remaining:
            if r.parent_code in pending and r.parent_code not in done and r.parent_code != r.code:
                rest.append(r)
            else:
                progress.append(r)
        if not progress:  # a cycle: let put() refuse it in the given order
            out.extend(rest)
            break
        for r in progress:
            done.add(r.code)
        out.extend(progress)
        remaining = rest
    return out


def account_to_state(acc: _Account) -> dict[str, Any]:
    return {
        "code": acc.code,
        "parent_code": acc.parent_code,
        "name": acc.name,
        "active": acc.active,
        "password_enabled": acc.password_enabled,
        "password": acc.password,
        "number": acc.number,
        "pieces": acc.pieces,
        "postage_mills": acc.postage_mills,
        "ever_charged": acc.ever_charged,
    }


def account_from_state(item: dict[str, Any]) -> _Account:
    return _Account(
        code=str(item["code"]),
        parent_code=str(item["parent_code"]),
        name=str(item["name"]),
        active=bool(item["active"]),
        password_enabled=bool(item["password_enabled"]),
        password=str(item["password"]),
        number=int(item["number"]),
        pieces=int(item["pieces"]),
        postage_mills=int(item["postage_mills"]),
        ever_charged=bool(item["ever_charged"]),
    )


# --------------------------------------------------------------------- supervisor

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MAX_FAILURES = 5
LOCKOUT_SECONDS = 60.0


class Supervisor:
    """The supervisor password: a salted scrypt hash plus a lockout counter.

    ``verify`` changes the failure counter, so the caller persists the supervisor
    after every verify (NVM: ``commit_supervisor``).  An unset password means setup
    is unprotected (a DM meter's supervisor password is optional): verify accepts.
    """

    def __init__(
        self,
        *,
        n: int = SCRYPT_N,
        r: int = SCRYPT_R,
        p: int = SCRYPT_P,
        max_failures: int = MAX_FAILURES,
        lockout_seconds: float = LOCKOUT_SECONDS,
    ) -> None:
        self.n, self.r, self.p = n, r, p
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._salt = b""
        self._hash = b""
        self.failures = 0
        self.locked_until = 0.0

    def __repr__(self) -> str:
        return (
            f"Supervisor(set={self.is_set}, failures={self.failures}, "
            f"locked_until={self.locked_until})"
        )

    @property
    def is_set(self) -> bool:
        return bool(self._hash)

    def _derive(self, password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        return hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
            maxmem=128 * r * n * 2 + 1024 * 1024,
        )

    def set_password(self, password: str, *, salt: bytes | None = None) -> None:
        _check_password(password)
        salt = os.urandom(16) if salt is None else salt
        self._hash = self._derive(password, salt, self.n, self.r, self.p)
        self._salt = salt
        self.failures = 0
        self.locked_until = 0.0

    def locked(self, now: float) -> bool:
        if self.locked_until and self.locked_until - now > self.lockout_seconds:
            # The clock went backwards: never lock longer than one lockout.
            self.locked_until = now + self.lockout_seconds
        return now < self.locked_until

    def verify(self, password: str, now: float) -> None:
        """Raise LOCKED_OUT or BAD_SUPERVISOR_PASSWORD; success clears the counter."""
        if self.locked(now):
            raise _err(ErrorCode.LOCKED_OUT, "too many wrong supervisor passwords; wait")
        if not self.is_set:
            return
        if self.locked_until:
            self.locked_until = 0.0
        given = password if isinstance(password, str) else ""
        candidate = self._derive(given, self._salt, self.n, self.r, self.p)
        if hmac.compare_digest(candidate, self._hash):
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.max_failures:
            self.failures = 0
            self.locked_until = now + self.lockout_seconds
            raise _err(ErrorCode.LOCKED_OUT, "too many wrong supervisor passwords; wait")
        raise _err(ErrorCode.BAD_SUPERVISOR_PASSWORD, "wrong supervisor password")

    def to_state(self) -> dict[str, Any]:
        return {
            "kdf": "scrypt",
            "n": self.n,
            "r": self.r,
            "p": self.p,
            "salt": self._salt.hex(),
            "hash": self._hash.hex(),
            "failures": self.failures,
            "locked_until": self.locked_until,
            "max_failures": self.max_failures,
            "lockout_seconds": self.lockout_seconds,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Supervisor:
        if data.get("kdf", "scrypt") != "scrypt":
            raise ValueError("unknown supervisor password KDF")
        sup = cls(
            n=int(data["n"]),
            r=int(data["r"]),
            p=int(data["p"]),
            max_failures=int(data["max_failures"]),
            lockout_seconds=float(data["lockout_seconds"]),
        )
        sup._salt = bytes.fromhex(data["salt"])
        sup._hash = bytes.fromhex(data["hash"])
        sup.failures = int(data["failures"])
        sup.locked_until = float(data["locked_until"])
        return sup
