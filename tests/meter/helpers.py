"""Running `meter-sim` as a real subprocess, cleanly (the leak guard checks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from protocol.client import MeterClient
from protocol.messages import CounterEntry, CounterPage, ReadCounters

CLI = [sys.executable, "-m", "firmware_sim.cli"]


@dataclass
class Served:
    proc: subprocess.Popen[str]
    addresses: list[str]

    @property
    def address(self) -> str:
        return self.addresses[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the server and wait; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def start(args: Sequence[str], lines: int = 1, env: dict[str, str] | None = None) -> Served:
    """Start `meter-sim serve ARGS` and read its `listening on` lines."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [*CLI, "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    served = Served(proc, [])
    try:
        assert proc.stdout is not None
        for _ in range(lines):
            line = proc.stdout.readline()
            if not line.startswith("listening on "):
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"no 'listening on' line: {line!r}; stderr: {served.stderr()}")
            served.addresses.append(line.split(" ", 2)[2].strip())
    except BaseException:
        close(served)
        raise
    return served


def close(served: Served) -> None:
    proc = served.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def serving(args: Sequence[str], lines: int = 1, env: dict[str, str] | None = None
            ) -> Iterator[Served]:
    served = start(args, lines, env)
    try:
        yield served
    finally:
        close(served)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def read_counters(client: MeterClient) -> dict[int, CounterEntry]:
    out: dict[int, CounterEntry] = {}
    while True:
        page = client.call(ReadCounters(len(out)), expect=CounterPage)
        out.update({e.number: e for e in page.entries})
        if len(out) >= page.total or not page.entries:
            return out
