"""Start and stop real `meter-sim serve` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUPERVISOR = "sup3rvisor"


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: str
    state: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve(state: Path, *options: str, serial: str = "E2E-1", capacity: int = 100) -> Served:
    env = dict(os.environ, METER_SUPERVISOR_PASSWORD=SUPERVISOR)
    argv = [
        sys.executable,
        "-m",
        "firmware_sim.cli",
        "serve",
        "--pty",
        "--state",
        str(state),
        "--capacity",
        str(capacity),
        "--serial",
        serial,
        *options,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise AssertionError(f"meter-sim did not start: {line!r}")
    return Served(proc, line.removeprefix("listening on "), state)


def run_mail(port: str, account: int, postage: str, *options: str) -> None:
    """`meter-sim mail` against ``port`` (postage per piece, in dollars)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "mail",
            "--port",
            port,
            "--account",
            str(account),
            "--postage",
            postage,
            *options,
        ],
        check=True,
        capture_output=True,
    )
