"""The sync engine: plan, push and verify the shared list on one meter or a fleet.

One meter, step by step (docs/PROTOCOL.md has the messages):

1. HELLO.  If the meter's digest equals the digest of the list it must hold
   (the projected shared list plus its retained history, known from the snapshot
   the agent saved after the last sync), the meter is in sync: one exchange.
2. AUTH with the supervisor password.
3. The meter's list: from the snapshot when the meter's digest proves it is still
   exact, otherwise read (READ_ACCOUNTS pages, pipelined).
4. ``agent.plan.make_plan``; capacity is checked here, before anything is sent.
5. BEGIN, then DELETE and PUT batches filling the frame (``max_payload``) with
   the window full, then COMMIT carrying the expected digest: the meter refuses
   a commit whose staged list differs, and until COMMIT it keeps its old list.
6. COMMITTED's digest must equal the plan's target digest; the store records the
   meter as attached and in sync, with the time, the digest and the new snapshot.

Anything that fails before COMMIT leaves the meter on its old list; a failure
after it leaves the new list (the commit is atomic and durable on the meter).
Either way the next ``sync`` finishes the job.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

from agent.inventory import InventoryError, MeterTarget, load_inventory
from agent.plan import Projection, SyncPlan, entry_record, make_plan, project
from agent.store import SharedList
from protocol.client import MeterClient, MeterError, read_all_accounts
from protocol.link import LinkError
from protocol.messages import (
    Ack,
    Auth,
    Begin,
    Commit,
    Committed,
    DeleteAccounts,
    Message,
    PutAccounts,
    batch_deletes,
    batch_puts,
)
from protocol.records import AccountRecord

EXIT_IN_SYNC, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3


class Refused(Exception):
    """The plan cannot be carried out (over capacity): nothing was sent."""


# ---------------------------------------------------------------- progress


class Progress(Protocol):
    def begin(self, label: str, accounts: int, nbytes: int) -> None: ...

    def advance(self, label: str, accounts: int, nbytes: int) -> None: ...

    def done(self, label: str, status: str) -> None: ...


class QuietProgress:
    def begin(self, label: str, accounts: int, nbytes: int) -> None:
        pass

    def advance(self, label: str, accounts: int, nbytes: int) -> None:
        pass

    def done(self, label: str, status: str) -> None:
        pass


class LineProgress(QuietProgress):
    """Plain lines for logs and pipes: one when a push starts, one when it ends."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def begin(self, label: str, accounts: int, nbytes: int) -> None:
        self._say(f"{label}: sending {accounts} account changes ({nbytes} bytes)")

    def done(self, label: str, status: str) -> None:
        self._say(f"{label}: {status}")


class RichProgress(QuietProgress):
    """A rich progress bar per meter: accounts and bytes sent, rate, time left."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[accounts]} accounts"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        self._tasks: dict[str, TaskID] = {}
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def begin(self, label: str, accounts: int, nbytes: int) -> None:
        with self._lock:
            self._done[label] = 0
            self._tasks[label] = self._progress.add_task(
                label, total=nbytes, done=0, accounts=accounts
            )

    def advance(self, label: str, accounts: int, nbytes: int) -> None:
        with self._lock:
            self._done[label] += accounts
            self._progress.update(self._tasks[label], advance=nbytes, done=self._done[label])

    def done(self, label: str, status: str) -> None:
        with self._lock:
            if label in self._tasks:
                self._progress.update(self._tasks[label], description=f"{label}: {status}")
            else:
                self._progress.console.print(f"{label}: {status}")


# ---------------------------------------------------------------- results


@dataclass
class MeterResult:
    target: MeterTarget
    status: str = "failed"  # in-sync, synced, planned, refused, failed
    exit_code: int = EXIT_FAILED
    serial: str = ""
    model: str = ""
    digest: bytes = b""
    plan: SyncPlan | None = None
    exchanges: int = 0
    bytes_sent: int = 0
    busy_replies: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0
    error: str = ""
    snapshot: tuple[AccountRecord, ...] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "meter": self.target.label,
            "port": self.target.port,
            "serial": self.serial,
            "model": self.model,
            "status": self.status,
            "exit_code": self.exit_code,
            "digest": self.digest.hex(),
            "exchanges": self.exchanges,
            "bytes_sent": self.bytes_sent,
            "busy_replies": self.busy_replies,
            "retransmissions": self.retransmissions,
            "elapsed_s": round(self.elapsed, 3),
        }
        if self.error:
            out["error"] = self.error
        if self.plan is not None:
            out["plan"] = self.plan.to_json()
        return out


# ---------------------------------------------------------------- the engine


def sync_meter(
    client: MeterClient,
    target: MeterTarget,
    shared: SharedView,
    progress: Progress,
    dry_run: bool = False,
) -> MeterResult:
    """Bring one connected meter in step with the shared list (see module docstring)."""
    started = time.monotonic()
    result = MeterResult(target)
    ident = client.identity or client.hello()
    result.serial, result.model, result.digest = ident.serial, ident.model, ident.digest
    result.exchanges = 1

    def finish(status: str, code: int) -> MeterResult:
        result.status, result.exit_code = status, code
        result.bytes_sent = client.bytes_sent  # HELLO included: an in-sync meter costs just that
        result.busy_replies = client.session.stats.busy
        result.retransmissions = client.session.stats.retransmissions
        result.elapsed = time.monotonic() - started
        progress.done(
            target.label, status if not result.plan else f"{status} ({_summary(result.plan)})"
        )
        return result

    if shared.in_sync.get(ident.serial) == ident.digest:
        # Nothing changed on either side since this meter's last sync.
        return finish("in-sync", EXIT_IN_SYNC)
    projection = shared.projection
    snapshot = shared.snapshot(ident.serial)
    plan: SyncPlan | None = None
    if snapshot is not None and snapshot[0] == ident.digest:
        # The meter still holds exactly what we pushed last time (passwords included).
        plan = make_plan(projection, snapshot[1], ident.capacity)
        if plan.target_digest == ident.digest:
            result.plan, result.snapshot = plan, plan.target
            return finish("in-sync", EXIT_IN_SYNC)
        if plan.deletes:
            # A snapshot has no counters: whether a vanished account was charged
            # (deactivate, never delete) must come from the meter itself.
            plan = None

    password = target.supervisor_password
    authenticated = False
    if password is not None or not dry_run:
        client.call(Auth(password or ""), Ack)
        authenticated = True
        result.exchanges += 1
    if plan is None:
        meter_list = tuple(entry_record(e) for e in read_all_accounts(client))
        result.exchanges += 1
        plan = make_plan(projection, meter_list, ident.capacity, passwords_known=authenticated)
    result.plan = plan
    if plan.target_digest == ident.digest and plan.empty:
        result.snapshot = plan.target
        return finish("in-sync", EXIT_IN_SYNC)
    if plan.over_capacity:
        result.error = plan.problems[-1]
        return finish("refused", EXIT_REFUSED)
    if dry_run:
        return finish("planned", EXIT_IN_SYNC if plan.empty else EXIT_FAILED)

    txn = secrets.randbits(32)
    batches: list[Message] = [
        *batch_deletes(txn, plan.deletes, ident.max_payload),
        *batch_puts(txn, plan.puts, ident.max_payload),
    ]
    sizes = {id(b): len(b.encode()) for b in batches}  # encoded once more by the session
    progress.begin(target.label, len(plan.puts) + len(plan.deletes), sum(sizes.values()))

    def on_reply(request: Message, reply: Message) -> None:
        if isinstance(request, PutAccounts):
            progress.advance(target.label, len(request.records), sizes[id(request)])
        elif isinstance(request, DeleteAccounts):
            progress.advance(target.label, len(request.codes), sizes[id(request)])

    client.call(Begin(txn), Ack)
    client.pipeline(batches, on_reply=on_reply)
    committed = client.call(Commit(txn, plan.target_digest), Committed)
    result.exchanges += 2 + len(batches)
    if committed.digest != plan.target_digest:
        result.error = "the meter committed a list whose digest differs from the plan"
        return finish("failed", EXIT_FAILED)
    result.digest = committed.digest
    result.snapshot = plan.target
    return finish("synced", EXIT_IN_SYNC)


def _summary(plan: SyncPlan) -> str:
    counts = plan.counts()
    if not counts:
        return "no changes"
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


class SharedView:
    """What a sync needs from the store, read in the store's thread.

    ``in_sync``: serial -> digest of every product the store still calls in sync
    (any change to the shared list clears that flag), so a meter that reports
    that digest is in sync without loading the list.  The projection and the
    snapshots are loaded on first use (``load()`` them first for a fleet: the
    store cannot be used from the fleet's threads).
    """

    def __init__(self, store: SharedList) -> None:
        self._store = store
        self.in_sync = {p.serial: p.last_digest for p in store.products() if p.in_sync}
        self._projection: Projection | None = None
        self._snapshots: dict[str, tuple[bytes, tuple[AccountRecord, ...]]] = {}

    def load(self) -> None:
        if self._projection is None:
            self._projection = project(a.to_record() for a in self._store.accounts())
            self._snapshots = self._store.meter_snapshots()

    @property
    def projection(self) -> Projection:
        self.load()
        assert self._projection is not None
        return self._projection

    def snapshot(self, serial: str) -> tuple[bytes, tuple[AccountRecord, ...]] | None:
        self.load()
        return self._snapshots.get(serial)


Connect = Callable[[MeterTarget], MeterClient]


def default_connect(target: MeterTarget) -> MeterClient:
    return MeterClient.connect(target.port, baudrate=target.baud)


def run_one(
    target: MeterTarget,
    shared: SharedView,
    progress: Progress,
    connect: Connect,
    dry_run: bool,
) -> MeterResult:
    """Connect, sync, close; every failure becomes a result (a fleet goes on)."""
    try:
        client = connect(target)
    except (LinkError, MeterError, OSError) as exc:
        progress.done(target.label, f"failed: {exc}")
        return MeterResult(target, error=str(exc))
    try:
        return sync_meter(client, target, shared, progress, dry_run)
    except MeterError as exc:
        progress.done(target.label, f"refused: {exc}")
        return MeterResult(target, status="refused", exit_code=EXIT_REFUSED, error=str(exc))
    except (LinkError, OSError) as exc:
        progress.done(target.label, f"failed: {exc}")
        return MeterResult(target, error=str(exc))
    except Exception as exc:  # a fleet goes on: any other failure is this meter's alone
        progress.done(target.label, f"failed: {type(exc).__name__}: {exc}")
        return MeterResult(target, error=f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


def run_fleet(
    store: SharedList,
    targets: Sequence[MeterTarget],
    progress: Progress,
    connect: Connect = default_connect,
    dry_run: bool = False,
) -> list[MeterResult]:
    """Sync every target concurrently; record the results in the store."""
    shared = SharedView(store)
    if len(targets) == 1:
        results = [run_one(targets[0], shared, progress, connect, dry_run)]
    else:
        shared.load()  # the threads must not touch the store
        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            futures = [pool.submit(run_one, t, shared, progress, connect, dry_run) for t in targets]
            results = [f.result() for f in futures]
    if not dry_run:
        now = datetime.now(UTC)
        for r in results:
            if r.exit_code == EXIT_IN_SYNC and r.serial:
                if store.product(r.serial) is None:
                    store.record_product(r.serial, r.model, "sync")
                if r.snapshot is not None and shared.snapshot(r.serial) != (r.digest, r.snapshot):
                    store.save_meter_snapshot(r.serial, r.digest, r.snapshot)
                store.mark_synced(r.serial, r.digest, now)
            elif r.serial and store.product(r.serial) is not None:
                store.mark_out_of_sync(r.serial)
    return results


def fleet_exit_code(results: Sequence[MeterResult]) -> int:
    codes = {r.exit_code for r in results}
    if codes <= {EXIT_IN_SYNC}:
        return EXIT_IN_SYNC
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_REFUSED


# ---------------------------------------------------------------- the CLI


def _targets(args: argparse.Namespace) -> list[MeterTarget]:
    password = args.supervisor_password or os.environ.get("METER_SUPERVISOR_PASSWORD")
    targets = [
        MeterTarget(port=p, baud=args.baud, supervisor_password=password) for p in args.port or []
    ]
    if args.inventory:
        targets += load_inventory(args.inventory, password)
    if not targets:
        raise InventoryError("name a meter with --port P (repeatable) or --inventory FILE")
    return targets


def _print_plan(result: MeterResult, out: object) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False)  # type: ignore[arg-type]
    plan = result.plan
    console.print(f"[bold]{result.target.label}[/] {result.model} {result.serial}: {result.status}")
    if result.error:
        console.print(f"  {result.error}")
    if plan is None:
        return
    if plan.changes:
        table = Table("change", "code", "detail")
        for c in plan.changes:
            table.add_row(c.kind, c.code, c.detail)
        console.print(table)
    else:
        console.print("  nothing to change")
    if plan.shortenings:
        table = Table(
            "code",
            "shared-list name",
            "meter name",
            title="names shortened to the meter's 32/16 limits",
        )
        for s in plan.shortenings:
            table.add_row(s.code, s.old, s.new)
        console.print(table)
    for p in plan.problems:
        console.print(f"  [yellow]cannot be done:[/] {p}")
    if not plan.passwords_compared:
        console.print("  passwords were not compared (no supervisor password given)")
    console.print(f"  chargeable accounts needed {plan.chargeable_needed} of {plan.capacity}")


def _summary_table(results: Sequence[MeterResult], out: object) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "meter", "serial", "status", "changes", "bytes sent", "seconds", title="sync summary"
    )
    for r in results:
        table.add_row(
            r.target.label,
            r.serial,
            r.status,
            _summary(r.plan) if r.plan else r.error[:60],
            str(r.bytes_sent),
            f"{r.elapsed:.2f}",
        )
    Console(file=out, highlight=False).print(table)  # type: ignore[arg-type]


def _open_store(args: argparse.Namespace) -> SharedList:
    from agent.cli import open_store

    return open_store(args)


def _cmd_sync(args: argparse.Namespace, dry_run: bool = False) -> int:
    try:
        targets = _targets(args)
    except InventoryError as exc:
        print(f"meter-sync: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    tty = sys.stdout.isatty() and not args.json
    with _open_store(args) as store:
        if tty and not dry_run:
            with RichProgress() as rich_progress:
                results = run_fleet(store, targets, rich_progress, dry_run=dry_run)
        else:
            progress: Progress = QuietProgress() if (args.json or dry_run) else LineProgress()
            results = run_fleet(store, targets, progress, dry_run=dry_run)
    if args.json:
        print(
            json.dumps(
                {"meters": [r.to_json() for r in results], "exit_code": fleet_exit_code(results)},
                indent=2,
            )
        )
    elif dry_run:
        for r in results:
            _print_plan(r, sys.stdout)
    else:
        _summary_table(results, sys.stdout)
    if dry_run:
        return max((EXIT_REFUSED if r.status == "refused" else r.exit_code) for r in results)
    return fleet_exit_code(results)


def _cmd_plan(args: argparse.Namespace) -> int:
    code = _cmd_sync(args, dry_run=True)
    return EXIT_IN_SYNC if code == EXIT_FAILED else code  # a plan with changes is not a failure


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        targets = _targets(args)
    except InventoryError as exc:
        print(f"meter-sync: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with _open_store(args) as store:
        results = run_fleet(store, targets, QuietProgress(), dry_run=True)
    ok = all(r.status == "in-sync" for r in results)
    for r in results:
        line = (
            f"{r.target.label}: {r.serial} {'in sync' if r.status == 'in-sync' else 'NOT in sync'}"
        )
        if r.error:
            line += f" ({r.error})"
        elif r.plan is not None and r.status != "in-sync":
            line += f" ({_summary(r.plan)})"
        print(line)
    if ok:
        return EXIT_IN_SYNC
    return fleet_exit_code([r for r in results if r.status != "planned"]) or EXIT_FAILED


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", action="append", metavar="P", help="meter port or URL (repeatable)")
    p.add_argument(
        "--inventory", metavar="FILE", help="TOML file naming the meters (see agent/inventory.py)"
    )
    p.add_argument(
        "--supervisor-password",
        metavar="PW",
        help="the meters' supervisor password (default: $METER_SUPERVISOR_PASSWORD)",
    )
    p.add_argument("--baud", type=int, default=115200, help="line speed for serial devices")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="show what a sync would change on a meter (writes nothing)")
    _common(p)
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("sync", help="make the meters' account lists the shared list")
    _common(p)
    p.set_defaults(func=_cmd_sync)
    p = sub.add_parser("verify", help="exit 0 only if every meter holds the shared list")
    _common(p)
    p.set_defaults(func=_cmd_verify)


# ---------------------------------------------------------------- attach --port


class MeterSource:
    """``attach``'s MeterListSource over the protocol: the meter's own list, with
    counters (and passwords, once authenticated)."""

    def __init__(self, target: MeterTarget, connect: Connect = default_connect) -> None:
        self.target = target
        self._connect = connect
        self._client: MeterClient | None = None

    def _open(self) -> MeterClient:
        if self._client is None:
            self._client = self._connect(self.target)
        return self._client

    def identify(self) -> tuple[str, str]:
        ident = self._open().identity
        assert ident is not None
        return ident.serial, ident.model

    def read_accounts(self) -> list[AccountRecord]:
        client = self._open()
        try:
            client.call(Auth(self.target.supervisor_password or ""), Ack)
            return [entry_record(e) for e in read_all_accounts(client)]
        finally:
            self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
