"""A deterministic stream of meter operations for the NVM SIGKILL torture test.

Operation ``i`` of a seed depends only on (seed, i) and the book it is applied to, so
the test can replay the first ``k`` operations in memory and compare the result with
what a killed writer left on disk.

Run as a module it is the writer: ``python -m tests.firmware.torture_ops PATH SEED``
opens (or creates) the NVM, resumes after the operation recorded in the session blob,
and prints ``ACK i`` after each commit has returned.  It runs until it is killed.
"""

from __future__ import annotations

import datetime as dt
import random
import sys

from firmware_sim.accounts import AccountBook, AccountError, PutRequest, Settings, Supervisor
from firmware_sim.nvm import Nvm

DAY0 = dt.date(2024, 1, 1)


def initial() -> tuple[AccountBook, Supervisor]:
    book = AccountBook(Settings(capacity=100, reset_individual_enabled=True))
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("sw", "eng", "Software")
    book.put("id", "eng", "Industrial", password_enabled=True, password="IdPw")
    book.put("ops", "", "Operations")
    sup = Supervisor(n=2**4, max_failures=3, lockout_seconds=5.0)
    sup.set_password("Super1", salt=b"\x00" * 16)
    return book, sup


def apply(book: AccountBook, sup: Supervisor, seed: int, i: int) -> str:
    """Apply operation ``i`` to book/sup; return which commit it needs."""
    rng = random.Random(f"{seed}:{i}")
    today = DAY0 + dt.timedelta(days=i // 50)
    roll = rng.random()
    if roll < 0.70:
        recs = [r for r in book.records(include_passwords=True)
                if r.chargeable and book.usable(r.code)]
        if recs:
            rec = rng.choice(recs)
            book.charge(rec.number, rec.password, rng.randint(1, 9), rng.randint(1, 99_999),
                        today)
            return f"mail {rec.code}"
        return "none"
    if roll < 0.75:
        book.reset_all(today)
        return "reset_all"
    if roll < 0.80:
        pool = [r.code for r in book.records() if r.chargeable]
        if not pool:
            return "none"
        code = rng.choice(pool)
        book.reset(code)
        return f"reset {code}"
    if roll < 0.85:
        try:
            sup.verify(rng.choice(["Super1", "wrong"]), float(i))
        except AccountError:
            pass
        return "supervisor"
    # A list transaction: create a few accounts, rename one, maybe delete one.
    codes = book.codes()
    puts: list[PutRequest] = []
    deletes: list[str] = []
    parent = rng.choice(["", *codes])
    puts.append(PutRequest(f"a{i}", parent, f"Acct {i}", password=rng.choice([None, f"pw{i:04d}"])))
    if codes:
        target = rng.choice(codes)
        old = book.get(target)
        puts.append(PutRequest(target, old.parent_code, f"{old.name[:10]} {i % 97}",
                               active=rng.random() < 0.9))
    victims = [c for c in codes if book.is_chargeable(c) and not book.get(c).ever_charged]
    if victims and rng.random() < 0.5:
        deletes.append(rng.choice(victims))
    try:
        book.apply_batch(puts, deletes)
    except AccountError:
        return "none"
    return "book"


def main(argv: list[str]) -> int:
    path, seed = argv[0], int(argv[1])
    nvm = Nvm.open(path, factory=initial)
    try:
        book, _settings, sup, session = nvm.load()
        done = int(session.decode() or "0")
        sys.stdout.write(f"READY {done}\n")
        sys.stdout.flush()
        i = done
        while True:
            i += 1
            kind = apply(book, sup, seed, i)
            blob = str(i).encode()
            if kind.startswith("mail "):
                nvm.commit_mail(book, kind[5:], blob)
            elif kind.startswith("reset "):
                nvm.commit_counters(book, [kind[6:]], blob)
            elif kind == "reset_all":
                nvm.commit_reset_all(book, blob)
            elif kind == "supervisor":
                nvm.commit_supervisor(sup, blob)
            elif kind == "book":
                nvm.commit_book(book, blob)
            else:
                nvm.commit_session(blob)
            # One write per line: the ack is whole or absent, even when unbuffered.
            sys.stdout.write(f"ACK {i}\n")
            sys.stdout.flush()
    finally:
        nvm.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
