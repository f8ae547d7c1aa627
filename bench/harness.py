"""Benchmark plumbing: a real ``meter-sim serve --pty`` process, the agent run
in-process with its link's byte counters, the naive baseline, and a child-process
timer that reports peak RSS.

The agent runs in-process (``agent.cli.main([... "sync", "--json"])``) so that
interpreter start-up and imports are excluded: "inside the agent" in
docs/BENCHMARKS.md.  ``SerialLink`` counts every byte it writes and reads; the
bench wraps ``SerialLink.close`` to collect those counters (bytes each way, the
HELLO and every retransmission included).  The meter is always a separate
``meter-sim`` process on a pty, pacing the line itself (``firmware_sim/line.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.cli import main as sync_main
from agent.plan import make_plan, project
from agent.store import SharedList
from protocol.client import MeterClient
from protocol.link import SerialLink
from protocol.messages import Ack, Auth, Begin, Commit, Committed, PutAccounts, RunMail
from protocol.session import ClientSession

PASSWORD = "Bench-S3cret"
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ byte counters

_closed_links: list[tuple[int, int]] = []
_original_close = SerialLink.close


def _counting_close(self: SerialLink) -> None:
    _closed_links.append((self.bytes_out, self.bytes_in))
    _original_close(self)


SerialLink.close = _counting_close  # type: ignore[method-assign]


@contextlib.contextmanager
def link_bytes() -> Iterator[list[int]]:
    """Bytes written and read by every SerialLink closed inside the block."""
    start = len(_closed_links)
    totals = [0, 0]
    try:
        yield totals
    finally:
        for out, into in _closed_links[start:]:
            totals[0] += out
            totals[1] += into


# ------------------------------------------------------------------ the meter


@dataclass(frozen=True)
class Line:
    baud: int | None = None
    latency_ms: int = 0

    @property
    def label(self) -> str:
        speed = f"{self.baud} baud" if self.baud else "unpaced"
        return f"{speed} +{self.latency_ms} ms" if self.latency_ms else speed

    def wire_seconds(self, nbytes: int) -> float | None:
        return nbytes * 10 / self.baud if self.baud else None


class MeterProcess:
    """``meter-sim serve --pty`` in a child process; ``port`` is the pty path."""

    def __init__(self, state: Path, line: Line, capacity: int = 3000) -> None:
        self.state = state
        self.line = line
        cmd = [
            str(BIN / "meter-sim"),
            "serve",
            "--pty",
            "--state",
            str(state),
            "--capacity",
            str(capacity),
        ]
        if line.baud:
            cmd += ["--baud", str(line.baud)]
        if line.latency_ms:
            cmd += ["--latency-ms", str(line.latency_ms)]
        env = dict(os.environ, METER_SUPERVISOR_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if not first.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"meter-sim did not start: {first!r}")
        self.port = first.removeprefix("listening on ")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> MeterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ the agent


@dataclass
class Run:
    """One measured exchange."""

    seconds: float
    sent: int
    received: int
    status: str = ""
    exchanges: int = 0
    agent_seconds: float = 0.0  # sync_meter alone (MeterResult.elapsed)


def _baud(line: Line) -> list[str]:
    """The agent is told the line speed, as a technician would (``--baud``)."""
    return ["--baud", str(line.baud)] if line.baud else []


def agent_sync(db: Path, port: str, line: Line) -> Run:
    """``meter-sync --db DB sync --port PORT --json`` in this process, timed."""
    out = io.StringIO()
    os.environ["METER_SUPERVISOR_PASSWORD"] = PASSWORD
    with link_bytes() as counts, contextlib.redirect_stdout(out):
        started = time.perf_counter()
        code = sync_main(["--db", str(db), "sync", "--port", port, "--json", *_baud(line)])
        seconds = time.perf_counter() - started
    report = json.loads(out.getvalue())
    meter = report["meters"][0]
    if code != 0:
        raise RuntimeError(f"sync failed ({code}): {meter.get('error')}")
    return Run(
        seconds, counts[0], counts[1], meter["status"], meter["exchanges"], meter["elapsed_s"]
    )


def agent_sync_subprocess(db: Path, port: str, line: Line) -> Run:
    """The same through the ``meter-sync`` console script (interpreter start-up included)."""
    env = dict(os.environ, METER_SUPERVISOR_PASSWORD=PASSWORD)
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "meter-sync"), "--db", str(db), "sync", "--port", port, "--json", *_baud(line)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"meter-sync failed: {done.stderr.strip()}")
    meter = json.loads(done.stdout)["meters"][0]
    return Run(seconds, meter["bytes_sent"], 0, meter["status"], meter["exchanges"])


# ------------------------------------------------------------------ the naive baseline


def naive_sync(db: Path, port: str, line: Line, capacity: int = 3000) -> Run:
    """The whole list, one record per frame, stop-and-wait (window 1), every time.

    No digest check and no plan against the meter's list: every account of the
    projected shared list is PUT in its own PUT_ACCOUNTS and each waits for its ACK
    before the next is sent.  COMMIT carries the same expected digest the agent
    uses, so the meter ends up holding exactly what ``meter-sync sync`` gives it.
    """
    with SharedList.open(db) as store:
        projection = project(a.to_record() for a in store.accounts())
    plan = make_plan(projection, (), capacity)  # as if the meter were empty: everything
    started = time.perf_counter()
    client = MeterClient.connect(
        port, baudrate=line.baud or 115200, session=ClientSession(window=1)
    )
    try:
        assert isinstance(client.transport, SerialLink)
        client.call(Auth(PASSWORD), Ack)
        txn = 0x6E616976
        client.call(Begin(txn), Ack)
        for rec in plan.puts:
            client.call(PutAccounts(txn, (rec,)), Ack)
        committed = client.call(Commit(txn, plan.target_digest), Committed)
        link = client.transport
        sent, received = link.bytes_out, link.bytes_in
    finally:
        client.close()
    seconds = time.perf_counter() - started
    if committed.digest != plan.target_digest:
        raise RuntimeError("naive sync: the meter committed another list")
    return Run(seconds, sent, received, "synced", 3 + len(plan.puts) + 1)


# ------------------------------------------------------------------ mail runs


def mail_runs(port: str, numbers: Sequence[int], window: int) -> Run:
    """RUN_MAIL for each number (no passwords: pick accounts without one)."""
    client = MeterClient.connect(port, session=ClientSession(window=window))
    try:
        assert isinstance(client.transport, SerialLink)
        msgs = [RunMail(n, "", 1, 730, 0) for n in numbers]
        started = time.perf_counter()
        client.pipeline(msgs)
        seconds = time.perf_counter() - started
        sent, received = client.transport.bytes_out, client.transport.bytes_in
    finally:
        client.close()
    return Run(seconds, sent, received, "mailed", len(msgs))


# ------------------------------------------------------------------ child processes


def timed_child(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Run ``cmd`` under a fresh Python parent; (seconds, peak RSS in bytes, exit code).

    The parent exists only so RUSAGE_CHILDREN covers this one command, not the
    meter processes this bench has already reaped.
    """
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "t = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps([t, rss, code]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env, check=True
    )
    seconds, rss, code = json.loads(done.stdout.strip().splitlines()[-1])
    return float(seconds), int(rss), int(code)


def copy_db(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst
