"""meter-sync against a real `meter-sim serve --pty` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main as meter_sync

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def served_meter(tmp_path: Path) -> Iterator[str]:
    env = dict(os.environ, METER_SUPERVISOR_PASSWORD="sup3rvisor")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "serve",
            "--pty",
            "--state",
            str(tmp_path / "m.nvm"),
            "--capacity",
            "100",
            "--serial",
            "E2E-1",
            "--baud",
            "115200",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_import_sync_verify_report_over_a_real_pty(
    served_meter: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "shared.db"))
    monkeypatch.setenv("METER_SUPERVISOR_PASSWORD", "sup3rvisor")
    assert meter_sync(["import", str(EXAMPLES / "shared-list.csv")]) == 0
    assert meter_sync(["verify", "--port", served_meter]) == 1  # empty meter: not in sync
    assert meter_sync(["sync", "--port", served_meter, "--json"]) == 0
    capsys.readouterr()
    assert meter_sync(["sync", "--port", served_meter, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["meters"][0]
    assert again["status"] == "in-sync" and again["exchanges"] == 1
    assert meter_sync(["verify", "--port", served_meter]) == 0
    capsys.readouterr()
    assert meter_sync(["report", "--port", served_meter, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["meter"]["serial"] == "E2E-1"
    codes = {a["code"] for a in report["accounts"]}
    assert {"1000", "2110", "3300"} <= codes
    names = {a["code"]: a["path"][-1] for a in report["accounts"]}
    assert names["1000"] == "Acme Corporation Executive Offic"  # shortened to 32


def test_wrong_supervisor_password_exits_3(
    served_meter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "shared.db"))
    assert meter_sync(["import", str(EXAMPLES / "shared-list.csv")]) == 0
    assert meter_sync(["sync", "--port", served_meter, "--supervisor-password", "nope"]) == 3


def test_unreachable_port_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "shared.db"))
    assert meter_sync(["sync", "--port", str(tmp_path / "no-such-port"), "--json"]) == 1


def test_bad_inventory_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "shared.db"))
    inv = tmp_path / "meters.toml"
    inv.write_text("[[meter]]\nname = 'x'\n")
    assert meter_sync(["sync", "--inventory", str(inv)]) == 2


def test_attach_port_merges_the_meter_list_then_syncs_it(
    served_meter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A meter that already holds accounts is attached with add-update; afterwards it
    holds the shared list (its own accounts merged in)."""
    monkeypatch.setenv("METER_SUPERVISOR_PASSWORD", "sup3rvisor")
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "first.db"))
    assert meter_sync(["import", str(EXAMPLES / "shared-list.csv")]) == 0
    assert meter_sync(["sync", "--port", served_meter]) == 0  # the meter now has Acme's list
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "second.db"))  # a new, empty shared list
    backup = tmp_path / "backup.json"
    code = meter_sync(
        ["attach", "--port", served_meter, "--choice", "add-update", "--backup", str(backup)]
    )
    assert code == 0
    assert backup.exists() and oct(backup.stat().st_mode & 0o777) == "0o600"
    assert meter_sync(["verify", "--port", served_meter]) == 0
