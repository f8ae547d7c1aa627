"""A protocol conformance suite: run documented checks against any meter.

    meter-sync conformance --port P [--supervisor-password PW] [--force] [--baud N]

or from Python::

    from firmware_sim.conformance import run
    results = run("/dev/pts/7", supervisor_password="S3cret")   # list[CheckResult]

One check per protocol feature (docs/PROTOCOL.md):

==============  ===============================================================
framing         HELLO as raw bytes, written in small chunks: IDENTIFY, same SEQ
resync          garbage and a damaged frame before a frame: that frame is answered
retransmission  the same RUN_MAIL frame (same SEQ) twice: the same reply, charged once
windowing       several requests in flight at once: every reply, in SEQ order
transactions    PUT is staged (invisible) until COMMIT; ABORT drops it
busy            RUN_MAIL with a duration, then a request: BUSY, later answered
errors          numbered ERROR codes: unknown type, malformed payload, no AUTH
roll-down       the first child of a charged account takes its number and counters
capacity        one chargeable account more than the capacity: ERROR(CAPACITY)
==============  ===============================================================

**It changes the meter's list**: it creates accounts whose codes start with
``CF-`` (two are charged, so they stay; the meter's counters change too).  Run it
on an empty or scratch meter: ``run`` refuses a meter that holds accounts unless
``force=True`` (``--force``).  Needs the supervisor password (``--supervisor-password``
or ``$METER_SUPERVISOR_PASSWORD``); it is never printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware_sim.testing import load_accounts, read_accounts, read_counters
from protocol.client import MeterClient, MeterError
from protocol.decoder import FrameDecoder, FrameReceived
from protocol.errors import ErrorCode
from protocol.frames import encode_frame
from protocol.link import LinkError
from protocol.messages import (
    Abort,
    AccountEntry,
    Ack,
    Auth,
    Begin,
    Busy,
    Commit,
    Committed,
    CounterPage,
    Error,
    Hello,
    Identify,
    MailDone,
    Message,
    PutAccounts,
    PutRecord,
    ReadAccounts,
    ReadCounters,
    RunMail,
    decode,
)

PASSWORD_ENV = "METER_SUPERVISOR_PASSWORD"  # noqa: S105 - a variable name
FEATURES = (
    "framing", "resync", "retransmission", "windowing", "transactions", "busy", "errors",
    "roll-down", "capacity",
)
REPLY_TIMEOUT = 3.0


@dataclass(frozen=True)
class CheckResult:
    """One feature's outcome: ``passed`` and a one-line ``detail``."""

    feature: str
    passed: bool
    detail: str


class NotScratch(Exception):
    """The meter holds accounts and ``force`` was not given."""


class CheckFailed(AssertionError):
    pass


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class RawLine:
    """Raw frames over the client's transport (its session is set aside)."""

    def __init__(self, client: MeterClient) -> None:
        self.transport = client.transport
        client.session.forget()
        self.decoder = FrameDecoder()
        self.seq = 0
        self.pending: list[tuple[int, Message]] = []

    def hello(self) -> Identify:
        self.seq = secrets.randbelow(200)
        seq = self.seq
        self.write(encode_frame(Hello.TYPE, seq, Hello(secrets.randbits(32), 1, "conf").encode()))
        reply = self.reply(seq)
        _check(isinstance(reply, Identify), f"HELLO answered {type(reply).__name__}")
        self.seq = (seq + 1) % 256
        assert isinstance(reply, Identify)
        return reply

    def frame(self, msg: Message) -> tuple[int, bytes]:
        seq = self.seq
        self.seq = (seq + 1) % 256
        return seq, encode_frame(msg.TYPE, seq, msg.encode())

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def reply(self, seq: int, timeout: float = REPLY_TIMEOUT) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            for i, (s, msg) in enumerate(self.pending):
                if s == seq:
                    del self.pending[i]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"no reply to SEQ {seq} within {timeout} s")
            data = self.transport.read(min(left, 0.1))
            for event in self.decoder.feed(data):
                if isinstance(event, FrameReceived) and event.frame.type >= 0x80:
                    f = event.frame
                    self.pending.append((f.seq, decode(f.type, f.payload)))


class Suite:
    def __init__(self, client: MeterClient, password: str) -> None:
        self.client = client
        self.password = password
        self.tag = secrets.token_hex(2)
        self.txn = secrets.randbits(30) + 1
        identity = client.identity
        assert identity is not None
        self.identity = identity

    # -- helpers ---------------------------------------------------------------------

    def code(self, name: str) -> str:
        return f"CF-{self.tag}-{name}"

    def resync(self) -> None:
        self.client.session.forget()
        self.identity = self.client.hello()

    def auth(self) -> None:
        self.client.call(Auth(self.password), expect=Ack)

    def create(self, *records: PutRecord) -> Committed:
        self.resync()
        return load_accounts(self.client, records, self.password)

    def entries(self) -> dict[str, AccountEntry]:
        return {e.code: e for e in read_accounts(self.client)}

    # -- checks --------------------------------------------------------------------------

    def framing(self) -> str:
        raw = RawLine(self.client)
        seq, frame = 7, encode_frame(Hello.TYPE, 7, Hello(secrets.randbits(32), 1, "c").encode())
        for i in range(0, len(frame), 3):  # a frame split across several writes
            raw.write(frame[i : i + 3])
            time.sleep(0.001)
        reply = raw.reply(seq)
        _check(isinstance(reply, Identify), f"HELLO answered {type(reply).__name__}")
        return f"IDENTIFY from {getattr(reply, 'serial', '?')} with SEQ {seq}"

    def resync_check(self) -> str:
        raw = RawLine(self.client)
        raw.hello()
        seq, frame = raw.frame(ReadCounters(0, 1))
        damaged = bytearray(frame)
        damaged[-1] ^= 0xFF  # a whole frame with a bad CRC ...
        raw.write(b"\x00garbage\xa5" + bytes(damaged) + b"\xa5\x4d\x01" + frame)
        reply = raw.reply(seq)
        _check(isinstance(reply, CounterPage), f"answered {type(reply).__name__}")
        return "garbage, a bad CRC and a stray marker skipped; the frame after them answered"

    def retransmission(self) -> str:
        code = self.code("R")
        self.create(PutRecord(code, "", f"CF {self.tag} retransmit"))
        number = self.entries()[code].number
        raw = RawLine(self.client)
        raw.hello()
        seq, frame = raw.frame(RunMail(number, "", 1, 500))
        raw.write(frame)
        first = raw.reply(seq)
        raw.write(frame)  # the same SEQ and bytes again: a retransmission
        second = raw.reply(seq)
        _check(isinstance(first, MailDone), f"RUN_MAIL answered {type(first).__name__}")
        _check(first == second, f"different replies: {first} / {second}")
        self.resync()
        counters = read_counters(self.client)[number]
        _check((counters.pieces, counters.postage_mills) == (1, 500),
               f"charged {counters.pieces} runs' worth: applied twice")
        return "same reply twice, charged once"

    def windowing(self) -> str:
        raw = RawLine(self.client)
        identity = raw.hello()
        n = max(1, min(identity.window, 4))
        frames = [raw.frame(ReadAccounts(0, 1)) for _ in range(n)]
        raw.write(b"".join(f for _, f in frames))  # all in flight at once
        replies = [raw.reply(seq) for seq, _ in frames]
        bad = [type(r).__name__ for r in replies if not isinstance(r, Message) or
               type(r).__name__ != "AccountPage"]
        _check(not bad, f"replies {bad}")
        return f"{n} requests in flight (window {identity.window}), all answered"

    def transactions(self) -> str:
        staged, dropped = self.code("T"), self.code("X")
        self.resync()
        self.auth()
        c = self.client
        c.call(Begin(self.txn), expect=Ack)
        c.call(PutAccounts(self.txn, (PutRecord(staged, "", f"CF {self.tag} txn"),)), expect=Ack)
        _check(staged not in self.entries(), "a staged account is visible before COMMIT")
        done = c.call(Commit(self.txn), expect=Committed)
        _check(done.added == 1 and staged in self.entries(), "COMMIT did not apply the PUT")
        c.call(Begin(self.txn + 1), expect=Ack)
        c.call(PutAccounts(self.txn + 1, (PutRecord(dropped, "", f"CF {self.tag} x"),)),
               expect=Ack)
        c.call(Abort(self.txn + 1), expect=Ack)
        _check(dropped not in self.entries(), "ABORT left the staged account")
        try:
            c.call(Commit(self.txn + 1))
        except MeterError as exc:
            _check(exc.code == ErrorCode.NO_TRANSACTION, f"COMMIT after ABORT: {exc.code}")
        else:
            raise CheckFailed("COMMIT after ABORT was accepted")
        return "staged until COMMIT; ABORT dropped the staged list"

    def busy(self) -> str:
        code = self.code("B")
        self.create(PutRecord(code, "", f"CF {self.tag} busy"))
        number = self.entries()[code].number
        raw = RawLine(self.client)
        raw.hello()
        seq, frame = raw.frame(RunMail(number, "", 1, 0, duration_ms=1500))
        raw.write(frame)
        _check(isinstance(raw.reply(seq), MailDone), "RUN_MAIL was not answered")
        seq, frame = raw.frame(ReadCounters(0, 1))
        raw.write(frame)
        reply = raw.reply(seq)
        _check(isinstance(reply, Busy), f"a request during the run answered {type(reply).__name__}")
        assert isinstance(reply, Busy)
        later: Message = reply
        deadline = time.monotonic() + 10.0
        while isinstance(later, Busy) and time.monotonic() < deadline:
            time.sleep(max(later.retry_after_ms, 50) / 1000.0)
            raw.write(frame)  # BUSY is not an answer: the same request again, later
            later = raw.reply(seq)
        _check(isinstance(later, CounterPage), f"after BUSY: {type(later).__name__}")
        return f"BUSY (retry after {reply.retry_after_ms} ms), then answered"

    def errors(self) -> str:
        raw = RawLine(self.client)
        raw.hello()
        cases = [
            ("unknown type", encode_frame(0x7E, raw.seq, b""), ErrorCode.UNKNOWN_MESSAGE),
            ("malformed", encode_frame(ReadCounters.TYPE, raw.seq + 1, b"\x01"),
             ErrorCode.MALFORMED),
            ("no AUTH", encode_frame(Begin.TYPE, raw.seq + 2, Begin(1).encode()),
             ErrorCode.NOT_AUTHENTICATED),
        ]
        got = []
        for i, (what, frame, code) in enumerate(cases):
            raw.write(frame)
            reply = raw.reply((raw.seq + i) % 256)
            _check(isinstance(reply, Error), f"{what}: answered {type(reply).__name__}")
            assert isinstance(reply, Error)
            _check(reply.code == code, f"{what}: ERROR {reply.code}, expected {int(code)}")
            got.append(f"{what}={reply.code}")
        return ", ".join(got)

    def roll_down(self) -> str:
        parent, child = self.code("P"), self.code("C")
        self.create(PutRecord(parent, "", f"CF {self.tag} parent"))
        number = self.entries()[parent].number
        self.client.call(RunMail(number, "", 2, 1460), expect=MailDone)
        before = self.client.hello().chargeable
        self.create(PutRecord(child, parent, "child"))
        entries = self.entries()
        p, k = entries[parent], entries[child]
        _check(k.number == number and (k.pieces, k.postage_mills) == (2, 1460),
               f"the child has number {k.number} and {k.pieces} pieces")
        _check(not p.chargeable and p.number == 0, "the parent is still chargeable")
        _check((p.pieces, p.postage_mills) == (2, 1460), "the parent's subtotal is wrong")
        _check(self.client.hello().chargeable == before, "the chargeable count changed")
        return f"number {number} and its counters moved to the first child"

    def capacity(self) -> str:
        self.resync()
        capacity, chargeable = self.identity.capacity, self.identity.chargeable
        self.auth()
        c = self.client
        txn = self.txn + 7
        c.call(Begin(txn), expect=Ack)
        records = [PutRecord(self.code(f"K{i}"), "", f"CF {self.tag} cap {i}")
                   for i in range(capacity - chargeable + 1)]
        try:
            for start in range(0, len(records), 20):
                c.call(PutAccounts(txn, tuple(records[start : start + 20])), expect=Ack)
        except MeterError as exc:
            _check(exc.code == ErrorCode.CAPACITY, f"refused with {exc.code}, not CAPACITY")
            # the index names the first record over the capacity
            _check(start + exc.index == capacity - chargeable,
                   f"refused record {start + exc.index}")
        else:
            c.call(Abort(txn))
            raise CheckFailed(f"{capacity - chargeable + 1} more accounts accepted")
        self.resync()
        _check(self.identity.chargeable == chargeable, "the refused transaction changed the list")
        return f"account {capacity + 1} refused with CAPACITY ({capacity} max)"


CHECKS: dict[str, Callable[[Suite], str]] = {
    "framing": Suite.framing,
    "resync": Suite.resync_check,
    "retransmission": Suite.retransmission,
    "windowing": Suite.windowing,
    "transactions": Suite.transactions,
    "busy": Suite.busy,
    "errors": Suite.errors,
    "roll-down": Suite.roll_down,
    "capacity": Suite.capacity,
}


def run(
    url: str,
    supervisor_password: str | None = None,
    *,
    force: bool = False,
    baud: int = 115200,
    features: tuple[str, ...] = FEATURES,
    connect: Callable[[str], MeterClient] | None = None,
) -> list[CheckResult]:
    """Run the checks against the meter at ``url``; one ``CheckResult`` per feature.

    Raises ``NotScratch`` if the meter holds accounts (unless ``force``), ``LinkError``
    if it cannot be reached.  The supervisor password defaults to
    ``$METER_SUPERVISOR_PASSWORD``.
    """
    password = supervisor_password
    if password is None:
        password = os.environ.get(PASSWORD_ENV, "")
    open_client = connect or (lambda u: MeterClient.connect(u, baudrate=baud))
    client = open_client(url)
    results: list[CheckResult] = []
    try:
        identity = client.identity
        assert identity is not None
        if identity.accounts and not force:
            raise NotScratch(
                f"the meter {identity.serial} holds {identity.accounts} accounts; the "
                "conformance checks change its list: use an empty or scratch meter, or force"
            )
        suite = Suite(client, password)
        for feature in features:
            try:
                detail = CHECKS[feature](suite)
                results.append(CheckResult(feature, True, detail))
            except (CheckFailed, MeterError, LinkError, ValueError) as exc:
                results.append(CheckResult(feature, False, str(exc) or type(exc).__name__))
            try:
                suite.resync()
            except (MeterError, LinkError) as exc:
                results.append(CheckResult("link", False, f"lost the meter: {exc}"))
                break
    finally:
        client.close()
    return results


# ------------------------------------------------------------------------ the command


def add_parser(sub: Any) -> None:
    """``meter-sync conformance`` (registered through agent.conformance_cmd)."""
    p = sub.add_parser(
        "conformance",
        help="run protocol conformance checks against a meter (CHANGES its list: "
        "use an empty or scratch meter)",
        description="Run the documented protocol checks against any meter and print a "
        "pass/fail table per feature. It CHANGES the meter's list and counters (accounts "
        "named CF-...): it refuses a meter that holds accounts unless --force. "
        "Exit 0 if every check passes, 1 otherwise, 2 if refused.",
    )
    p.add_argument("--port", required=True, metavar="P", help="the meter's port or URL")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--supervisor-password", metavar="PW",
                   help=f"the supervisor password (or env {PASSWORD_ENV})")
    p.add_argument("--force", action="store_true",
                   help="run even if the meter already holds accounts")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console
    from rich.table import Table

    try:
        results = run(args.port, args.supervisor_password, force=args.force, baud=args.baud)
    except NotScratch as exc:
        print(f"meter-sync: conformance: {exc} (--force)", file=sys.stderr)
        return 2
    except (LinkError, MeterError) as exc:
        print(f"meter-sync: conformance: {exc}", file=sys.stderr)
        return 1
    table = Table(title=f"protocol conformance: {args.port}")
    table.add_column("feature")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in results:
        table.add_row(r.feature, "[green]PASS[/]" if r.passed else "[red]FAIL[/]", r.detail)
    Console(width=120).print(table)
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
