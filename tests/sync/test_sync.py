"""The sync engine against in-process meters (the same protocol stack as over a pty)."""

from __future__ import annotations

import random

import pytest

from agent.store import SharedList
from agent.sync import EXIT_FAILED, EXIT_IN_SYNC, EXIT_REFUSED, fleet_exit_code
from firmware_sim.accounts import AccountError
from firmware_sim.testing import InProcessLink
from protocol.client import MeterClient
from protocol.link import PeerGone
from tests.sync.conftest import Links, acct, add, edit, make_meter, sync


def _company(store: SharedList, n: int = 30) -> None:
    add(store, acct("ENG", "Engineering"), acct("OPS", "Operations"))
    add(store, *(acct(f"E{i}", f"Team {i}", "ENG", password=f"p{i:03d}") for i in range(n)))


def test_first_sync_then_no_change_costs_one_exchange(store: SharedList) -> None:
    _company(store)
    meter = make_meter()
    links = Links(m=meter)
    (first,) = sync(store, links, "m")
    assert (first.status, first.exit_code) == ("synced", EXIT_IN_SYNC)
    assert len(meter.book) == 32 and meter.book.digest() == first.digest
    (second,) = sync(store, links, "m")
    assert second.status == "in-sync" and second.exchanges == 1
    assert second.bytes_sent < 40  # one HELLO frame
    product = store.product("SIM-1")
    assert product is not None and product.in_sync and product.last_digest == meter.book.digest()


def test_delta_bytes_grow_with_changes_not_list_size(store: SharedList) -> None:
    _company(store, n=200)
    meter = make_meter(capacity=300)
    links = Links(m=meter)
    (full,) = sync(store, links, "m")
    edit(store, "E7", name="Renamed")
    (delta,) = sync(store, links, "m")
    assert delta.status == "synced" and delta.plan is not None
    assert delta.plan.counts() == {"rename": 1}
    assert delta.bytes_sent * 20 < full.bytes_sent
    assert meter.book.get("E7").name == "Renamed"


def test_roll_down_carries_number_and_counters(store: SharedList) -> None:
    add(store, acct("ENG", "Engineering"))
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    meter.run_mail(1, "", 3, 2190)
    add(store, acct("SW", "Software", "ENG"), acct("ID", "Industrial Design", "ENG"))
    (r,) = sync(store, links, "m")
    assert r.status == "synced"
    sw, idn = meter.book.get("SW"), meter.book.get("ID")
    assert (sw.number, sw.pieces, sw.postage_mills) == (1, 3, 2190)
    assert idn.number == 2 and idn.name == "Industrial Desig"  # shortened to 16
    assert meter.book.get("ENG").number == 0
    assert r.plan is not None and [c.kind for c in r.plan.changes].count("roll-down") == 1


def test_charged_account_is_deactivated_instead_of_deleted(store: SharedList) -> None:
    add(store, acct("A", "Alpha"), acct("B", "Beta"))
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    meter.run_mail(meter.book.get("A").number, "", 1, 500)
    edit(store, "A", active=False)
    (r,) = sync(store, links, "m")
    assert r.status == "synced"
    a = meter.book.get("A")
    assert not a.active and a.postage_mills == 500


def test_account_gone_from_shared_list_keeps_its_history(tmp_path: object) -> None:
    # Two stores stand for the list before and after an account vanished from it.
    import pathlib

    base = pathlib.Path(str(tmp_path))
    before = SharedList.open(base / "a.db")
    after = SharedList.open(base / "b.db")
    try:
        add(before, acct("A", "Alpha"), acct("B", "Beta"), acct("C", "Gamma"))
        add(after, acct("A", "Alpha"))
        meter = make_meter()
        links = Links(m=meter)
        sync(before, links, "m")
        meter.run_mail(meter.book.get("B").number, "", 2, 800)
        (r,) = sync(after, links, "m")
        assert r.status == "synced"
        assert "C" not in meter.book  # never charged: deleted
        b = meter.book.get("B")
        assert not b.active and (b.pieces, b.postage_mills) == (2, 800)
        (again,) = sync(after, links, "m")
        assert again.status == "in-sync" and again.exchanges == 1
    finally:
        before.close()
        after.close()


def test_capacity_refusal_leaves_meter_untouched(store: SharedList) -> None:
    add(store, *(acct(f"A{i}", f"Account {i}") for i in range(26)))
    meter = make_meter(capacity=25)
    links = Links(m=meter)
    digest = meter.book.digest()
    (r,) = sync(store, links, "m")
    assert (r.status, r.exit_code) == ("refused", EXIT_REFUSED)
    assert "26" in r.error and "25" in r.error
    assert meter.book.digest() == digest and len(meter.book) == 0


def test_wrong_supervisor_password_is_refused(store: SharedList) -> None:
    _company(store, 3)
    meter = make_meter()
    (r,) = sync(store, Links(m=meter), "m", password="wrong")
    assert r.exit_code == EXIT_REFUSED and "BAD_SUPERVISOR_PASSWORD" in r.error
    assert len(meter.book) == 0


def test_busy_meter_is_waited_out(store: SharedList) -> None:
    add(store, acct("A", "Alpha"))
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    client = MeterClient(InProcessLink(meter))
    client.hello()
    from protocol.messages import MailDone, RunMail

    client.call(RunMail(1, "", 1, 100, duration_ms=300), MailDone)
    edit(store, "A", name="Alpha 2")
    (r,) = sync(store, links, "m")
    assert r.status == "synced" and meter.book.get("A").name == "Alpha 2"
    assert any(link.meter.session.stats.busy for link in links.links)


class LossyLink(InProcessLink):
    """Corrupts, drops and duplicates bytes in both directions (seeded)."""

    def __init__(self, meter: object, seed: int) -> None:
        super().__init__(meter)  # type: ignore[arg-type]
        self.rng = random.Random(seed)

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            r = self.rng.random()
            if r < 0.0003:
                continue  # dropped
            if r < 0.0006:
                b ^= 1 << self.rng.randrange(8)
            out.append(b)
            if self.rng.random() < 0.0003:
                out.append(b)
        return bytes(out)

    def write(self, data: bytes) -> None:
        super().write(self._mangle(data))

    def read(self, timeout: float) -> bytes:
        return self._mangle(super().read(timeout))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_line_ends_in_the_same_state(store: SharedList, seed: int) -> None:
    _company(store, 60)
    clean, noisy = make_meter(), make_meter()
    sync(store, Links(m=clean), "m")

    def connect(target: object) -> MeterClient:
        client = MeterClient(LossyLink(noisy, seed))
        client.session.rto = 0.02
        client.session.max_rto = 0.2
        client.session.max_attempts = 40
        client.hello()
        return client

    from agent.inventory import MeterTarget
    from agent.sync import QuietProgress, run_fleet

    (r,) = run_fleet(
        store, [MeterTarget("m", supervisor_password="super")], QuietProgress(), connect=connect
    )
    assert r.status == "synced", r.error
    assert (
        noisy.session.stats.crc_errors + noisy.session.stats.garbage_bytes > 0
    )  # the noise was real
    assert noisy.book.digest() == clean.book.digest()
    assert [x.number for x in noisy.book.records()] == [x.number for x in clean.book.records()]


def test_agent_killed_mid_sync_leaves_old_list_and_next_sync_finishes(store: SharedList) -> None:
    _company(store, 120)
    meter = make_meter(capacity=300)
    before = meter.book.digest()

    class Dying(InProcessLink):
        writes = 0

        def write(self, data: bytes) -> None:
            Dying.writes += 1
            if Dying.writes == 6:  # mid-way through the batches
                raise PeerGone("agent killed")
            super().write(data)

    def connect(target: object) -> MeterClient:
        client = MeterClient(Dying(meter))
        client.hello()
        return client

    from agent.inventory import MeterTarget
    from agent.sync import QuietProgress, run_fleet

    (r,) = run_fleet(
        store, [MeterTarget("m", supervisor_password="super")], QuietProgress(), connect=connect
    )
    assert r.exit_code == EXIT_FAILED
    assert meter.book.digest() == before  # staged only: the live list is the old one
    (again,) = sync(store, Links(m=meter), "m")
    assert again.status == "synced" and len(meter.book) == 122


def test_fleet_one_failing_the_others_in_sync(store: SharedList) -> None:
    _company(store, 10)
    a, b = make_meter("SIM-A"), make_meter("SIM-B")
    results = sync(store, Links(a=a, b=b), "a", "broken", "b")
    by_port = {r.target.port: r for r in results}
    assert by_port["a"].status == by_port["b"].status == "synced"
    assert by_port["broken"].exit_code == EXIT_FAILED
    assert a.book.digest() == b.book.digest()
    assert fleet_exit_code(results) == EXIT_FAILED
    assert {p.serial for p in store.products() if p.in_sync} == {"SIM-A", "SIM-B"}


def test_plan_writes_nothing(store: SharedList) -> None:
    _company(store, 5)
    meter = make_meter()
    (r,) = sync(store, Links(m=meter), "m", dry_run=True)
    assert r.status == "planned" and r.plan is not None and r.plan.counts() == {"add": 7}
    assert len(meter.book) == 0
    assert store.product("SIM-1") is None


def test_mail_refused_while_a_transaction_is_open() -> None:
    meter = make_meter()
    client = MeterClient(InProcessLink(meter))
    client.hello()
    from protocol.messages import Ack, Auth, Begin

    client.call(Auth("super"), Ack)
    client.call(Begin(1), Ack)
    with pytest.raises(AccountError):
        meter.run_mail(1, "", 1, 1)


def test_snapshot_plan_with_deletes_rereads_the_meter_for_history(store: SharedList) -> None:
    """A snapshot carries no counters: a vanished, charged account must be read live
    so that it is deactivated, not deleted (which the meter would refuse)."""
    import dataclasses

    add(store, acct("A", "Alpha"), acct("B", "Beta"))
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    meter.run_mail(meter.book.get("B").number, "", 1, 300)
    # the snapshot says B exists; make the shared list forget B as a rebuilt list would
    snaps = store.meter_snapshots()
    digest, records = snaps["SIM-1"]
    store._conn.execute("DELETE FROM accounts WHERE code = 'B'")  # a rebuilt list
    store.mark_out_of_sync("SIM-1")  # as every change through SharedList.apply does
    store.save_meter_snapshot("SIM-1", digest, [dataclasses.replace(r) for r in records])
    (r,) = sync(store, links, "m")
    assert r.status == "synced", r.error
    b = meter.book.get("B")
    assert not b.active and b.postage_mills == 300


def test_an_unexpected_failure_stays_with_its_meter(store: SharedList) -> None:
    _company(store, 3)
    good = make_meter("SIM-G")

    class Exploding(Links):
        def __call__(self, target: object) -> MeterClient:
            client = super().__call__(target)  # type: ignore[arg-type]
            if getattr(target, "port", "") == "bad":
                client.call = None  # type: ignore[assignment,method-assign]  # TypeError when used
            return client

    results = sync(store, Exploding(good=good, bad=make_meter("SIM-B")), "good", "bad")
    by_port = {r.target.port: r for r in results}
    assert by_port["good"].status == "synced"
    assert by_port["bad"].exit_code == EXIT_FAILED and "TypeError" in by_port["bad"].error


def test_siblings_can_swap_names_and_take_a_freed_name(store: SharedList) -> None:
    add(
        store,
        acct("S", "Sales"),
        acct("E", "East", "S"),
        acct("W", "West", "S"),
        acct("N", "North", "S"),
    )
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    edit(store, "E", name="TMP")  # the store itself needs a free name to swap through
    edit(store, "W", name="East")
    edit(store, "E", name="West")
    edit(store, "N", name="Northern")
    add(store, acct("N2", "North", "S"))  # a new account takes the name North just gave up
    (r,) = sync(store, links, "m")
    assert r.status == "synced", r.error
    names = {c: meter.book.get(c).name for c in ("E", "W", "N", "N2")}
    assert names == {"E": "West", "W": "East", "N": "Northern", "N2": "North"}
    (again,) = sync(store, links, "m")
    assert again.status == "in-sync"


def test_no_change_needs_no_list_load(store: SharedList, monkeypatch: pytest.MonkeyPatch) -> None:
    _company(store, 5)
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")

    def refuse() -> None:
        raise AssertionError("the list was loaded for a no-change sync")

    monkeypatch.setattr(store, "accounts", refuse)
    (r,) = sync(store, links, "m")
    assert r.status == "in-sync" and r.exchanges == 1


def test_meter_edited_behind_our_back_is_caught(store: SharedList) -> None:
    _company(store, 5)
    meter = make_meter()
    links = Links(m=meter)
    sync(store, links, "m")
    meter.book.put("E1", "ENG", "Edited here")  # a supervisor at the keypad
    (r,) = sync(store, links, "m")
    assert r.status == "synced"
    assert meter.book.get("E1").name == "Team 1"
