"""`meter-sim serve` as a real subprocess: pty, tcp, --count, mail, report, signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from protocol.client import MeterClient, MeterError
from protocol.errors import ErrorCode
from protocol.messages import Ack, Auth, Begin, Commit, Committed, PutAccounts, PutRecord
from tests.meter.helpers import read_counters, run_cli, serving

pytestmark = pytest.mark.e2e

SUPER = "Super1pw"
ACCOUNT_PW = "Ab3$"


def _setup_list(client: MeterClient, password: str = SUPER) -> Committed:
    client.call(Auth(password), expect=Ack)
    client.call(Begin(7), expect=Ack)
    records = (
        PutRecord("eng", "", "Engineering", password_enabled=True, password=ACCOUNT_PW),
        PutRecord("ops", "", "Operations"),
    )
    client.call(PutAccounts(7, records), expect=Ack)
    return client.call(Commit(7), expect=Committed)


def test_serve_pty_mail_report_and_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "front-office.nvm"
    trace = tmp_path / "trace.txt"
    link = tmp_path / "meter-link"
    args = ["--pty", "--state", str(state), "--link", str(link), "--trace", str(trace)]
    with serving(args, env={"METER_SUPERVISOR_PASSWORD": SUPER}) as served:
        path = served.address
        assert path.startswith("/dev/pts/")
        assert os.path.realpath(link) == path
        with MeterClient.connect(str(link)) as client:
            assert client.identity is not None and client.identity.serial.startswith("VM")
            committed = _setup_list(client)
            assert committed.added == 2 and committed.chargeable == 2
        mailed = run_cli(
            "mail", "--port", path, "--account", "1", "--password", ACCOUNT_PW,
            "--postage", "0.730", "--pieces", "3",
        )
        assert mailed.returncode == 0, mailed.stderr
        assert "3 pieces, $2.190" in mailed.stdout
        wrong = run_cli("mail", "--port", path, "--account", "1", "--password", "nope",
                        "--postage", "1")
        assert wrong.returncode == 3
        assert "BAD_ACCOUNT_PASSWORD" in wrong.stderr and "nope" not in wrong.stderr
        with MeterClient.connect(path) as client:
            counters = read_counters(client)
            assert client.identity is not None and client.identity.digest == committed.digest
        assert counters[1].pieces == 3 and counters[1].postage_mills == 2190
        assert counters[2].pieces == 0
        report = run_cli("report", "--port", path)
        assert report.returncode == 0, report.stderr
        assert "Engineering" in report.stdout and "$2.190" in report.stdout
        assert served.stop(signal.SIGTERM) == 0
    assert not link.exists() and not link.is_symlink()
    assert state.stat().st_mode & 0o777 == 0o600
    assert trace.stat().st_mode & 0o777 == 0o600
    text = trace.read_text()
    assert "Auth()" in text and "(redacted)" in text and "RunMail(" in text
    for secret in (SUPER, ACCOUNT_PW, "nope"):
        assert secret not in text
        assert secret.encode().hex() not in text


def test_state_survives_restart_and_sigint(tmp_path: Path) -> None:
    state = tmp_path / "m.nvm"
    args = ["--pty", "--state", str(state), "--supervisor-password", SUPER, "--capacity", "100"]
    with serving(args) as served:
        with MeterClient.connect(served.address) as client:
            committed = _setup_list(client)
            assert client.identity is not None and client.identity.capacity == 100
        assert served.stop(signal.SIGINT) == 0
        assert SUPER not in served.stderr()
    again = ["--pty", "--state", str(state), "--capacity", "300", "--supervisor-password", "Other1"]
    with serving(again) as served:
        with MeterClient.connect(served.address) as client:
            assert client.identity is not None
            assert client.identity.digest == committed.digest
            assert client.identity.capacity == 100  # only the first start sets it
            assert client.identity.serial == served_serial(state)
            with pytest.raises(MeterError) as info:
                client.call(Auth("Other1"))
            assert info.value.code == ErrorCode.BAD_SUPERVISOR_PASSWORD
            client.call(Auth(SUPER), expect=Ack)
        assert served.stop() == 0
        err = served.stderr()
        assert "keeping the stored capacity 100" in err and "Other1" not in err


def served_serial(state: Path) -> str:
    from firmware_sim.cli import default_serial

    return default_serial(state)


def test_tcp_listener(tmp_path: Path) -> None:
    args = ["--tcp", "127.0.0.1:0", "--state", str(tmp_path / "t.nvm")]
    with serving(args) as served:
        url = served.address
        assert url.startswith("socket://127.0.0.1:") and not url.endswith(":0")
        with MeterClient.connect(url) as client:
            _setup_list(client, password="")  # no supervisor password set: setup is open
        mailed = run_cli("mail", "--port", url, "--account", "2", "--postage", "12.5")
        assert mailed.returncode == 0, mailed.stderr
        assert "$12.500" in mailed.stdout
        assert served.stop() == 0


def test_count_serves_distinct_meters(tmp_path: Path) -> None:
    args = ["--pty", "--count", "3", "--state", str(tmp_path / "fleet.nvm")]
    with serving(args, lines=3) as served:
        assert len(set(served.addresses)) == 3
        serials = []
        for path in served.addresses:
            with MeterClient.connect(path) as client:
                assert client.identity is not None
                serials.append(client.identity.serial)
        assert len(set(serials)) == 3
        assert served.stop() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fleet-1.nvm", "fleet-2.nvm", "fleet-3.nvm"
    ]


def test_bad_input_and_unreachable_port(tmp_path: Path) -> None:
    bad = run_cli("mail", "--port", "/dev/null", "--account", "1", "--postage", "0.7305")
    assert bad.returncode == 2 and "3 decimals" in bad.stderr
    for args in (["--pty", "--tcp", "127.0.0.1:0"], ["--capacity", "42", "--pty"],
                 ["--pty", "--fault", "corrupt=2"], ["--pty", "--fault", "smash=0.1"]):
        r = run_cli("serve", "--state", str(tmp_path / "x.nvm"), *args)
        assert r.returncode == 2, (args, r.stderr)
    r = run_cli("serve", "--state", str(tmp_path / "x.nvm"), "--pty", "--fault", "smash=0.1")
    assert "smash=0.1" in r.stderr
    gone = run_cli("mail", "--port", str(tmp_path / "no-such-port"), "--account", "1",
                   "--postage", "1", "--open-timeout", "0.2")
    assert gone.returncode == 1
