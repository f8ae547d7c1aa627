"""The conformance suite: all checks pass against meter-sim (CLI, over a real pty),
and the checks notice a meter that misbehaves (in process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from firmware_sim import meter as meter_module
from firmware_sim.conformance import FEATURES, NotScratch, run
from firmware_sim.meter import Meter
from firmware_sim.testing import InProcessMeter, MeterConfig, TestMeter
from protocol.messages import RunMail
from protocol.records import AccountRecord

PW = "Conf0rm-pw"


def _meter_sync(*args: str, password: str = PW) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METER_SUPERVISOR_PASSWORD": password, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
        timeout=120, env=env,
    )


@pytest.mark.e2e
@pytest.mark.meter(supervisor_password=PW)
def test_cli_all_checks_pass_against_meter_sim(virtual_meter: TestMeter) -> None:
    assert virtual_meter.port is not None
    done = _meter_sync("conformance", "--port", virtual_meter.port)
    assert done.returncode == 0, done.stdout + done.stderr
    for feature in FEATURES:
        assert any(feature in line and "PASS" in line for line in done.stdout.splitlines()), (
            feature, done.stdout)
    assert "FAIL" not in done.stdout and "9 passed, 0 failed" in done.stdout
    assert PW not in done.stdout + done.stderr


@pytest.mark.e2e
@pytest.mark.meter(supervisor_password=PW, accounts=[AccountRecord("keep", "", "Keep me")])
def test_cli_refuses_a_meter_with_accounts_unless_forced(virtual_meter: TestMeter) -> None:
    assert virtual_meter.port is not None
    refused = _meter_sync("conformance", "--port", virtual_meter.port)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert [e.code for e in virtual_meter.accounts()] == ["keep"]  # untouched
    wrong = _meter_sync("conformance", "--port", virtual_meter.port, "--force",
                        password="Wrong-pw")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "FAIL" in wrong.stdout and "BAD_SUPERVISOR_PASSWORD" in wrong.stdout
    assert "Wrong-pw" not in wrong.stdout + wrong.stderr


def _in_process(meter: InProcessMeter) -> object:
    return lambda url: meter.client()


def test_python_api_in_process_all_pass() -> None:
    with InProcessMeter(MeterConfig(supervisor_password=PW)) as meter:
        results = run("in-process", PW, connect=_in_process(meter))  # type: ignore[arg-type]
    assert [r.feature for r in results] == list(FEATURES)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_checks_fail_on_a_meter_that_charges_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Meter._mail

    def double(self: Meter, msg: RunMail, now: float):  # type: ignore[no-untyped-def]
        original(self, msg, now)
        return original(self, msg, now)

    for state in (meter_module.State.READY, meter_module.State.SUPERVISOR):
        monkeypatch.setitem(meter_module.TRANSITIONS, (state, RunMail), (double, None))
    with InProcessMeter(MeterConfig(supervisor_password=PW)) as meter:
        results = {r.feature: r for r in run("x", PW, connect=_in_process(meter))}  # type: ignore[arg-type]
    assert not results["retransmission"].passed and "twice" in results["retransmission"].detail
    assert not results["roll-down"].passed
    assert results["framing"].passed and results["capacity"].passed


def test_python_api_refuses_a_meter_with_accounts() -> None:
    config = MeterConfig(supervisor_password=PW, accounts=(AccountRecord("a", "", "A"),))
    with InProcessMeter(config) as meter, pytest.raises(NotScratch):
        run("x", PW, connect=_in_process(meter))  # type: ignore[arg-type]
