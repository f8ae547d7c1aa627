"""summary(): tree order, numbers on lowest lines only, subtotals, grand totals; dollars()."""

from __future__ import annotations

import csv
import io

import pytest

from agent.report import (
    MeterInfo,
    Report,
    dollars,
    read_report,
    report_csv,
    report_json,
    report_text,
    summary,
)
from firmware_sim.meter import Meter
from protocol.messages import AccountEntry

from .conftest import client_for


def _report(meter: Meter) -> Report:
    with client_for(meter) as client:
        return read_report(client)


@pytest.mark.parametrize(
    ("mills", "text"),
    [(0, "0.000"), (5, "0.005"), (730, "0.730"), (1000, "1.000"), (1234567, "1234.567"),
     (-730, "-0.730")],
)
def test_dollars(mills: int, text: str) -> None:
    assert dollars(mills) == text


def test_dollars_refuses_float() -> None:
    with pytest.raises(TypeError):
        dollars(0.73)  # type: ignore[arg-type]


def test_subtotals_and_grand_totals(meter: Meter) -> None:
    report = _report(meter)
    got = {line.code: (line.number != 0, line.pieces, line.postage_mills) for line in report.lines}
    assert got == {
        "S": (False, 16, 9265),
        "SE": (True, 5, 1235),
        "SW": (False, 11, 8030),
        "SWR": (True, 10, 7300),
        "SWO": (True, 1, 730),
        "L": (True, 0, 0),
        "O": (False, 4, 1234567),
        "OF": (True, 4, 1234567),
    }
    assert (report.pieces, report.postage_mills) == (20, 1243832)
    assert [line.code for line in report.lines] == ["S", "SE", "SW", "SWR", "SWO", "L", "O", "OF"]
    assert report.lines[3].path == ("Sales", "West", "Retail")
    assert [line.code for line in report.lowest] == ["SE", "SWR", "SWO", "L", "OF"]
    assert report.meter.serial == "0401234" and report.meter.model == "DM800i"


def test_parent_counters_from_the_meter_are_not_trusted() -> None:
    ident = MeterInfo("X1", "DM800i", "fw", 25)
    entries = [
        AccountEntry(0, "P", "", "Parent", True, False, False, True, pieces=999, postage_mills=999),
        AccountEntry(7, "PC", "P", "Child", True, True, False, True, pieces=2, postage_mills=40),
    ]
    report = summary(ident, entries)
    assert (report.lines[0].pieces, report.lines[0].postage_mills) == (2, 40)
    assert (report.pieces, report.postage_mills) == (2, 40)
    assert report.lines[1].number == 7


def test_json_shape_exactly(meter: Meter) -> None:
    n = {code: meter.book.get(code).number for code in ("SE", "SWR", "SWO", "L", "OF")}
    doc = report_json(_report(meter))

    def acc(number: int, path: list[str], code: str, active: bool, chargeable: bool,
            pieces: int, mills: int) -> dict[str, object]:
        return {"number": number, "path": path, "code": code, "active": active,
                "chargeable": chargeable, "pieces": pieces, "postage_mills": mills}

    assert doc == {
        "meter": {"serial": "0401234", "model": "DM800i", "firmware": meter.firmware,
                  "capacity": 25},
        "accounts": [
            acc(0, ["Sales"], "S", True, False, 16, 9265),
            acc(n["SE"], ["Sales", "East"], "SE", True, True, 5, 1235),
            acc(0, ["Sales", "West"], "SW", True, False, 11, 8030),
            acc(n["SWR"], ["Sales", "West", "Retail"], "SWR", True, True, 10, 7300),
            acc(n["SWO"], ["Sales", "West", "Online"], "SWO", True, True, 1, 730),
            acc(n["L"], ["Legal"], "L", True, True, 0, 0),
            acc(0, ["Ops"], "O", True, False, 4, 1234567),
            acc(n["OF"], ["Ops", "Fleet"], "OF", False, True, 4, 1234567),
        ],
        "totals": {"pieces": 20, "postage_mills": 1243832},
    }


def test_csv_one_meter(meter: Meter) -> None:
    rows = list(csv.DictReader(io.StringIO(report_csv(_report(meter)))))
    assert [r["kind"] for r in rows] == ["subtotal", "account", "subtotal", "account", "account",
                                         "account", "subtotal", "account", "total"]
    assert all(r["number"] == "" for r in rows if r["kind"] != "account")
    assert all(r["number"].isdigit() and r["number"] != "0" for r in rows if r["kind"] == "account")
    west = rows[2]
    assert (west["path"], west["pieces"], west["postage"], west["postage_mills"]) == (
        "Sales > West", "11", "8.030", "8030")
    assert rows[-1]["pieces"] == "20" and rows[-1]["postage"] == "1243.832"
    assert rows[7]["active"] == "no" and rows[7]["postage"] == "1234.567"


def test_text_numbers_only_on_lowest_lines_subtotal_after_subtree(meter: Meter) -> None:
    text = report_text(_report(meter))
    lines = text.splitlines()
    assert "DM800i 0401234" in lines[0]
    body = lines[2:]
    labels = [line[8:].strip().split("  ")[0] for line in body]
    assert labels == ["Sales", "East", "West", "Retail", "Online", "Subtotal West",
                      "Subtotal Sales", "Legal", "Ops", "Fleet", "Subtotal Ops", "Grand total"]
    numbered = [lab for lab, line in zip(labels, body, strict=True) if line[:6].strip()]
    assert numbered == ["East", "Retail", "Online", "Legal", "Fleet"]
    assert body[5].split()[-2:] == ["11", "8.030"]
    assert body[-1].split()[-2:] == ["20", "1243.832"]
    assert "inactive" in body[9]
