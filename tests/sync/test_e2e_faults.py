"""The sync engine end to end over real ptys: noise, kills, busy, fleets, history."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main as meter_sync
from protocol.client import MeterClient, read_all_accounts
from protocol.digest import list_digest
from protocol.messages import Ack, Auth
from tests.sync.meters import SUPERVISOR, Served, run_mail, serve

HEADER = "Name,Code,Status,PasswordEnabled,PasswordCode,ParentName,NextParentName\n"


def write_list(
    path: Path,
    depts: int,
    teams: int,
    *,
    drop: set[str] = frozenset(),
    rename: dict[str, str] | None = None,
) -> None:  # type: ignore[assignment]
    rename = rename or {}
    rows = [HEADER]
    for d in range(depts):
        dept = f"Department {d:02d}"
        rows.append(f"{dept},D{d:02d},TRUE,FALSE,,,\n")
        for t in range(teams):
            code = f"D{d:02d}T{t:02d}"
            if code in drop:
                continue
            name = rename.get(
                code, f"Team {t:02d} of dept {d:02d}"
            )  # 21 chars: shortened on the meter
            pw = f"TRUE,p{t:03d}" if t % 3 == 0 else "FALSE,"
            rows.append(f"{name},{code},TRUE,{pw},{dept},\n")
    path.write_text("".join(rows))


def meter_list(port: str) -> tuple[bytes, dict[str, tuple[int, str, bool, int, int]]]:
    with MeterClient.connect(port) as client:
        assert client.identity is not None
        client.call(Auth(SUPERVISOR), Ack)
        entries = read_all_accounts(client)
        return client.identity.digest, {
            e.code: (e.number, e.name, e.active, e.pieces, e.postage_mills) for e in entries
        }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METERLINK_DB", str(tmp_path / "shared.db"))
    monkeypatch.setenv("METER_SUPERVISOR_PASSWORD", SUPERVISOR)
    return tmp_path


def _sync_json(port: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    code = meter_sync(["sync", "--port", port, "--json"])
    out = json.loads(capsys.readouterr().out)["meters"][0]
    out["exit"] = code
    return out  # type: ignore[no-any-return]


def test_delta_roll_down_and_history_over_a_pty(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meter = serve(env / "m.nvm", "--baud", "115200")
    try:
        write_list(env / "a.csv", 5, 10)
        assert meter_sync(["import", str(env / "a.csv")]) == 0
        first = _sync_json(meter.port, capsys)
        assert first["status"] == "synced"
        _, accounts = meter_list(meter.port)
        assert accounts["D00T01"][1] == "Team 01 of dept"  # cut to 16, trailing space trimmed
        # mail on two accounts
        for code, cents in (("D01T01", "0.730"), ("D02T02", "1.000")):
            run_mail(meter.port, accounts[code][0], cents, "--pieces", "2")
        # one rename: the delta is a sliver of the first sync
        write_list(env / "b.csv", 5, 10, rename={"D03T03": "Renamed team"})
        assert meter_sync(["import", str(env / "b.csv")]) == 0
        delta = _sync_json(meter.port, capsys)
        assert delta["status"] == "synced"
        assert int(delta["bytes_sent"]) * 10 < int(first["bytes_sent"])  # type: ignore[call-overload]
        # roll-down: a first child under a charged account takes its number and counters
        (env / "c.csv").write_text(
            HEADER + "Night shift,D01T01N,TRUE,FALSE,,Team 01 of dept 01,Department 01\n"
        )
        assert meter_sync(["import", str(env / "c.csv")]) == 0
        assert _sync_json(meter.port, capsys)["status"] == "synced"
        _, after = meter_list(meter.port)
        assert after["D01T01N"][0] == accounts["D01T01"][0]
        assert after["D01T01N"][3:] == (2, 1460)
        assert after["D01T01"][0] == 0  # the parent is administrative now
        # a shared list without D02T02 (charged) and D04T04 (never charged)
        os.environ["METERLINK_DB"] = str(env / "other.db")
        write_list(env / "d.csv", 5, 10, drop={"D02T02", "D04T04"})
        assert meter_sync(["import", str(env / "d.csv")]) == 0
        assert meter_sync(["import", str(env / "c.csv")]) == 0
        gone = _sync_json(meter.port, capsys)
        assert gone["status"] == "synced", gone
        _, final = meter_list(meter.port)
        assert "D04T04" not in final
        assert final["D02T02"][2:] == (False, 2, 2000)  # kept, inactive, with its counters
        assert meter_sync(["verify", "--port", meter.port]) == 0
    finally:
        meter.stop()


def test_capacity_refusal_leaves_the_meter_untouched(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meter = serve(env / "m.nvm", capacity=25)
    try:
        write_list(env / "a.csv", 3, 10)  # 30 chargeable
        assert meter_sync(["import", str(env / "a.csv")]) == 0
        before, _ = meter_list(meter.port)
        result = _sync_json(meter.port, capsys)
        assert result["exit"] == 3 and result["status"] == "refused"
        assert "30" in str(result["error"]) and "25" in str(result["error"])
        after, accounts = meter_list(meter.port)
        assert after == before and accounts == {}
    finally:
        meter.stop()


def test_busy_meter_is_waited_out_over_a_pty(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meter = serve(env / "m.nvm")
    try:
        write_list(env / "a.csv", 2, 3)
        assert meter_sync(["import", str(env / "a.csv")]) == 0
        assert _sync_json(meter.port, capsys)["status"] == "synced"
        _, accounts = meter_list(meter.port)
        run_mail(meter.port, accounts["D00T01"][0], "0.500", "--duration-ms", "1500")
        write_list(env / "b.csv", 2, 3, rename={"D01T02": "Busy team"})
        assert meter_sync(["import", str(env / "b.csv")]) == 0
        result = _sync_json(meter.port, capsys)
        assert result["status"] == "synced"
        assert int(result["busy_replies"]) > 0  # type: ignore[call-overload]
    finally:
        meter.stop()


def test_noise_on_the_line_ends_in_the_same_state(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_list(env / "a.csv", 4, 10)
    assert meter_sync(["import", str(env / "a.csv")]) == 0
    clean = serve(env / "clean.nvm", serial="SAME-1")
    noisy = serve(
        env / "noisy.nvm",
        "--fault",
        "corrupt=0.0005,drop=0.0005,dup=0.0005",
        "--seed",
        "7",
        serial="SAME-2",
    )
    try:
        assert _sync_json(clean.port, capsys)["status"] == "synced"
        result = _sync_json(noisy.port, capsys)
        assert result["status"] == "synced"
        digest_a, a = meter_list(clean.port)
        digest_b, b = meter_list(noisy.port)
        assert digest_a == digest_b and a == b  # same names, numbers, flags, counters
    finally:
        clean.stop()
        noisy.stop()


def _empty_digest() -> bytes:
    return list_digest([])


def _kill_mid_sync(env: Path, seed: int, victim: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Start a sync at 38400 baud, SIGKILL the agent or the meter at a seeded moment,
    then check the meter holds the old list or the new one, and that the next sync
    finishes the job."""
    state = env / "m.nvm"
    meter = serve(state, "--baud", "38400", capacity=300)
    restarted: Served | None = None
    try:
        write_list(env / "a.csv", 8, 16)
        assert meter_sync(["import", str(env / "a.csv")]) == 0
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "sync", "--port", meter.port, "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(random.Random(seed).uniform(0.3, 1.5))
        if victim == "agent":
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            port = meter.port
        else:
            meter.stop(signal.SIGKILL)
            assert agent.wait(timeout=60) in (0, 1)  # 0 only if it finished before the cut
            restarted = serve(state, "--baud", "115200", capacity=300)
            port = restarted.port
        middle, _ = meter_list(port)
        result = _sync_json(port, capsys)
        assert result["exit"] == 0
        final, accounts = meter_list(port)
        assert middle in (_empty_digest(), final)  # old list or new list, never a mix
        assert len(accounts) == 136
        assert meter_sync(["verify", "--port", port]) == 0
    finally:
        meter.stop()
        if restarted is not None:
            restarted.stop()


@pytest.mark.parametrize("seed", [11, 12])
def test_agent_killed_mid_sync_recovers_on_the_next_run(
    env: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _kill_mid_sync(env, seed, "agent", capsys)


@pytest.mark.parametrize("seed", [21, 22])
def test_meter_killed_mid_sync_recovers_on_the_next_run(
    env: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _kill_mid_sync(env, seed, "meter", capsys)


def test_fleet_of_three_one_failing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_list(env / "a.csv", 3, 5)
    assert meter_sync(["import", str(env / "a.csv")]) == 0
    meters = [serve(env / f"m{i}.nvm", serial=f"FLEET-{i}") for i in range(3)]
    try:
        meters[2].stop(signal.SIGKILL)  # unplugged before the sync
        inventory = env / "meters.toml"
        inventory.write_text(
            "".join(
                f'[[meter]]\nname = "m{i}"\nport = "{m.port}"\n\n' for i, m in enumerate(meters)
            )
        )
        capsys.readouterr()
        code = meter_sync(["sync", "--inventory", str(inventory), "--json"])
        results = {r["meter"]: r for r in json.loads(capsys.readouterr().out)["meters"]}
        assert code == 1
        assert results["m0"]["status"] == results["m1"]["status"] == "synced"
        assert results["m2"]["status"] == "failed"
        assert meter_list(meters[0].port)[0] == meter_list(meters[1].port)[0]
    finally:
        for m in meters:
            m.stop()


@pytest.mark.slow
def test_torture_agent_and_meter_kills(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make torture`: many seeded kills of either side; CI runs the two seeds above."""
    runs = int(os.environ.get("METERLINK_TORTURE_RUNS", "0")) // 10
    if runs == 0:
        pytest.skip("set METERLINK_TORTURE_RUNS (make torture) for the long run")
    for seed in range(100, 100 + runs):
        run_dir = env / f"run{seed}"
        run_dir.mkdir()
        os.environ["METERLINK_DB"] = str(run_dir / "shared.db")
        _kill_mid_sync(run_dir, seed, "agent" if seed % 2 else "meter", capsys)
