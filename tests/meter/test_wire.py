"""Over a real pty with the line model on: --baud pacing and --fault noise."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from firmware_sim.accounts import AccountBook, Settings
from firmware_sim.meter import Meter
from firmware_sim.testing import InProcessLink
from protocol.client import MeterClient
from protocol.frames import encode_frame
from protocol.link import SerialLink
from protocol.messages import (
    AccountEntry,
    AccountPage,
    Ack,
    Auth,
    Begin,
    Commit,
    Committed,
    Message,
    PutAccounts,
    PutRecord,
    ReadAccounts,
)
from protocol.session import ClientSession
from tests.meter.helpers import serving

pytestmark = pytest.mark.e2e


def test_baud_9600_wire_time(tmp_path: Path) -> None:
    """Big PUT batches, pipelined: the inbound line is busy end to end, so the wire
    time is the request bytes x 10 / baud (the small ACKs run the other way)."""
    baud = 9600
    records = tuple(
        PutRecord(f"cost-centre-{i:02d}-" + "x" * 24, "", f"Cost centre {i:02d} " + "y" * 16)
        for i in range(13)
    )
    batches: list[Message] = [PutAccounts(1, records) for _ in range(6)]
    wire_bytes = sum(len(encode_frame(m.TYPE, 0, m.encode())) for m in batches)
    assert 5500 < wire_bytes < 6500
    args = ["--pty", "--state", str(tmp_path / "slow.nvm"), "--baud", str(baud)]
    with serving(args) as served:
        link = SerialLink.open(served.address, baudrate=baud)
        # an RTO longer than the whole transfer: no retransmission may add bytes
        client = MeterClient(link, session=ClientSession(rto=30.0, max_rto=30.0))
        try:
            client.hello()
            client.call(Auth(""), expect=Ack)  # no supervisor password stored
            client.call(Begin(1), expect=Ack)
            start = time.monotonic()
            replies = client.pipeline(batches)
            elapsed = time.monotonic() - start
            assert all(isinstance(r, Ack) and r.value == 13 for r in replies)
            assert client.session.stats.retransmissions == 0
            client.call(Commit(1), expect=Committed)
        finally:
            client.close()
        assert served.stop() == 0
    expected = wire_bytes * 10 / baud
    assert abs(elapsed - expected) <= 0.10 * expected, (elapsed, expected)


def _read_all(client: MeterClient) -> list[AccountEntry]:
    """Small pages, so that a noisy line gets each one through in a few tries."""
    entries: list[AccountEntry] = []
    while True:
        page = client.call(ReadAccounts(len(entries), 6), expect=AccountPage)
        entries += page.entries
        if len(entries) >= page.total:
            return entries


def _tree() -> list[tuple[PutRecord, ...]]:
    tops = [PutRecord(f"t{i}", "", f"Top {i}", password_enabled=i % 2 == 0,
                      password=f"pw{i:02d}" if i % 2 == 0 else None) for i in range(8)]
    subs = [PutRecord(f"t{i}s{j}", f"t{i}", f"Sub {i}.{j}") for i in range(8) for j in range(3)]
    subsubs = [PutRecord(f"t{i}s0x{k}", f"t{i}s0", f"Subsub {k}") for i in range(4)
               for k in range(2)]
    records = tops + subs + subsubs
    return [tuple(records[i : i + 5]) for i in range(0, len(records), 5)]


def _transaction(client: MeterClient) -> Committed:
    client.call(Auth(""), expect=Ack)
    client.call(Begin(42), expect=Ack)
    client.call_all([PutAccounts(42, batch) for batch in _tree()], expect=Ack)
    return client.call(Commit(42), expect=Committed)


def test_faults_do_not_change_the_outcome(tmp_path: Path) -> None:
    clean = Meter(serial="clean", book=AccountBook(Settings(capacity=100)))
    with MeterClient(InProcessLink(clean)) as client:
        client.hello()
        expected = _transaction(client)
        expected_entries = _read_all(client)
    # ~0.15 % of bytes damaged and a 40 ms stall (longer than the meter's 20 ms idle
    # gap) every ~500 bytes: about half of the frames arrive intact
    spec = "corrupt=0.0005,drop=0.0005,dup=0.0005,delay=0.05:30ms,stall=0.002:40ms"
    args = ["--pty", "--state", str(tmp_path / "noisy.nvm"), "--capacity", "100",
            "--fault", spec, "--seed", "11", "--baud", "115200"]
    with serving(args) as served:
        session = ClientSession(rto=0.25, max_rto=0.5, max_attempts=20)
        client = MeterClient(SerialLink.open(served.address), session=session)
        try:
            client.hello()
            committed = _transaction(client)
            entries = _read_all(client)
            stats = client.session.stats
        finally:
            client.close()
        assert served.stop() == 0
    assert committed == expected
    assert entries == expected_entries
    # the noise really reached the client (seeded, so this is not luck-dependent)
    assert stats.retransmissions + stats.crc_errors + stats.garbage_bytes + stats.truncated > 0
