"""Test helpers for users of the virtual meter (public).

``InProcessLink`` is a transport (write/read/close) wired straight into a
``Meter``: the full protocol stack — frames, sessions, transition table — runs in
one process with no pty and no thread, so unit tests stay fast and deterministic.

Test meters (docs/TESTING.md; the pytest plugin ``firmware_sim.pytest_plugin``
builds its fixtures from them):

* ``VirtualMeter.start(config)`` — ``meter-sim serve --pty`` in a subprocess;
  ``VirtualMeter.attach(url)`` — a meter that is already running.
* ``InProcessMeter(config)`` — a ``Meter`` behind an ``InProcessLink``.
* Both offer ``.port``, ``.serial``, ``.supervisor_password``, ``.client()``,
  ``.mail(...)``, ``.counters()``, ``.accounts()``, ``.load(accounts)``, ``.stop()``.
* ``MeterStateMachine`` — a hypothesis rule-based state machine that drives a
  meter through the protocol and checks it against a reference model.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from firmware_sim.accounts import AccountBook, Settings, Supervisor
from firmware_sim.meter import Meter
from protocol.client import MeterClient, MeterError, read_all_accounts
from protocol.digest import list_digest
from protocol.errors import ErrorCode
from protocol.frames import MAX_PAYLOAD
from protocol.messages import (
    Abort,
    AccountEntry,
    Ack,
    Auth,
    Begin,
    Commit,
    Committed,
    CounterEntry,
    CounterPage,
    DeleteAccounts,
    MailDone,
    Message,
    PutAccounts,
    PutRecord,
    ReadCounters,
    ResetCounters,
    RunMail,
    SetSettings,
    batch_puts,
)
from protocol.records import AccountRecord


class InProcessLink:
    """A transport whose far end is a ``Meter`` in this process."""

    def __init__(self, meter: Meter, clock: Callable[[], float] = time.monotonic) -> None:
        self.meter = meter
        self.clock = clock
        self._inbox = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._inbox += self.meter.receive(bytes(data), self.clock())

    def read(self, timeout: float) -> bytes:
        if not self._inbox:
            self._inbox += self.meter.line_idle(self.clock())
        if not self._inbox and timeout > 0:
            # Nothing will come until the meter's busy time or a retransmission:
            # let the caller's clock move on.
            time.sleep(min(timeout, 0.01))
            return b""
        data = bytes(self._inbox)
        self._inbox.clear()
        self.bytes_in += len(data)
        return data

    def close(self) -> None:
        self.closed = True


# =====================================================================================
# Meters for tests: a subprocess on a real pty, an in-process one, or an external port.
# =====================================================================================

DEFAULT_CAPACITY = 25
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

AccountLike = AccountRecord | PutRecord


@dataclass(frozen=True)
class MeterConfig:
    """How to build a test meter (the ``@pytest.mark.meter(...)`` keywords).

    ``baud``, ``latency_ms``, ``fault`` and ``seed`` shape the line of a subprocess
    meter (``meter-sim serve`` options); an in-process meter has no line and ignores
    them.  ``accounts`` is the initial list, loaded through the protocol (AUTH,
    BEGIN, PUT_ACCOUNTS, COMMIT) before the test starts.  ``supervisor_password``
    defaults to a fresh random one (read it back from the meter object).
    """

    capacity: int = DEFAULT_CAPACITY
    baud: int | None = None
    latency_ms: int = 0
    fault: str | None = None
    seed: int = 0
    accounts: tuple[AccountLike, ...] = ()
    supervisor_password: str | None = None
    serial: str | None = None

    @classmethod
    def from_kwargs(cls, **kw: Any) -> MeterConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kw) - known)
        if unknown:
            raise TypeError(f"unknown meter option(s): {', '.join(unknown)}")
        if "accounts" in kw:
            kw["accounts"] = tuple(kw["accounts"])
        return cls(**kw)

    def with_password(self) -> MeterConfig:
        if self.supervisor_password:
            return self
        return replace_config(self, supervisor_password="sv-" + secrets.token_hex(6))


def replace_config(config: MeterConfig, **changes: Any) -> MeterConfig:
    return dataclasses.replace(config, **changes)


def random_serial() -> str:
    """A serial number like meter-sim's (``VM`` + 7 digits), random."""
    return f"VM{secrets.randbelow(10**7):07d}"


def as_put_record(account: AccountLike) -> PutRecord:
    """An ``AccountRecord`` (or a ``PutRecord``) as the PUT_ACCOUNTS record that creates it."""
    if isinstance(account, PutRecord):
        return account
    return PutRecord(
        code=account.code,
        parent_code=account.parent_code,
        name=account.name,
        active=account.active,
        password_enabled=account.password_enabled,
        password=account.password or None,
        number=account.number,
    )


put_batches = batch_puts  # one batcher: protocol.messages.batch_puts


def load_accounts(
    client: MeterClient, accounts: Iterable[AccountLike], supervisor_password: str = ""
) -> Committed:
    """Create or update ``accounts`` on the meter in one list transaction.

    Parents must come before their children.  Raises ``MeterError`` if the meter
    refuses a record (the transaction is then dropped: nothing changes).
    """
    records = [as_put_record(a) for a in accounts]
    client.call(Auth(supervisor_password), expect=Ack)
    txn = secrets.randbits(31) + 1
    client.call(Begin(txn), expect=Ack)
    max_payload = client.identity.max_payload if client.identity else MAX_PAYLOAD
    for msg in put_batches(txn, records, max_payload):
        client.call(msg, expect=Ack)
    return client.call(Commit(txn), expect=Committed)


read_accounts = read_all_accounts  # one pipelined reader: protocol.client


def read_counters(client: MeterClient) -> dict[int, CounterEntry]:
    """The counters of every chargeable account, by account number."""
    out: dict[int, CounterEntry] = {}
    while True:
        page = client.call(ReadCounters(len(out)), expect=CounterPage)
        out.update({e.number: e for e in page.entries})
        if len(out) >= page.total or not page.entries:
            return out


class TestMeter:
    """What every test meter offers (subprocess, in-process, or an external port).

    ``client()`` is the meter's own connection (opened on first use, HELLO done,
    closed by ``stop()``).  ``mail``/``counters``/``accounts``/``load`` use it when
    it is open, or a short-lived connection otherwise, so that another program
    (``meter-sync``, ``meter-sim mail``) can open the port between helper calls.
    """

    __test__ = False  # not a pytest test class

    serial: str
    supervisor_password: str
    port: str | None

    def __init__(self) -> None:
        self._client: MeterClient | None = None

    # -- connections ---------------------------------------------------------------

    def _connect(self) -> MeterClient:
        raise NotImplementedError

    def client(self) -> MeterClient:
        """The meter's shared connection (after HELLO); closed at teardown."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def disconnect(self) -> None:
        """Close the shared connection (frees the port for another program)."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _call(self, fn: Callable[[MeterClient], Any]) -> Any:
        if self._client is not None:
            return fn(self._client)
        with self._connect() as client:
            return fn(client)

    # -- helpers (all through the protocol) ------------------------------------------

    def mail(
        self,
        account: int,
        postage_mills: int = 0,
        pieces: int = 1,
        password: str = "",
        duration_ms: int = 0,
    ) -> MailDone:
        """Run mail on account number ``account`` (RUN_MAIL); returns its new totals.

        ``postage_mills`` is the postage *per piece* in mills (tenths of a cent), as
        ``meter-sim mail --postage``: the run charges ``pieces * postage_mills``.
        """
        msg = RunMail(account, password, pieces, pieces * postage_mills, duration_ms)
        result: MailDone = self._call(lambda c: c.call(msg, expect=MailDone))
        return result

    def counters(self) -> dict[int, CounterEntry]:
        """Counters of every chargeable account, by number (READ_COUNTERS)."""
        result: dict[int, CounterEntry] = self._call(read_counters)
        return result

    def accounts(self) -> list[AccountEntry]:
        """The meter's list (READ_ACCOUNTS, without passwords)."""
        result: list[AccountEntry] = self._call(lambda c: (c.hello(), read_accounts(c))[1])
        return result

    def load(self, accounts: Iterable[AccountLike]) -> Committed:
        """Create or update accounts in one transaction (with the supervisor password)."""
        items = list(accounts)

        def run(c: MeterClient) -> Committed:
            try:
                return load_accounts(c, items, self.supervisor_password)
            finally:
                c.hello()  # back to READY: leave no supervisor session behind

        result: Committed = self._call(run)
        return result

    def stop(self) -> None:
        self.disconnect()

    def __enter__(self) -> TestMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InProcessMeter(TestMeter):
    """A ``Meter`` in this process behind an ``InProcessLink``: no pty, no thread."""

    port = None

    def __init__(self, config: MeterConfig | None = None) -> None:
        super().__init__()
        config = (config or MeterConfig()).with_password()
        assert config.supervisor_password is not None
        self.config = config
        self.serial = config.serial or random_serial()
        self.supervisor_password = config.supervisor_password
        sup = Supervisor(n=2, r=1, p=1)  # fast: tests, not security
        sup.set_password(config.supervisor_password)
        self.meter = Meter(
            serial=self.serial,
            book=AccountBook(Settings(capacity=config.capacity)),
            supervisor=sup,
        )
        if config.accounts:
            self.load(config.accounts)

    def _connect(self) -> MeterClient:
        client = MeterClient(InProcessLink(self.meter))
        client.hello()
        return client


class MeterStartError(RuntimeError):
    """``meter-sim serve`` did not come up."""


def serve_command(config: MeterConfig, state: Path, trace: Path | None = None) -> list[str]:
    """The ``meter-sim serve --pty`` command line for ``config`` (no password in it)."""
    cmd = [
        sys.executable,
        "-m",
        "firmware_sim.cli",
        "serve",
        "--pty",
        "--state",
        str(state),
        "--capacity",
        str(config.capacity),
    ]
    if config.serial:
        cmd += ["--serial", config.serial]
    if config.baud:
        cmd += ["--baud", str(config.baud)]
    if config.latency_ms:
        cmd += ["--latency-ms", str(config.latency_ms)]
    if config.fault:
        cmd += ["--fault", config.fault, "--seed", str(config.seed)]
    if trace is not None:
        cmd += ["--trace", str(trace)]
    return cmd


class VirtualMeter(TestMeter):
    """``meter-sim serve --pty`` in a subprocess, or (``attach``) a meter already running.

    ``start`` waits for the ``listening on /dev/pts/N`` line; ``stop`` closes the
    shared connection, sends SIGTERM, waits (SIGKILL after ``STOP_TIMEOUT``) and
    removes the scratch directory.  The supervisor password reaches the subprocess
    through ``METER_SUPERVISOR_PASSWORD``, never its command line.
    """

    def __init__(
        self,
        port: str,
        supervisor_password: str,
        serial: str = "",
        proc: subprocess.Popen[bytes] | None = None,
        workdir: Path | None = None,
        trace: Path | None = None,
        owns_workdir: bool = False,
        baud: int = 115200,
    ) -> None:
        super().__init__()
        self.port = port
        self.supervisor_password = supervisor_password
        self.serial = serial
        self.proc = proc
        self.workdir = workdir
        self.trace = trace
        self.baud = baud
        self._owns_workdir = owns_workdir

    @classmethod
    def start(
        cls,
        config: MeterConfig | None = None,
        workdir: Path | None = None,
        trace: Path | None = None,
    ) -> VirtualMeter:
        """Spawn a fresh meter; ``workdir`` holds its NVM (a temporary dir if None)."""
        config = (config or MeterConfig()).with_password()
        assert config.supervisor_password is not None
        if not config.serial:  # distinct meters get distinct serials
            config = replace_config(config, serial=random_serial())
        assert config.supervisor_password is not None
        owns = workdir is None
        work = Path(tempfile.mkdtemp(prefix="meterlink-")) if workdir is None else workdir
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "METER_SUPERVISOR_PASSWORD": config.supervisor_password}
        stderr_path = work / "meter-sim.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                serve_command(config, work / "meter.nvm", trace),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        meter = cls(
            "",
            config.supervisor_password,
            proc=proc,
            workdir=work,
            trace=trace,
            owns_workdir=owns,
            baud=config.baud or 115200,
        )
        try:
            meter.port = meter._wait_listening(stderr_path)
            client = meter.client()
            assert client.identity is not None
            meter.serial = client.identity.serial
            if config.accounts:
                meter.load(config.accounts)
            meter.disconnect()
        except BaseException:
            meter.stop()
            raise
        return meter

    @classmethod
    def attach(cls, port: str, supervisor_password: str = "", baud: int = 115200) -> VirtualMeter:
        """A meter that is already running (``--meter-port``): never started or stopped."""
        meter = cls(port, supervisor_password, baud=baud)
        with meter._connect() as client:
            assert client.identity is not None
            meter.serial = client.identity.serial
        return meter

    def _wait_listening(self, stderr_path: Path) -> str:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline().decode("utf-8", "replace") if ready else ""
        if not line.startswith("listening on "):
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            err = stderr_path.read_text(errors="replace")[-2000:]
            raise MeterStartError(f"meter-sim serve did not start: {line!r}; stderr: {err}")
        return line.split(" ", 2)[2].strip()

    def _connect(self) -> MeterClient:
        return MeterClient.connect(self.port or "", baudrate=self.baud, open_timeout=5.0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:  # type: ignore[override]
        """Stop the subprocess (SIGTERM, wait); returns its exit code (None: attached)."""
        try:
            self.disconnect()
        finally:
            code = self._stop_process()
        return code

    def _stop_process(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(STOP_TIMEOUT)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._owns_workdir and self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return code


@dataclass
class MeterPool:
    """Starts meters and stops every one of them (what ``meter_factory`` uses)."""

    base: MeterConfig = field(default_factory=MeterConfig)
    workdir: Path | None = None
    trace_dir: Path | None = None
    trace_stem: str = "meter"
    external_port: str | None = None
    external_password: str = ""
    meters: list[TestMeter] = field(default_factory=list)

    def new(self, **overrides: Any) -> TestMeter:
        config = replace_config(self.base, **overrides) if overrides else self.base
        if self.external_port is not None:
            meter: TestMeter = VirtualMeter.attach(
                self.external_port, config.supervisor_password or self.external_password
            )
            self.meters.append(meter)
            if config.accounts:
                meter.load(config.accounts)
            return meter
        index = len(self.meters) + 1
        trace = None
        if self.trace_dir is not None:
            suffix = "" if index == 1 else f"-{index}"
            trace = self.trace_dir / f"{self.trace_stem}{suffix}.trace"
        work = self.workdir / f"meter-{index}" if self.workdir is not None else None
        meter = VirtualMeter.start(config, work, trace)
        self.meters.append(meter)
        return meter

    def in_process(self, **overrides: Any) -> InProcessMeter:
        config = replace_config(self.base, **overrides) if overrides else self.base
        meter = InProcessMeter(config)
        self.meters.append(meter)
        return meter

    def traces(self) -> list[Path]:
        return [m.trace for m in self.meters if isinstance(m, VirtualMeter) and m.trace]

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        while self.meters:
            try:
                self.meters.pop().stop()
            except BaseException as exc:  # stop the others first
                errors.append(exc)
        if errors:
            raise errors[0]


# =====================================================================================
# A reference model and a rule-based state machine (hypothesis) over the protocol.
# =====================================================================================


class ModelRefusal(Exception):
    """The model predicts a refusal: the meter must answer one of ``codes``."""

    def __init__(self, codes: set[ErrorCode], index: int = 0xFFFF) -> None:
        super().__init__(", ".join(sorted(c.name for c in codes)))
        self.codes = frozenset(codes)
        self.index = index


@dataclass
class ModelAccount:
    code: str
    parent: str
    name: str
    active: bool = True
    password_enabled: bool = False
    password: str = field(default="", repr=False)
    number: int | None = 0  # None: assigned by the meter, learned after COMMIT
    pieces: int = 0
    postage_mills: int = 0
    ever_charged: bool = False
    password_known: bool = True  # False: a dormant password the model never saw


class ReferenceModel:
    """An independent model of one meter's list and counters (the rules of
    docs/PROTOCOL.md), kept next to the meter by ``MeterStateMachine``.

    It predicts *whether* a request is refused and the set of acceptable error codes
    (several rules may be broken at once); it does not assign account numbers — it
    checks the meter's (a roll-down keeps the parent's number, numbers are unique)
    and learns them after each COMMIT.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.accounts: dict[str, ModelAccount] = {}

    def copy(self) -> ReferenceModel:
        other = ReferenceModel(self.capacity)
        other.accounts = {c: dataclasses.replace(a) for c, a in self.accounts.items()}
        return other

    @classmethod
    def from_entries(cls, entries: Sequence[AccountEntry], capacity: int) -> ReferenceModel:
        model = cls(capacity)
        for e in entries:
            model.accounts[e.code] = ModelAccount(
                e.code,
                e.parent_code,
                e.name,
                e.active,
                e.password_enabled,
                e.password,
                e.number if e.chargeable else 0,
                e.pieces if e.chargeable else 0,
                e.postage_mills if e.chargeable else 0,
                e.ever_charged and e.chargeable,
                password_known=e.chargeable,
            )
        return model

    # -- queries ---------------------------------------------------------------------

    def children(self, code: str) -> list[str]:
        return [a.code for a in self.accounts.values() if a.parent == code]

    def is_leaf(self, code: str) -> bool:
        return not self.children(code)

    def depth(self, code: str) -> int:
        depth, acc = 0, self.accounts.get(code)
        while acc is not None:
            depth += 1
            acc = self.accounts.get(acc.parent)
        return depth

    def chargeable(self) -> list[ModelAccount]:
        return [a for a in self.accounts.values() if self.is_leaf(a.code)]

    def by_number(self, number: int) -> ModelAccount | None:
        for a in self.chargeable():
            if a.number == number and number:
                return a
        return None

    def usable(self, code: str) -> bool:
        acc = self.accounts.get(code)
        while acc is not None:
            if not acc.active:
                return False
            acc = self.accounts.get(acc.parent)
        return True

    def records(self) -> list[AccountRecord]:
        return [
            AccountRecord(a.code, a.parent, a.name, a.active, a.password_enabled, a.password)
            for a in self.accounts.values()
        ]

    def digest(self) -> bytes:
        return list_digest(self.records())

    def totals(self) -> tuple[int, int]:
        leaves = self.chargeable()
        return sum(a.pieces for a in leaves), sum(a.postage_mills for a in leaves)

    # -- changes (raise ModelRefusal and change nothing, or apply) --------------------

    def put(self, rec: PutRecord) -> None:
        bad: set[ErrorCode] = set()
        if rec.password and not PASSWORD_MIN <= len(rec.password) <= PASSWORD_MAX:
            bad.add(ErrorCode.BAD_PASSWORD_FORMAT)
        old = self.accounts.get(rec.code)
        if old is not None:
            if rec.parent_code != old.parent:
                bad.add(ErrorCode.MOVE_NOT_SUPPORTED)
            bad |= self._name_problems(rec.name, rec.parent_code, rec.code)
            base_password = old.password
            roll_down = False
        else:
            parent = self.accounts.get(rec.parent_code) if rec.parent_code else None
            if rec.parent_code and parent is None:
                raise ModelRefusal(bad | {ErrorCode.UNKNOWN_PARENT})
            if self.depth(rec.parent_code) + 1 > MODEL_MAX_DEPTH:
                raise ModelRefusal(bad | {ErrorCode.TOO_DEEP})
            bad |= self._name_problems(rec.name, rec.parent_code, None)
            roll_down = parent is not None and self.is_leaf(parent.code)
            if not roll_down and len(self.chargeable()) >= self.capacity:
                bad.add(ErrorCode.CAPACITY)
            if roll_down:
                assert parent is not None
                base_password = parent.password
            else:
                base_password = ""
        enabled = rec.password_enabled
        password = base_password if rec.password is None else rec.password
        if enabled and len(password) < PASSWORD_MIN:
            bad.add(ErrorCode.BAD_PASSWORD_FORMAT)
        if bad:
            raise ModelRefusal(bad)
        if old is not None:
            old.name, old.active = rec.name, rec.active
            old.password_enabled, old.password = enabled, password
            return
        acc = ModelAccount(
            rec.code, rec.parent_code, rec.name, rec.active, enabled, password, number=None
        )
        if roll_down:
            parent = self.accounts[rec.parent_code]
            acc.number, acc.pieces, acc.postage_mills = (
                parent.number,
                parent.pieces,
                parent.postage_mills,
            )
            acc.ever_charged = parent.ever_charged
            parent.number, parent.pieces, parent.postage_mills = 0, 0, 0
            parent.ever_charged = False
        self.accounts[rec.code] = acc

    def _name_problems(self, name: str, parent: str, own: str | None) -> set[ErrorCode]:
        if not name.strip():
            return {ErrorCode.INVALID_FIELD}
        limit = 32 if not parent else 16
        bad = {ErrorCode.NAME_TOO_LONG} if len(name) > limit else set()
        if any(
            a.name == name and a.code != own for a in self.accounts.values() if a.parent == parent
        ):
            bad.add(ErrorCode.DUPLICATE_NAME)
        return bad

    def delete(self, code: str) -> None:
        acc = self.accounts.get(code)
        if acc is None:
            raise ModelRefusal({ErrorCode.UNKNOWN_ACCOUNT})
        if not self.is_leaf(code):
            raise ModelRefusal({ErrorCode.HAS_CHILDREN})
        if acc.ever_charged:
            raise ModelRefusal({ErrorCode.HAS_HISTORY})
        del self.accounts[code]
        if acc.parent and self.is_leaf(acc.parent):
            parent = self.accounts[acc.parent]
            parent.number, parent.pieces, parent.postage_mills = None, 0, 0
            parent.ever_charged = False

    def mail(self, number: int, password: str, pieces: int, postage_mills: int) -> ModelAccount:
        acc = self.by_number(number)
        if acc is None:
            raise ModelRefusal({ErrorCode.UNKNOWN_ACCOUNT})
        if not self.usable(acc.code):
            raise ModelRefusal({ErrorCode.INACTIVE})
        if acc.password_enabled and password != acc.password:
            raise ModelRefusal({ErrorCode.BAD_ACCOUNT_PASSWORD})
        acc.pieces += pieces
        acc.postage_mills += postage_mills
        acc.ever_charged = True
        return acc

    def reset(self, number: int, individual_enabled: bool) -> None:
        acc = self.by_number(number)
        if acc is None:
            raise ModelRefusal({ErrorCode.UNKNOWN_ACCOUNT})
        if not individual_enabled:
            raise ModelRefusal({ErrorCode.RESET_DISABLED})
        acc.pieces = acc.postage_mills = 0

    def reset_all(self) -> int:
        leaves = self.chargeable()
        for a in leaves:
            a.pieces = a.postage_mills = 0
        return len(leaves)


MODEL_MAX_DEPTH = 3
PASSWORD_MIN, PASSWORD_MAX = 4, 32
MODEL_CODES = ("A", "B", "C", "D", "E", "F", "G", "H", "I")
MODEL_NAMES = ("North", "South", "East", "West", "Mail Room", "A" * 17, "B" * 33, " ")
MODEL_PASSWORDS = (None, "", "pw1", "Pass1", "Other22")
WRONG_PASSWORD = "not-it"  # noqa: S105 - a deliberately wrong account password


def _make_put_records() -> Any:
    from hypothesis import strategies as st

    return st.builds(
        PutRecord,
        code=st.sampled_from(MODEL_CODES),
        parent_code=st.just("") | st.sampled_from(MODEL_CODES[:6]),
        name=st.sampled_from(MODEL_NAMES[:5]) | st.sampled_from(MODEL_NAMES),
        active=st.booleans(),
        password_enabled=st.booleans(),
        password=st.sampled_from(MODEL_PASSWORDS),
    )


try:
    from hypothesis import strategies as _st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        initialize,
        invariant,
        precondition,
        rule,
    )
except ImportError:  # pragma: no cover - hypothesis is in meterlink[test]
    _HAVE_HYPOTHESIS = False
else:
    _HAVE_HYPOTHESIS = True

if _HAVE_HYPOTHESIS:

    class MeterStateMachine(RuleBasedStateMachine):
        """Drive a meter through the protocol; check it against ``ReferenceModel``.

        Rules: BEGIN, PUT_ACCOUNTS batches (valid or not), DELETE_ACCOUNTS, COMMIT
        (right or wrong digest), ABORT, mail runs (right or wrong password, during a
        transaction), single and full resets, the reset-individual setting, and a
        reconnect (HELLO, checked against IDENTIFY).  After every step the
        invariants compare the meter's list (READ_ACCOUNTS) with the model: the same
        accounts and digest, parent totals equal to the sum of their children, no
        piece or mill lost, chargeable count within capacity.

        In process by default (a fresh meter per example).  ``bind(url=...)`` (or
        the pytest fixture ``meter_state_machine`` with ``--meter-port``) runs it
        against a real meter instead: it then starts from that meter's list and
        CHANGES it (use a scratch meter).  Subclass it to add rules: ``self.client``
        is the ``MeterClient``, ``self.model`` the live ``ReferenceModel``,
        ``self.staged`` the staged one while a transaction is open, and
        ``self.expect(model_fn, request)`` sends a request and checks it against
        what the model predicts.
        """

        capacity: ClassVar[int] = 25
        meter_url: ClassVar[str | None] = None
        supervisor_password: ClassVar[str | None] = "Sup3r-pw"  # noqa: S105 - in-process test meter
        connect: ClassVar[Callable[[str], MeterClient] | None] = None

        def __init__(self) -> None:
            super().__init__()
            self._meter: InProcessMeter | None = None
            self.client = self.open_client()
            self.client.call(Auth(self.supervisor_password or ""), expect=Ack)
            identity = self.client.identity
            assert identity is not None
            self.capacity_seen = identity.capacity
            self.model = ReferenceModel.from_entries(read_accounts(self.client), identity.capacity)
            self.client.call(SetSettings(reset_individual=False), expect=Ack)
            self.reset_individual = False
            self.staged: ReferenceModel | None = None
            self.txn = 0
            self.expected_totals = self.model.totals()

        @classmethod
        def bind(
            cls,
            url: str | None = None,
            supervisor_password: str | None = None,
            connect: Callable[[str], MeterClient] | None = None,
        ) -> type[MeterStateMachine]:
            """This machine against the meter at ``url`` (a subclass; the class is unchanged)."""
            attrs: dict[str, Any] = {"meter_url": url}
            if supervisor_password is not None:
                attrs["supervisor_password"] = supervisor_password
            if connect is not None:
                attrs["connect"] = staticmethod(connect)
            return type(f"{cls.__name__}At", (cls,), attrs)

        def open_client(self) -> MeterClient:
            """The connection for one example: in process unless ``meter_url`` is set."""
            if self.meter_url is not None:
                connect = type(self).connect or MeterClient.connect
                return connect(self.meter_url)
            self._meter = InProcessMeter(
                MeterConfig(capacity=self.capacity, supervisor_password=self.supervisor_password)
            )
            return self._meter.client()

        def teardown(self) -> None:
            try:
                self.client.close()
            finally:
                if self._meter is not None:
                    self._meter.stop()

        # -- sending requests against the model ---------------------------------------

        def expect(self, predict: Callable[[], Any], request: Message) -> Message | None:
            """Run ``predict`` (a model change); send ``request``; both must agree.

            A ``ModelRefusal`` means the meter must answer ERROR with one of its
            codes (and then the model is unchanged; an open transaction is dropped,
            as the meter drops it).  Returns the reply, or None after a refusal.
            """
            try:
                predict()
            except ModelRefusal as refusal:
                try:
                    answer: Message = self.client.call(request)
                except MeterError as exc:
                    assert exc.code in refusal.codes, (
                        f"{type(request).__name__}: meter refused with {exc.code}, "
                        f"model expected {refusal}"
                    )
                    if refusal.index != 0xFFFF:
                        assert exc.index == refusal.index, (exc.index, refusal.index)
                    self._drop_transaction()
                    return None
                raise AssertionError(
                    f"{type(request).__name__}: meter answered {type(answer).__name__}, "
                    f"model expected a refusal ({refusal})"
                ) from None
            try:
                return self.client.call(request)
            except MeterError as exc:
                raise AssertionError(
                    f"{type(request).__name__}: meter refused ({exc.code}), model accepted"
                ) from None

        def _drop_transaction(self) -> None:
            self.staged = None
            self.txn = 0

        # -- rules ----------------------------------------------------------------------

        @precondition(lambda self: self.staged is None)
        @rule()
        def begin(self) -> None:
            self.txn += 1
            self.client.call(Begin(self.txn), expect=Ack)
            self.staged = self.model.copy()

        @precondition(lambda self: self.staged is not None)
        @rule(records=_st.lists(_make_put_records(), min_size=1, max_size=4))
        def put_batch(self, records: list[PutRecord]) -> None:
            assert self.staged is not None
            trial = self.staged.copy()

            def predict() -> None:
                for index, rec in enumerate(records):
                    try:
                        trial.put(rec)
                    except ModelRefusal as refusal:
                        raise ModelRefusal(set(refusal.codes), index) from None

            reply = self.expect(predict, PutAccounts(self.txn, tuple(records)))
            if reply is not None:
                assert reply == Ack(len(records))
                self.staged = trial

        @precondition(lambda self: self.staged is not None)
        @rule(data=_st.data())
        def put_valid(self, data: Any) -> None:
            """One record the model accepts (so that lists grow and mail can run)."""
            assert self.staged is not None
            staged = self.staged
            free = [c for c in MODEL_CODES if c not in staged.accounts]
            if not free:
                return
            parents = [""] + [c for c in staged.accounts if staged.depth(c) < MODEL_MAX_DEPTH]
            parent = data.draw(_st.sampled_from(parents), label="parent")
            taken = {a.name for a in staged.accounts.values() if a.parent == parent}
            names = [n for n in MODEL_NAMES[:5] if n not in taken]
            if not names:
                return
            enabled = data.draw(_st.booleans(), label="password_enabled")
            rec = PutRecord(
                code=data.draw(_st.sampled_from(free), label="code"),
                parent_code=parent,
                name=data.draw(_st.sampled_from(names), label="name"),
                active=data.draw(_st.sampled_from((True, True, True, False)), label="active"),
                password_enabled=enabled,
                password="Pass1" if enabled else None,
            )
            trial = staged.copy()
            reply = self.expect(lambda: trial.put(rec), PutAccounts(self.txn, (rec,)))
            if reply is not None:
                self.staged = trial

        @initialize(size=_st.integers(0, 6), data=_st.data())
        def starting_list(self, size: int, data: Any) -> None:
            """Start from a small valid list (BEGIN, valid PUTs, COMMIT)."""
            if not size:
                return
            self.begin()
            for _ in range(size):
                self.put_valid(data)
            self.commit(right_digest=True)

        @precondition(lambda self: self.staged is not None)
        @rule(codes=_st.lists(_st.sampled_from(MODEL_CODES), min_size=1, max_size=2))
        def delete(self, codes: list[str]) -> None:
            assert self.staged is not None
            trial = self.staged.copy()

            def predict() -> None:
                for index, code in enumerate(codes):
                    try:
                        trial.delete(code)
                    except ModelRefusal as refusal:
                        raise ModelRefusal(set(refusal.codes), index) from None

            reply = self.expect(predict, DeleteAccounts(self.txn, tuple(codes)))
            if reply is not None:
                assert reply == Ack(len(codes))
                self.staged = trial

        @precondition(lambda self: self.staged is not None)
        @rule(right_digest=_st.booleans())
        def commit(self, right_digest: bool) -> None:
            assert self.staged is not None
            staged = self.staged
            # a wrong digest (all zeros would mean "no check")
            digest = staged.digest() if right_digest else b"\x01" * 16
            if not right_digest:

                def refuse() -> None:
                    raise ModelRefusal({ErrorCode.DIGEST_MISMATCH})

                self.expect(refuse, Commit(self.txn, digest))
                return
            reply = self.client.call(Commit(self.txn, digest), expect=Committed)
            assert reply.digest == staged.digest()
            assert reply.chargeable == len(staged.chargeable())
            self._drop_transaction()
            self.model = staged
            self._learn_numbers()

        @precondition(lambda self: self.staged is not None)
        @rule()
        def abort(self) -> None:
            self.client.call(Abort(self.txn), expect=Ack)
            self._drop_transaction()

        @precondition(lambda self: bool(self.model.chargeable()))
        @rule(
            pick=_st.integers(0, 30),
            right_password=_st.sampled_from((True, True, False)),
            pieces=_st.integers(1, 500),
            postage_mills=_st.integers(0, 5000),
        )
        def mail(self, pick: int, right_password: bool, pieces: int, postage_mills: int) -> None:
            leaves = [a for a in self.model.chargeable() if a.number]
            number = leaves[pick % len(leaves)].number or 0 if leaves and pick < 25 else pick + 1000
            acc = self.model.by_number(number)
            password = acc.password if acc is not None and right_password else WRONG_PASSWORD
            trial = self.model.copy()

            def predict() -> None:
                if self.staged is not None:
                    raise ModelRefusal({ErrorCode.SETUP_IN_PROGRESS})
                trial.mail(number, password, pieces, postage_mills)

            reply = self.expect(predict, RunMail(number, password, pieces, postage_mills))
            if reply is not None:
                assert isinstance(reply, MailDone)
                self.model = trial
                done = trial.by_number(number)
                assert done is not None
                assert (reply.pieces, reply.postage_mills) == (done.pieces, done.postage_mills)
                p, m = self.expected_totals
                self.expected_totals = (p + pieces, m + postage_mills)

        @precondition(lambda self: self.staged is None)
        @rule()
        def reset_all(self) -> None:
            count = self.model.reset_all()
            reply = self.client.call(ResetCounters(0), expect=Ack)
            assert reply.value == count
            self.expected_totals = (0, 0)

        @precondition(lambda self: self.staged is None and bool(self.model.chargeable()))
        @rule(pick=_st.integers(0, 30))
        def reset_one(self, pick: int) -> None:
            leaves = [a for a in self.model.chargeable() if a.number]
            number = (leaves[pick % len(leaves)].number or 0) if leaves and pick < 25 else 999
            acc = self.model.by_number(number)
            cleared = (acc.pieces, acc.postage_mills) if acc is not None else (0, 0)
            trial = self.model.copy()
            reply = self.expect(
                lambda: trial.reset(number, self.reset_individual), ResetCounters(number)
            )
            if reply is not None:
                self.model = trial
                p, m = self.expected_totals
                self.expected_totals = (p - cleared[0], m - cleared[1])

        @precondition(lambda self: self.staged is None)
        @rule(enabled=_st.booleans())
        def set_reset_individual(self, enabled: bool) -> None:
            self.client.call(SetSettings(reset_individual=enabled), expect=Ack)
            self.reset_individual = enabled

        @rule()
        def reconnect(self) -> None:
            identity = self.client.hello()  # a new session: any transaction is dropped
            self._drop_transaction()
            assert identity.digest == self.model.digest()
            assert identity.accounts == len(self.model.accounts)
            assert identity.chargeable == len(self.model.chargeable())
            assert not identity.authenticated and not identity.transaction_open
            self.client.call(Auth(self.supervisor_password or ""), expect=Ack)

        # -- invariants -----------------------------------------------------------------

        def _learn_numbers(self) -> None:
            entries = {e.code: e for e in read_accounts(self.client)}
            for acc in self.model.accounts.values():
                entry = entries[acc.code]
                if acc.number is None:
                    assert entry.chargeable and entry.number > 0, entry
                    acc.number = entry.number
                if not acc.password_known and entry.chargeable:
                    acc.password_enabled, acc.password = entry.password_enabled, entry.password
                    acc.password_known = True
            numbers = [a.number for a in self.model.chargeable()]
            assert len(set(numbers)) == len(numbers), "two accounts share a number"

        @invariant()
        def meter_matches_model(self) -> None:
            entries = read_accounts(self.client)
            model = self.model
            assert [e.code for e in entries] == [
                e.code for e in entries if e.code in model.accounts
            ], "an account the model lacks"
            assert {e.code for e in entries} == set(model.accounts)
            for e in entries:
                acc = model.accounts[e.code]
                leaf = model.is_leaf(e.code)
                assert (e.parent_code, e.name, e.active, e.chargeable) == (
                    acc.parent,
                    acc.name,
                    acc.active,
                    leaf,
                ), e.code
                if leaf:
                    assert e.number == acc.number, (e.code, e.number, acc.number)
                    assert (e.pieces, e.postage_mills) == (acc.pieces, acc.postage_mills), e.code
                    assert e.password_enabled == acc.password_enabled, e.code
                    if acc.password_enabled:
                        assert e.password == acc.password, f"{e.code}: password differs"
            records = [
                AccountRecord(
                    e.code, e.parent_code, e.name, e.active, e.password_enabled, e.password
                )
                for e in entries
            ]
            assert list_digest(records) == model.digest()

        @invariant()
        def parent_totals_are_the_sum_of_children(self) -> None:
            entries = read_accounts(self.client)
            kids: dict[str, list[AccountEntry]] = {}
            for e in entries:
                kids.setdefault(e.parent_code, []).append(e)
            for e in entries:
                if e.code in kids:
                    below = kids[e.code]
                    assert e.pieces == sum(k.pieces for k in below), e.code
                    assert e.postage_mills == sum(k.postage_mills for k in below), e.code

        @invariant()
        def no_piece_or_mill_lost(self) -> None:
            counters = read_counters(self.client)
            pieces = sum(c.pieces for c in counters.values())
            mills = sum(c.postage_mills for c in counters.values())
            assert (pieces, mills) == self.expected_totals

        @invariant()
        def chargeable_within_capacity(self) -> None:
            assert len(read_counters(self.client)) <= self.capacity_seen


__all__ = [
    "InProcessLink",
    "InProcessMeter",
    "MeterConfig",
    "MeterPool",
    "MeterStartError",
    "MeterStateMachine",
    "ModelRefusal",
    "ReferenceModel",
    "TestMeter",
    "VirtualMeter",
    "as_put_record",
    "load_accounts",
    "put_batches",
    "read_accounts",
    "read_counters",
    "serve_command",
]
