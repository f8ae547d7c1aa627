"""protocol.client.read_all_accounts: every page, meter order, pipelined, robust to short pages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from firmware_sim.accounts import AccountBook, Settings
from firmware_sim.meter import Meter
from protocol.client import MeterClient, MeterError
from protocol.client import read_all_accounts as read_meter_accounts
from protocol.messages import AccountEntry, AccountPage, Message, ReadAccounts

from .conftest import TODAY, client_for


def test_reads_the_whole_list_in_meter_order(meter: Meter) -> None:
    with client_for(meter) as client:
        entries = read_meter_accounts(client)
    assert [e.code for e in entries] == ["S", "SE", "SW", "SWR", "SWO", "L", "O", "OF"]
    by_code = {e.code: e for e in entries}
    assert (by_code["SE"].pieces, by_code["SE"].postage_mills) == (5, 1235)
    assert by_code["SE"].number == meter.book.get("SE").number != 0
    assert by_code["S"].number == 0 and not by_code["S"].chargeable
    assert not by_code["OF"].active


def _big_meter(n: int) -> Meter:
    book = AccountBook(Settings(capacity=100))
    meter = Meter(serial="BIG", book=book, max_payload=200, today_override=TODAY)
    for i in range(n):
        # names of varying length: some pages hold fewer entries than the first one
        meter.book.put(f"T{i}", "", f"Top {i} " + "x" * (i * 7 % 23))
        meter.book.put(f"T{i}C", f"T{i}", f"Child {i}")
        meter.book.charge(f"T{i}C", None, i + 1, 1000 * i + 7, TODAY)
    return meter


def test_many_pages_pipelined_and_gaps_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = _big_meter(40)
    batches: list[int] = []
    real = MeterClient.pipeline

    def spy(self: MeterClient, msgs: Iterable[Message], *a: Any, **kw: Any) -> list[Message]:
        msgs = list(msgs)
        batches.append(sum(isinstance(m, ReadAccounts) for m in msgs))
        return real(self, msgs, *a, **kw)

    monkeypatch.setattr(MeterClient, "pipeline", spy)
    with client_for(meter) as client:
        entries = read_meter_accounts(client)
    assert [e.code for e in entries] == [r.code for r in meter.book.records()]
    assert len(entries) == 80
    assert max(batches) > 1, "pages after the first are pipelined"
    assert len(batches) < 80 // 2


class FakeClient:
    """Serves ACCOUNT_PAGEs from a script of lists (one list per read attempt)."""

    def __init__(self, lists: Sequence[list[AccountEntry]], page: int) -> None:
        self.lists = list(lists)
        self.page = page
        self.calls = 0

    def _serve(self, req: ReadAccounts) -> AccountPage:
        self.calls += 1
        # the list changes after the first request of the first attempt
        current = self.lists[0] if self.calls == 1 or len(self.lists) == 1 else self.lists[1]
        n = min(req.limit, self.page)
        return AccountPage(len(current), req.offset, tuple(current[req.offset : req.offset + n]))

    def call(self, msg: ReadAccounts, expect: object = None) -> AccountPage:
        return self._serve(msg)

    def call_all(self, msgs: Sequence[ReadAccounts], expect: object) -> list[AccountPage]:
        return [self._serve(m) for m in msgs]


def _entry(i: int) -> AccountEntry:
    return AccountEntry(i + 1, f"C{i}", "", f"N{i}", True, True, False, False)


def test_list_changing_under_the_read_restarts() -> None:
    before = [_entry(i) for i in range(5)]
    after = [_entry(i) for i in range(7)]
    fake = FakeClient([before, after], page=2)
    entries = read_meter_accounts(fake)  # type: ignore[arg-type]
    assert entries == after


def test_empty_page_before_the_end_is_malformed() -> None:
    class Stuck(FakeClient):
        def _serve(self, req: ReadAccounts) -> AccountPage:
            page = super()._serve(req)
            return page if req.offset == 0 else AccountPage(page.total, req.offset, ())

    with pytest.raises(MeterError, match="no accounts"):
        read_meter_accounts(Stuck([[_entry(i) for i in range(5)]], page=2))  # type: ignore[arg-type]
