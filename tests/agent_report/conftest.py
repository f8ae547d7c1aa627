"""Meters in this process for the report tests (no pty, no thread)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import pytest

from firmware_sim.meter import Meter
from firmware_sim.testing import InProcessLink
from protocol.client import MeterClient
from protocol.link import LinkError

TODAY = _dt.date(2024, 5, 17)


def build_meter(serial: str = "0401234") -> Meter:
    """Sales > {East, West > {Retail, Online}}, Legal, Ops > Fleet (inactive).

    Hand-computed counters:
        East    5 pieces   1235 mills     (3 @ 1230 + 2 @ 5)
        Retail 10          7300
        Online  1           730
        Legal   0             0
        Fleet   4       1234567
        West subtotal  11 / 8030;  Sales subtotal 16 / 9265;  Ops subtotal 4 / 1234567
        grand total    20 / 1243832
    """
    meter = Meter(serial=serial, today_override=TODAY)
    book = meter.book
    book.put("S", "", "Sales")
    book.put("SE", "S", "East")
    book.put("SW", "S", "West")
    book.put("SWR", "SW", "Retail")
    book.put("SWO", "SW", "Online")
    book.put("L", "", "Legal")
    book.put("O", "", "Ops")
    book.put("OF", "O", "Fleet")
    book.charge("SE", None, 3, 1230, TODAY)
    book.charge("SE", None, 2, 5, TODAY)
    book.charge("SWR", None, 10, 7300, TODAY)
    book.charge("SWO", None, 1, 730, TODAY)
    book.charge("OF", None, 4, 1234567, TODAY)
    book.put("OF", "O", "Fleet", active=False)
    return meter


def client_for(meter: Meter) -> MeterClient:
    client = MeterClient(InProcessLink(meter))
    client.hello()
    return client


def connect_to(meters: dict[str, Meter]) -> Callable[[str, int], MeterClient]:
    """A connect function: known ports reach their meter, others are unreachable."""

    def connect(port: str, baud: int) -> MeterClient:
        if port not in meters:
            raise LinkError(f"cannot open {port}: no such device")
        return client_for(meters[port])

    return connect


@pytest.fixture
def meter() -> Meter:
    return build_meter()
