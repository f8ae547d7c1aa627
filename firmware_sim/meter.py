"""The virtual meter's protocol core: one transition table, sans-IO.

``Meter.receive(data, now)`` takes bytes from the line and returns the bytes to
send back.  It never touches a port or sleeps; the clock is passed in.  The same
object serves a pty, a socket or an in-process test.

States (per session)::

    NO_SESSION --HELLO--> READY --AUTH--> SUPERVISOR --BEGIN--> TRANSACTION
                             ^               |   ^                 |  |
                             |               |   +---COMMIT/ABORT--+  |
                             +-----HELLO-----+---------HELLO----------+

The table ``TRANSITIONS`` maps ``(state, message type)`` to ``(action, next
state)``; a pair that is absent is refused with the numbered error
``refusal(state, type)`` and changes nothing.  Any ERROR inside a transaction
drops the staged list (the live list was never touched): BEGIN again.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from firmware_sim.accounts import AccountBook, AccountError, Period, PutRequest, Supervisor
from firmware_sim.nvm import Nvm
from protocol.errors import ErrorCode
from protocol.frames import MAX_PAYLOAD
from protocol.messages import (
    MAX_BATCH_RECORDS,
    NO_DIGEST,
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
    PutAccounts,
    ReadAccounts,
    ReadCounters,
    ResetCounters,
    RunMail,
    SetSettings,
)
from protocol.messages import Period as WirePeriod
from protocol.session import Request, ServerSession

MODEL = "DM800i"
FIRMWARE = "meterlink-sim 0.1"
_PERIODS = {
    WirePeriod.NONE: Period.NONE,
    WirePeriod.WEEKLY: Period.WEEKLY,
    WirePeriod.MONTHLY: Period.MONTHLY,
    WirePeriod.QUARTERLY: Period.QUARTERLY,
    WirePeriod.HALF_YEARLY: Period.HALF_YEARLY,
    WirePeriod.YEARLY: Period.YEARLY,
}


class State(Enum):
    NO_SESSION = "no-session"
    READY = "ready"
    SUPERVISOR = "supervisor"
    TRANSACTION = "transaction"


def date_from_wire(value: int) -> _dt.date | None:
    """date32 (YYYYMMDD as a decimal number) to a date; 0 is None."""
    if value == 0:
        return None
    try:
        return _dt.date(value // 10000, value // 100 % 100, value % 100)
    except ValueError:
        raise AccountError(ErrorCode.INVALID_FIELD, f"{value} is not a YYYYMMDD date") from None


def date_to_wire(day: _dt.date | None) -> int:
    return 0 if day is None else day.year * 10000 + day.month * 100 + day.day


@dataclass
class _Txn:
    txn: int
    book: AccountBook
    added: int = 0
    changed: int = 0
    deleted: int = 0


Outcome = tuple[Message, Callable[[bytes], None] | None]
"""A reply, and the durable effect to commit with the session blob (or None)."""


@dataclass
class Meter:
    """One virtual meter.  ``nvm=None`` keeps everything in memory (fast tests)."""

    serial: str
    book: AccountBook = field(default_factory=AccountBook)
    supervisor: Supervisor = field(default_factory=Supervisor)
    nvm: Nvm | None = None
    window: int = 8
    max_payload: int = MAX_PAYLOAD
    model: str = MODEL
    firmware: str = FIRMWARE
    state: State = State.NO_SESSION
    busy_until: float = 0.0
    today_override: _dt.date | None = None
    session: ServerSession = field(init=False)
    _txn: _Txn | None = field(default=None, init=False)
    _pages: dict[bool, list[AccountEntry]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.session = ServerSession(window=self.window, max_payload=self.max_payload)

    @classmethod
    def from_nvm(cls, nvm: Nvm, serial: str, **kw: object) -> Meter:
        """Power on: load the state and the durable part of the session."""
        loaded = nvm.load()
        meter = cls(serial=serial, book=loaded.book, supervisor=loaded.supervisor, nvm=nvm, **kw)  # type: ignore[arg-type]
        meter.session.restore(loaded.session)
        return meter

    # -- the line -------------------------------------------------------------

    def is_busy(self, now: float) -> bool:
        return now < self.busy_until

    def receive(self, data: bytes, now: float | None = None) -> bytes:
        """Bytes in from the line; bytes out to send back."""
        now = time.monotonic() if now is None else now
        out = bytearray(self.session.receive(data, busy=self.is_busy(now)))
        self._drain(out, now)
        return bytes(out)

    def line_idle(self, now: float | None = None) -> bytes:
        now = time.monotonic() if now is None else now
        out = bytearray(self.session.line_idle(busy=self.is_busy(now)))
        self._drain(out, now)
        return bytes(out)

    def _drain(self, out: bytearray, now: float) -> None:
        while (req := self.session.next_request()) is not None:
            if self.is_busy(now):
                out += self.session.respond(req, Busy(max(1, int((self.busy_until - now) * 1000))))
                continue
            reply, effect = self.handle(req, now)
            frame = self.session.respond(req, reply, durable=effect is not None)
            if effect is not None:
                effect(self.session.snapshot())
            out += frame

    # -- the transition table ---------------------------------------------------

    def handle(self, req: Request, now: float) -> Outcome:
        msg = req.message
        if isinstance(msg, Error):  # the session could not parse this request
            return self._fail(msg)
        entry = TRANSITIONS.get((self.state, type(msg)))
        if entry is None:
            code = refusal(self.state, type(msg))
            return self._fail(
                Error(code, message=f"{type(msg).__name__} not allowed now ({self.state.value})")
            )
        action, next_state = entry
        try:
            outcome = action(self, msg, now)
        except AccountError as exc:
            return self._fail(Error(exc.code, message=exc.message))
        if not isinstance(outcome[0], Error) and next_state is not None:
            self.state = next_state
        return outcome

    def _fail(self, error: Error) -> Outcome:
        if self.state is State.TRANSACTION:
            self._txn = None
            self.state = State.SUPERVISOR
            error = replace(error, message=f"{error.message}; transaction dropped, BEGIN again")
        return error, None

    # -- actions -----------------------------------------------------------------

    def today(self) -> _dt.date:
        return self.today_override or _dt.date.today()

    def identify(self) -> Identify:
        return Identify(
            version=1,
            model=self.model,
            serial=self.serial,
            firmware=self.firmware,
            capacity=self.book.settings.capacity,
            chargeable=self.book.chargeable_count(),
            accounts=len(self.book),
            digest=self.book.digest(),
            max_payload=self.max_payload,
            window=self.window,
            authenticated=self.state in (State.SUPERVISOR, State.TRANSACTION),
            transaction_open=self.state is State.TRANSACTION,
            period_expired=self.book.settings.expired(self.today()),
        )

    def _hello(self, msg: Hello, now: float) -> Outcome:
        self._txn = None
        if msg.max_version < 1:
            return Error(ErrorCode.UNSUPPORTED_VERSION, message="this meter speaks version 1"), None
        self.state = State.READY
        return self.identify(), None

    def _auth(self, msg: Auth, now: float) -> Outcome:
        sup = self.supervisor
        try:
            sup.verify(msg.password, now=time.time())
        except AccountError as exc:
            return Error(exc.code, message=exc.message), self._persist_supervisor
        return Ack(), self._persist_supervisor

    def _persist_supervisor(self, blob: bytes) -> None:
        if self.nvm is not None:
            self.nvm.commit_supervisor(self.supervisor, blob)

    def _entries(self, with_passwords: bool) -> list[AccountEntry]:
        cached = self._pages.get(with_passwords)
        if cached is None:
            cached = [
                AccountEntry(
                    number=r.number,
                    code=r.code,
                    parent_code=r.parent_code,
                    name=r.name,
                    active=r.active,
                    chargeable=r.chargeable,
                    password_enabled=r.password_enabled,
                    ever_charged=r.ever_charged,
                    password=r.password if with_passwords else "",
                    pieces=r.pieces,
                    postage_mills=r.postage_mills,
                )
                for r in self.book.records(include_passwords=with_passwords)
            ]
            self._pages[with_passwords] = cached
        return cached

    def _changed(self) -> None:
        self._pages.clear()

    def _page_budget(self) -> int:
        return self.max_payload - 6  # total, offset, count

    def _read_accounts(self, msg: ReadAccounts, now: float) -> Outcome:
        entries = self._entries(self.state is not State.READY)
        budget = self._page_budget()
        page: list[AccountEntry] = []
        for e in entries[msg.offset : msg.offset + msg.limit]:
            size = (
                2
                + 1
                + 4
                + 8
                + sum(
                    1 + len(s.encode("utf-8")) for s in (e.code, e.parent_code, e.name, e.password)
                )
            )
            if size > budget:
                break
            budget -= size
            page.append(e)
        return AccountPage(total=len(entries), offset=msg.offset, entries=tuple(page)), None

    def _read_counters(self, msg: ReadCounters, now: float) -> Outcome:
        counters = sorted(
            (
                CounterEntry(e.number, e.pieces, e.postage_mills)
                for e in self._entries(False)
                if e.chargeable
            ),
            key=lambda c: c.number,
        )
        count = min(msg.limit, self._page_budget() // 14)
        page = tuple(counters[msg.offset : msg.offset + count])
        return CounterPage(total=len(counters), offset=msg.offset, entries=page), None

    def _begin(self, msg: Begin, now: float) -> Outcome:
        self._txn = _Txn(msg.txn, self.book.copy())
        return Ack(), None

    def _staged(self, txn: int) -> _Txn:
        if self._txn is None or self._txn.txn != txn:
            raise AccountError(ErrorCode.NO_TRANSACTION, f"transaction {txn} is not open")
        return self._txn

    def _put(self, msg: PutAccounts, now: float) -> Outcome:
        t = self._staged(msg.txn)
        if len(msg.records) > MAX_BATCH_RECORDS:
            raise AccountError(
                ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH_RECORDS} records per batch"
            )
        for index, rec in enumerate(msg.records):
            existed = rec.code in t.book
            try:
                t.book.put_request(
                    PutRequest(
                        code=rec.code,
                        parent_code=rec.parent_code,
                        name=rec.name,
                        active=rec.active,
                        password_enabled=rec.password_enabled,
                        password=rec.password,
                        number=rec.number,
                    )
                )
            except AccountError as exc:
                return self._fail(Error(exc.code, index, f"{rec.code!r}: {exc.message}"))
            if existed:
                t.changed += 1
            else:
                t.added += 1
        return Ack(len(msg.records)), None

    def _delete(self, msg: DeleteAccounts, now: float) -> Outcome:
        t = self._staged(msg.txn)
        if len(msg.codes) > MAX_BATCH_RECORDS:
            raise AccountError(
                ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH_RECORDS} records per batch"
            )
        for index, code in enumerate(msg.codes):
            try:
                t.book.delete(code)
            except AccountError as exc:
                return self._fail(Error(exc.code, index, f"{code!r}: {exc.message}"))
            t.deleted += 1
        return Ack(len(msg.codes)), None

    def _commit(self, msg: Commit, now: float) -> Outcome:
        t = self._staged(msg.txn)
        digest = t.book.digest()
        if msg.expected_digest != NO_DIGEST and msg.expected_digest != digest:
            raise AccountError(
                ErrorCode.DIGEST_MISMATCH, "the staged list is not the list the client expects"
            )
        self._txn = None
        reply = Committed(digest, t.added, t.changed, t.deleted, t.book.chargeable_count())

        def effect(blob: bytes) -> None:
            if self.nvm is not None:
                self.nvm.commit_book(t.book, blob)
            self.book = t.book
            self._changed()

        return reply, effect

    def _abort(self, msg: Abort, now: float) -> Outcome:
        self._txn = None
        return Ack(), None

    def _reset(self, msg: ResetCounters, now: float) -> Outcome:
        book = self.book.copy()
        if msg.number == 0:
            book.reset_all(self.today())
            count = book.chargeable_count()
        else:
            book.reset(msg.number)
            code = book.code_of(msg.number)
            count = 1

        def effect(blob: bytes) -> None:
            if self.nvm is not None:
                if msg.number == 0:
                    self.nvm.commit_reset_all(book, blob)
                else:
                    self.nvm.commit_counters(book, [code], blob)
            self.book = book
            self._changed()

        return Ack(count), effect

    def _settings(self, msg: SetSettings, now: float) -> Outcome:
        try:
            period = _PERIODS[WirePeriod(msg.period)]
        except ValueError:
            raise AccountError(ErrorCode.INVALID_FIELD, f"unknown period {msg.period}") from None
        cutoff = date_from_wire(msg.cutoff)
        today = date_from_wire(msg.today)
        book = self.book.copy()
        book.configure(reset_individual_enabled=msg.reset_individual, period=period, cutoff=cutoff)

        def effect(blob: bytes) -> None:
            if self.nvm is not None:
                self.nvm.commit_settings(book, blob)
            self.book = book
            self.today_override = today

        return Ack(), effect

    def _mail(self, msg: RunMail, now: float) -> Outcome:
        rec = self.book.charge(
            msg.number, msg.password, msg.pieces, msg.postage_mills, self.today()
        )
        self.busy_until = now + msg.duration_ms / 1000.0
        self._changed()

        def effect(blob: bytes) -> None:
            if self.nvm is not None:
                self.nvm.commit_mail(self.book, rec.code, blob)

        return MailDone(rec.number, rec.pieces, rec.postage_mills), effect

    # -- conveniences for tests and the CLI (same rules as the protocol) ---------

    def run_mail(
        self, number: int, password: str = "", pieces: int = 1, postage_mills: int = 0
    ) -> MailDone:
        """Run mail in-process through the transition table (for tests)."""
        msg = RunMail(number, password, pieces, postage_mills)
        reply, effect = self.handle(Request(-1, msg, 0), time.monotonic())
        if effect is not None:
            effect(self.session.snapshot())
        if isinstance(reply, Error):
            raise AccountError(ErrorCode(reply.code), reply.message)
        assert isinstance(reply, MailDone)
        return reply


_Transition = tuple[Callable[..., Outcome], State | None]
_NS, _RD, _SV, _TX = State.NO_SESSION, State.READY, State.SUPERVISOR, State.TRANSACTION

TRANSITIONS: dict[tuple[State, type[Message]], _Transition] = {
    # state  message          action                  next state (None: stay)
    (_NS, Hello): (Meter._hello, _RD),
    (_RD, Hello): (Meter._hello, _RD),
    (_RD, Auth): (Meter._auth, _SV),
    (_RD, ReadAccounts): (Meter._read_accounts, None),
    (_RD, ReadCounters): (Meter._read_counters, None),
    (_RD, RunMail): (Meter._mail, None),
    (_SV, Hello): (Meter._hello, _RD),
    (_SV, Auth): (Meter._auth, _SV),
    (_SV, ReadAccounts): (Meter._read_accounts, None),
    (_SV, ReadCounters): (Meter._read_counters, None),
    (_SV, RunMail): (Meter._mail, None),
    (_SV, Begin): (Meter._begin, _TX),
    (_SV, ResetCounters): (Meter._reset, None),
    (_SV, SetSettings): (Meter._settings, None),
    (_TX, Hello): (Meter._hello, _RD),
    (_TX, ReadAccounts): (Meter._read_accounts, None),
    (_TX, ReadCounters): (Meter._read_counters, None),
    (_TX, Begin): (Meter._begin, _TX),
    (_TX, PutAccounts): (Meter._put, None),
    (_TX, DeleteAccounts): (Meter._delete, None),
    (_TX, Commit): (Meter._commit, _SV),
    (_TX, Abort): (Meter._abort, _SV),
}
"""``(state, message type) -> (action, next state)``.  A pair that is absent is
refused with ``refusal(state, type)`` and changes nothing.  Mail cannot run while a
list transaction is open: the meter is in accounting setup, not at its home screen."""

_ACCOUNTING = (Begin, PutAccounts, DeleteAccounts, Commit, Abort, ResetCounters, SetSettings)


def refusal(state: State, msg_type: type[Message]) -> ErrorCode:
    """The error for a (state, message) pair the table does not hold."""
    if not msg_type.IS_REQUEST:
        return ErrorCode.UNKNOWN_MESSAGE
    if state is State.NO_SESSION:
        return ErrorCode.SEQUENCE
    if state is State.READY and msg_type in _ACCOUNTING:
        return ErrorCode.NOT_AUTHENTICATED
    if state is State.TRANSACTION and msg_type is RunMail:
        return ErrorCode.SETUP_IN_PROGRESS
    return ErrorCode.NO_TRANSACTION
