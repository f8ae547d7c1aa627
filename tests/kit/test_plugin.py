"""The pytest plugin: fixtures used directly, then inner pytest sessions (pytester)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware_sim.testing import InProcessMeter, MeterConfig, VirtualMeter
from protocol.client import MeterClient, MeterError
from protocol.errors import ErrorCode
from protocol.messages import Identify, PutRecord
from protocol.records import AccountRecord

ACCOUNTS = [
    AccountRecord("eng", "", "Engineering"),
    AccountRecord("eng-web", "eng", "Web", password_enabled=True, password="Web1"),
    PutRecord("ops", "", "Operations"),
]


def _meter_sim_pids(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (and meter-sim)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "firmware_sim.cli" in cmd and marker in cmd and state != "Z":
            found.append(int(pid))
    return found


@pytest.mark.e2e
@pytest.mark.meter(capacity=100, accounts=ACCOUNTS, supervisor_password="Sup3rPw")
def test_virtual_meter_fixture(virtual_meter: VirtualMeter, meter_link: MeterClient) -> None:
    assert virtual_meter.port is not None and virtual_meter.port.startswith("/dev/pts/")
    assert virtual_meter.supervisor_password == "Sup3rPw"
    assert virtual_meter.running
    identity = meter_link.identity
    assert isinstance(identity, Identify)
    assert identity.serial == virtual_meter.serial and identity.capacity == 100
    assert identity.accounts == 3 and identity.chargeable == 2
    done = virtual_meter.mail(1, postage_mills=730, pieces=3, password="Web1")
    assert (done.number, done.pieces, done.postage_mills) == (1, 3, 2190)
    with pytest.raises(MeterError) as info:
        virtual_meter.mail(1, postage_mills=1, password="nope")
    assert info.value.code == ErrorCode.BAD_ACCOUNT_PASSWORD
    assert "nope" not in str(info.value)
    counters = virtual_meter.counters()
    assert counters[1].pieces == 3 and counters[2].pieces == 0
    assert meter_link is virtual_meter.client()


@pytest.mark.meter(capacity=25, accounts=ACCOUNTS)
def test_inprocess_meter_fixture(inprocess_meter: InProcessMeter) -> None:
    assert inprocess_meter.port is None
    assert len(inprocess_meter.supervisor_password) >= 4  # random by default
    assert [e.code for e in inprocess_meter.accounts()] == ["eng", "eng-web", "ops"]
    inprocess_meter.mail(2, postage_mills=500, pieces=2)
    assert inprocess_meter.counters()[2].postage_mills == 1000
    assert inprocess_meter.meter.book.chargeable_count() == 2


def test_marker_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="colour"):
        MeterConfig.from_kwargs(colour="red")


@pytest.mark.e2e
def test_meter_factory_stops_every_meter(meter_factory: object) -> None:
    # Two meters at once with different line settings; both stop cleanly.
    a = meter_factory()  # type: ignore[operator]
    b = meter_factory(baud=9600, latency_ms=2)  # type: ignore[operator]
    assert a.port != b.port and a.serial
    assert isinstance(a, VirtualMeter) and isinstance(b, VirtualMeter)
    assert a.stop() == 0 and not a.running  # SIGTERM: clean exit 0
    assert b.running


INNER = '''
import pytest

@pytest.mark.meter(accounts=[], capacity=25)
def test_passes(virtual_meter, meter_link):
    assert meter_link.identity.serial == virtual_meter.serial
    virtual_meter.load([__import__("protocol.records").records.AccountRecord("a", "", "A")])
    assert virtual_meter.mail(1, postage_mills=100).pieces == 1

def test_fails(virtual_meter):
    virtual_meter.mail(1, postage_mills=100)   # the list is empty: UNKNOWN_ACCOUNT
'''


@pytest.mark.e2e
def test_inner_session_traces_and_no_leftover_process(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    traces = pytester.path / "traces"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--meter-trace", "traces")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*UNKNOWN_ACCOUNT*"])
    kept = sorted(p.name for p in traces.iterdir())
    assert kept == ["test_inner.py_test_fails.trace"], kept
    text = (traces / kept[0]).read_text()
    assert "RunMail(" in text and "Error(" in text
    assert not _meter_sim_pids(str(pytester.path))


@pytest.mark.e2e
def test_meter_port_option_uses_the_running_meter(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_port='''
import os

def test_against_port(virtual_meter, meter_port):
    assert meter_port and virtual_meter.port == meter_port
    assert virtual_meter.supervisor_password == os.environ["METER_SUPERVISOR_PASSWORD"]
    virtual_meter.load([__import__("protocol.records").records.AccountRecord("x", "", "X")])
    virtual_meter.mail(1, postage_mills=250, pieces=4)
'''
    )
    meter = VirtualMeter.start(MeterConfig(supervisor_password="Outer1pw"), tmp_path / "m")
    try:
        monkeypatch.setenv("METER_SUPERVISOR_PASSWORD", "Outer1pw")
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--meter-port", str(meter.port)
        )
        result.assert_outcomes(passed=1)
        assert meter.running  # the inner session did not stop someone else's meter
        assert meter.counters()[1].pieces == 4
    finally:
        assert meter.stop() == 0
