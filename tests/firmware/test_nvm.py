"""The NVM: round trip, one 0600 file, atomic commits, SIGKILL torture."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_sim.accounts import AccountBook, Supervisor
from firmware_sim.nvm import FORMAT_VERSION, Nvm, NvmError
from tests.firmware import torture_ops
from tests.firmware.conftest import TODAY, manual_book

REPO = Path(__file__).resolve().parents[2]


def fast_supervisor() -> Supervisor:
    sup = Supervisor(n=2**4)
    sup.set_password("Super1")
    return sup


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "meter.nvm"
    book = manual_book(capacity=300)
    book.charge(1, "Eng1", 3, 1_500, TODAY)
    book.configure(period="monthly", cutoff=dt.date(2024, 3, 31), reset_individual_enabled=True)
    sup = fast_supervisor()
    with Nvm.open(path, factory=lambda: (book, sup)) as nvm:
        loaded = nvm.load()
    with Nvm.open(path) as nvm:
        again = nvm.load()
    for got in (loaded, again):
        assert got.book.records(True) == book.records(True)
        assert got.settings == book.settings and got.book.settings is got.settings
        assert got.book.digest() == book.digest()
        assert got.session == b""
        got.supervisor.verify("Super1", 0.0)


def test_one_file_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "meter.nvm"
    with Nvm.open(path) as nvm:
        book = nvm.load().book
        book.put("a", "", "A", password_enabled=True, password="pw12")
        nvm.commit_book(book, b"s1")
        book.charge(1, "pw12", 1, 5, TODAY)
        nvm.commit_mail(book, "a", b"s2")
        assert os.listdir(tmp_path) == ["meter.nvm"]  # no -wal/-shm/-journal between commits
    assert (os.stat(path).st_mode & 0o777) == 0o600
    os.chmod(path, 0o644)
    with Nvm.open(path) as nvm:
        assert nvm.load().session == b"s2"
    assert (os.stat(path).st_mode & 0o777) == 0o600
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()


def test_commits_carry_the_session_and_none_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "meter.nvm"
    with Nvm.open(path) as nvm:
        book = nvm.load().book
        book.put("a", "", "A")
        nvm.commit_book(book, b"after-put")
        book.charge(1, None, 2, 20, TODAY)
        nvm.commit_mail(book, "a")
        assert nvm.load().session == b"after-put"
        assert nvm.load().book.get("a").pieces == 2
        book.configure(reset_individual_enabled=True)
        nvm.commit_settings(book, b"settings")
        book.reset(1)
        nvm.commit_counters(book, ["a"], b"reset")
        loaded = nvm.load()
        assert loaded.session == b"reset" and loaded.book.get("a").pieces == 0
        assert loaded.book.get("a").ever_charged and loaded.settings.reset_individual_enabled
        book.charge(1, None, 1, 1, TODAY)
        nvm.commit_mail(book, "a", b"m")
        book.reset_all(TODAY)
        nvm.commit_reset_all(book, b"all")
        assert nvm.load().book.records() == book.records()
        sup = fast_supervisor()
        with pytest.raises(Exception):  # noqa: B017
            sup.verify("bad!", 1.0)
        nvm.commit_supervisor(sup, b"sup")
        assert nvm.load().supervisor.failures == 1
        nvm.commit_session(b"\x00\xff" * 10)
        assert nvm.load().session == b"\x00\xff" * 10


def test_failed_commit_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "meter.nvm"
    with Nvm.open(path) as nvm:
        book = nvm.load().book
        book.put("a", "", "A")
        nvm.commit_book(book, b"one")
        book.put("b", "", "B")  # in memory only: not committed
        book.charge(1, None, 1, 1, TODAY)
        book.charge(2, None, 1, 1, TODAY)
        with pytest.raises(NvmError):  # b is not stored: the whole commit is refused
            nvm.commit_counters(book, ["a", "b"], b"two")
        loaded = nvm.load()
        assert loaded.session == b"one" and loaded.book.get("a").pieces == 0
        with pytest.raises(NvmError):
            nvm.commit_session(b"x" * (2 << 20))
        assert nvm.load().session == b"one"
    with pytest.raises(NvmError):
        nvm.load()


def test_refuses_foreign_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nvm"
    junk.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(NvmError):
        Nvm.open(junk)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(NvmError, match="not a meterlink"):
        Nvm.open(other)
    future = tmp_path / "future.nvm"
    Nvm.open(future).close()
    db = sqlite3.connect(future)
    db.execute(f"PRAGMA user_version={FORMAT_VERSION + 1}")
    db.close()
    with pytest.raises(NvmError, match="unsupported"):
        Nvm.open(future)


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "meter.nvm"
    path.write_bytes(b"")  # e.g. killed right after creating the file
    with Nvm.open(path, factory=torture_ops.initial) as nvm:
        assert nvm.load().book.codes() == ["eng", "sw", "id", "ops"]


def test_mail_commits_are_cheap(tmp_path: Path) -> None:
    """A mail run rewrites one row, not the book: a 3000-account book stays fast."""
    from firmware_sim.accounts import Settings

    book = AccountBook(Settings(capacity=3000))
    for i in range(3000):
        book.put(f"c{i}", "", f"Account {i}")
    with Nvm.open(tmp_path / "m.nvm", factory=lambda: (book, Supervisor())) as nvm:
        db = nvm._conn
        before = db.total_changes
        nvm.commit_book(book, b"b")
        assert db.total_changes - before > 3000  # a list commit rewrites the book
        for i in range(20):
            book.charge(i + 1, None, 1, 1, TODAY)
            before = db.total_changes
            nvm.commit_mail(book, f"c{i}", b"m")
            assert db.total_changes - before == 2  # one account row + the session
        assert nvm.load().book.totals().pieces == 20


# ------------------------------------------------------------ SIGKILL torture


def _torture(tmp_path: Path, runs: int, seed: int) -> None:
    path = tmp_path / "torture.nvm"
    rng = random.Random(seed)
    book, sup = torture_ops.initial()
    replayed = 0
    previous = 0
    max_acked = 0
    for run in range(runs):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.firmware.torture_ops", str(path), str(seed)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 0.25))  # maybe while opening/creating
            else:
                assert proc.stdout is not None
                proc.stdout.readline()  # READY
                time.sleep(rng.uniform(0.0, 0.2))
            proc.kill()
        finally:
            out, err = proc.communicate()
        assert proc.returncode == -9, err.decode()
        # Only complete lines count: a line cut by the kill was never acknowledged.
        complete = out.decode().split("\n")[:-1]
        acks = [int(line[4:]) for line in complete if re.fullmatch(r"ACK \d+", line)]
        last_ack = max(acks, default=previous)
        max_acked = max(max_acked, last_ack)
        if not path.exists():
            continue
        with Nvm.open(path, factory=torture_ops.initial) as nvm:
            loaded = nvm.load()
        done = int(loaded.session.decode() or "0")
        # Every acknowledged operation is there; at most one unacknowledged one.
        assert last_ack <= done <= last_ack + 1, (run, last_ack, done)
        assert done >= previous
        while replayed < done:
            replayed += 1
            torture_ops.apply(book, sup, seed, replayed)
        # Exactly the state after operation `done`: before-or-after, never a mix.
        assert loaded.book.to_state() == book.to_state(), run
        assert loaded.supervisor.failures == sup.failures
        assert loaded.supervisor.locked_until == sup.locked_until
        previous = done
    assert max_acked > 0  # the writer did get to work


def test_sigkill_torture_quick(tmp_path: Path) -> None:
    _torture(tmp_path, runs=4, seed=7)


@pytest.mark.slow
def test_sigkill_torture(tmp_path: Path) -> None:
    runs = int(os.environ.get("METERLINK_TORTURE_RUNS", "5"))
    seed = int(os.environ.get("METERLINK_TORTURE_SEED", "2024"))
    _torture(tmp_path, runs=runs, seed=seed)
