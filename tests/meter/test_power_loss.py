"""Power loss: SIGKILL a real `meter-sim serve` at seeded random moments.

Each run starts the server on the same state file, checks the before-or-after
invariant against what the client knows, then runs list transactions and mail
runs until a timer kills the process:

* the list digest is the old list or the new one (the new one for certain once
  COMMITTED was received);
* every mail run whose MAIL_DONE the client received is in the counters, and the
  one run in flight at the kill is counted at most once.

CI runs a small seeded sample; ``make torture`` runs hundreds
(METERLINK_TORTURE_RUNS, METERLINK_TORTURE_SEED).
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware_sim.accounts import AccountBook, Settings
from protocol.client import MeterClient
from protocol.messages import (
    Ack,
    Auth,
    Begin,
    Commit,
    Committed,
    DeleteAccounts,
    MailDone,
    PutAccounts,
    PutRecord,
    RunMail,
)
from protocol.session import ClientSession
from tests.meter.helpers import close, read_counters, start

pytestmark = pytest.mark.e2e

BASE = PutRecord("base", "", "Base account", password_enabled=True, password="Ba5e")
BASE_NUMBER = 1  # the first account the first committed list creates


def _digest(records: list[PutRecord]) -> bytes:
    book = AccountBook(Settings(capacity=100))
    for r in records:
        book.put(r.code, r.parent_code, r.name, active=r.active,
                 password_enabled=r.password_enabled, password=r.password)
    return book.digest()


@dataclass
class Known:
    """What the client can be sure of, and what may or may not have happened."""

    current: list[PutRecord] = field(default_factory=list)
    pending: list[PutRecord] | None = None  # a COMMIT sent, no answer yet
    pieces: int = 0
    mills: int = 0
    mail_in_flight: int | None = None  # mills of a RUN_MAIL sent, no answer yet
    commits: int = 0
    mails: int = 0


def _variant(rng: random.Random) -> list[PutRecord]:
    codes = rng.sample(range(12), rng.randint(1, 8))
    records = [BASE]
    for c in sorted(codes):
        records.append(PutRecord(f"v{c}", "", f"Var {c} {rng.choice(['a', 'b', 'c'])}",
                                 active=rng.random() < 0.8))
    return records


def _check_after_restart(client: MeterClient, known: Known) -> None:
    assert client.identity is not None
    digest = client.identity.digest
    allowed = {_digest(known.current): known.current}
    if known.pending is not None:
        allowed[_digest(known.pending)] = known.pending
    assert digest in allowed, "the list is neither the old nor the new one"
    known.current, known.pending = allowed[digest], None
    if BASE not in known.current:
        assert known.pieces == 0 and known.mail_in_flight is None
        return
    counters = read_counters(client)
    got = counters[BASE_NUMBER]
    if known.mail_in_flight is not None and got.pieces == known.pieces + 1:
        assert got.postage_mills == known.mills + known.mail_in_flight
    else:
        assert (got.pieces, got.postage_mills) == (known.pieces, known.mills), (
            "a confirmed mail run is missing, or one was counted twice"
        )
    known.pieces, known.mills, known.mail_in_flight = got.pieces, got.postage_mills, None


def _work(client: MeterClient, known: Known, rng: random.Random) -> None:
    """List transactions and mail runs until the line dies."""
    txn = rng.randrange(1, 2**32)
    while True:
        txn = (txn + 1) % 2**32
        target = _variant(rng)
        client.call(Auth(""), expect=Ack)
        client.call(Begin(txn), expect=Ack)
        gone = sorted({r.code for r in known.current} - {r.code for r in target})
        if gone:
            client.call(DeleteAccounts(txn, tuple(gone)), expect=Ack)
        for i in range(0, len(target), 3):
            client.call(PutAccounts(txn, tuple(target[i : i + 3])), expect=Ack)
        known.pending = target
        done = client.call(Commit(txn, _digest(target)), expect=Committed)
        assert done.digest == _digest(target)
        known.current, known.pending = target, None
        known.commits += 1
        for _ in range(rng.randint(1, 4)):
            mills = rng.randint(1, 99_999)
            known.mail_in_flight = mills
            mail = client.call(RunMail(BASE_NUMBER, "Ba5e", 1, mills), expect=MailDone)
            known.pieces += 1
            known.mills += mills
            known.mail_in_flight = None
            known.mails += 1
            assert (mail.pieces, mail.postage_mills) == (known.pieces, known.mills)


def _connect(address: str) -> MeterClient:
    return MeterClient.connect(
        address, session=ClientSession(rto=0.3, max_rto=0.6, max_attempts=4)
    )


def torture(tmp_path: Path, runs: int, seed: int) -> Known:
    rng = random.Random(seed)
    state = tmp_path / "power.nvm"
    args = ["--pty", "--state", str(state), "--capacity", "100"]
    known = Known()
    for _ in range(runs):
        served = start(args)
        try:
            client = _connect(served.address)
            try:
                _check_after_restart(client, known)
                killer = threading.Timer(rng.uniform(0.005, 0.4), served.proc.kill)
                killer.start()
                try:
                    _work(client, known, rng)
                except OSError:  # PeerGone / LinkError: the power went
                    pass
                finally:
                    killer.cancel()
                    killer.join()
            finally:
                client.close()
            assert served.proc.wait(10) != 0  # it was killed, not stopped
        finally:
            close(served)
    served = start(args)
    try:
        with _connect(served.address) as client:
            _check_after_restart(client, known)
        assert served.stop() == 0
    finally:
        close(served)
    return known


def test_power_loss_sample(tmp_path: Path) -> None:
    known = torture(tmp_path, runs=3, seed=20241122)
    assert known.commits > 0  # the sample did real work before the kills


@pytest.mark.slow
def test_power_loss_torture(tmp_path: Path) -> None:
    runs = int(os.environ.get("METERLINK_TORTURE_RUNS", "3"))
    seed = int(os.environ.get("METERLINK_TORTURE_SEED", "7"))
    torture(tmp_path, runs=runs, seed=seed)
