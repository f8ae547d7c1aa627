"""`make demo`: the main job end to end on the embedded defaults.

A virtual DM800i on a pty at 38400 baud, the Acme Corporation shared list in a
SQLite store, a plan, a sync with progress, some mail runs, a change to the
shared list, a delta sync, and the multi-account report.  Cleans up after itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
console = Console(highlight=False)


def step(title: str) -> None:
    console.print()
    console.print(Rule(f"[bold cyan]{title}"))


def run(*argv: str, env: dict[str, str], capture: bool = False) -> str:
    shown = " ".join(a for a in argv)
    console.print(f"[dim]$ {shown}[/]")
    proc = subprocess.run(argv, env=env, text=True, capture_output=capture, check=False)
    if proc.returncode not in (0,):
        if capture:
            sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"demo: {argv[0]} exited {proc.returncode}")
    return proc.stdout if capture else ""


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="meterlink-demo-"))
    env = dict(os.environ)
    env["METERLINK_DB"] = str(work / "shared-list.db")
    env["METER_SUPERVISOR_PASSWORD"] = "demo-supervisor"  # noqa: S105  (a demo; never printed)
    sim, sync = str(BIN / "meter-sim"), str(BIN / "meter-sync")
    meter = subprocess.Popen(
        [
            sim,
            "serve",
            "--pty",
            "--state",
            str(work / "meter.nvm"),
            "--capacity",
            "100",
            "--serial",
            "DM800i-DEMO-0001",
            "--baud",
            "38400",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert meter.stdout is not None
        first = meter.stdout.readline().strip()
        if not first.startswith("listening on "):
            raise SystemExit(f"demo: meter-sim did not start ({first!r})")
        port = first.removeprefix("listening on ")
        step(f"A virtual DM800i is serving on {port} at 38400 baud")

        step("Import the shared cost-account list (Acme Corporation)")
        run(sync, "import", str(HERE / "shared-list.csv"), env=env)
        run(sync, "list", env=env)

        step("Plan: what a sync will change (nothing is written)")
        run(sync, "plan", "--port", port, env=env)

        step("Sync: the meter's list becomes the shared list")
        run(sync, "sync", "--port", port, env=env)
        run(sync, "verify", "--port", port, env=env)

        step("Mail runs on the meter")
        report = json.loads(
            run(sync, "report", "--port", port, "--format", "json", env=env, capture=True)
        )
        numbers = {a["code"]: a["number"] for a in report["accounts"] if a["chargeable"]}
        runs = [
            ("2110", "", "0.730", "12"),
            ("2200", "", "1.160", "3"),
            ("3100", "", "0.580", "40"),
            ("2130", "R0ck", "7.950", "1"),
            ("3200", "", "0.730", "5"),
        ]
        for code, password, postage, pieces in runs:
            extra = ["--password", password] if password else []
            run(
                sim,
                "mail",
                "--port",
                port,
                "--account",
                str(numbers[code]),
                "--postage",
                postage,
                "--pieces",
                pieces,
                *extra,
                env=env,
            )

        step("The shared list changes: a new level under Anvil Design, a rename, a deactivation")
        run(sync, "import", str(HERE / "shared-list-changes.csv"), env=env)
        run(sync, "plan", "--port", port, env=env)

        step("Delta sync: only the changes travel; Anvil Design's counters roll down")
        run(sync, "sync", "--port", port, env=env)
        run(sync, "verify", "--port", port, env=env)

        step("The multi-account report")
        run(sync, "report", "--port", port, env=env)
    finally:
        meter.send_signal(signal.SIGTERM)
        try:
            meter.wait(timeout=10)
        except subprocess.TimeoutExpired:
            meter.kill()
            meter.wait()
        if meter.stdout is not None:
            meter.stdout.close()
        shutil.rmtree(work, ignore_errors=True)
    console.print()
    console.print("[bold green]demo finished: meter stopped, temporary files removed[/]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
