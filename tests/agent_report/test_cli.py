"""`meter-sync report` with the connect function injected (no pty)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest

from agent import report
from agent.cli import build_parser, main
from firmware_sim.meter import Meter
from protocol.client import MeterClient, MeterError
from protocol.errors import ErrorCode
from protocol.messages import Error, Hello

from .conftest import build_meter, connect_to


def run(
    capsys: pytest.CaptureFixture[str], meters: dict[str, Meter], *argv: str
) -> tuple[int, str, str]:
    args = build_parser().parse_args(["report", *argv])
    assert args.func is report.cmd_report
    code = report.cmd_report(args, connect=connect_to(meters))
    out, err = capsys.readouterr()
    return code, out, err


def test_json(capsys: pytest.CaptureFixture[str], meter: Meter) -> None:
    code, out, err = run(capsys, {"mem://a": meter}, "--port", "mem://a", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == ["meter", "accounts", "totals"]
    assert set(doc["meter"]) == {"serial", "model", "firmware", "capacity"}
    assert all(
        set(a) == {"number", "path", "code", "active", "chargeable", "pieces", "postage_mills"}
        for a in doc["accounts"]
    )
    assert doc["totals"] == {"pieces": 20, "postage_mills": 1243832}


def test_csv_and_plain_table(capsys: pytest.CaptureFixture[str], meter: Meter) -> None:
    code, out, _ = run(capsys, {"p": meter}, "--port", "p", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[-1]["kind"] == "total" and rows[-1]["postage_mills"] == "1243832"
    code, out, _ = run(capsys, {"p": meter}, "--port", "p")
    assert code == 0
    assert "Subtotal West" in out and "\x1b[" not in out and "┏" not in out
    assert out.splitlines()[-1].split()[-2:] == ["20", "1243.832"]


def test_rich_table_on_a_terminal(
    capsys: pytest.CaptureFixture[str], meter: Meter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, {"p": meter}, "--port", "p", "--format", "table")
    assert code == 0
    assert "Grand total" in out and "1243.832" in out and "Subtotal Sales" in out
    assert "┏" in out and "Number" in out  # a rich table, not the plain text


def test_unreachable_exit_1_refused_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, {}, "--port", "/dev/nothing")
    assert code == 1 and out == "" and "cannot reach" in err

    def refuse(port: str, baud: int) -> MeterClient:
        raise MeterError(Error(ErrorCode.UNSUPPORTED_VERSION, message="no"), Hello(1))

    args = build_parser().parse_args(["report", "--port", "x"])
    assert report.cmd_report(args, connect=refuse) == 3
    assert "refused" in capsys.readouterr().err


def _inventory(tmp_path: Path, *ports: tuple[str, str]) -> Path:
    text = "".join(f'[[meter]]\nname = "{name}"\nport = "{port}"\n\n' for name, port in ports)
    path = tmp_path / "meters.toml"
    path.write_text(text)
    return path


def test_all_one_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meters = {"mem://a": build_meter("A-1"), "mem://b": build_meter("B-2")}
    meters["mem://b"].book.charge("L", None, 1, 5, meters["mem://b"].today())
    inv = _inventory(
        tmp_path, ("mailroom", "mem://a"), ("attic", "mem://gone"), ("reception", "mem://b")
    )
    out_csv = tmp_path / "counters.csv"
    code, out, err = run(capsys, meters, "--all", "--inventory", str(inv), "--output", str(out_csv))
    assert code == 1
    assert "attic (mem://gone): cannot reach" in err
    assert "10 accounts from 2 of 3 meters" in out
    text = out_csv.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(report.ALL_COLUMNS)
    body = rows[1:]
    assert len(body) == 10  # 5 lowest-level accounts per meter, no subtotals, no totals
    assert {r[0] for r in body} == {"A-1", "B-2"}
    assert {r[1] for r in body} == {"mailroom", "reception"}
    assert "Sales" not in {r[3] for r in body}
    retail = next(r for r in body if r[0] == "A-1" and r[4] == "SWR")
    num = meters["mem://a"].book.get("SWR").number
    assert retail == ["A-1", "mailroom", str(num), "Sales > West > Retail", "SWR", "yes", "10",
                      "7.300", "7300"]
    legal_b = next(r for r in body if r[0] == "B-2" and r[4] == "L")
    assert legal_b[6:] == ["1", "0.005", "5"]
    fleet = next(r for r in body if r[0] == "A-1" and r[4] == "OF")
    assert fleet[5] == "no" and fleet[7] == "1234.567"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_all_ok_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inventory(tmp_path, ("m", "mem://a"))
    code, out, err = run(capsys, {"mem://a": build_meter()}, "--all", "--inventory", str(inv))
    assert code == 0, err
    assert out.startswith(",".join(report.ALL_COLUMNS) + "\n") and len(out.splitlines()) == 6


def test_all_output_replaced_atomically_not_truncated_on_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = _inventory(tmp_path, ("m", "mem://a"))
    out_csv = tmp_path / "c.csv"
    out_csv.write_text("old\n")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)  # the one atomic writer (agent.csvio) uses it
    code, _, err = run(
        capsys, {"mem://a": build_meter()}, "--all", "--inventory", str(inv), "--output",
        str(out_csv)
    )
    assert code == 2 and "No space left" in err
    assert out_csv.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "meters.toml"]


def test_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, {}, "--all")[0] == 2
    code, _, err = run(capsys, {}, "--all", "--inventory", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[meter]]\nname = "x"\n')
    code, _, err = run(capsys, {}, "--all", "--inventory", str(bad))
    assert code == 2 and "'port' is required" in err
    inv = _inventory(tmp_path, ("m", "mem://a"))
    assert run(capsys, {}, "--all", "--inventory", str(inv), "--format", "json")[0] == 2
    assert run(capsys, {}, "--port", "p", "--output", "x.csv")[0] == 2


def test_registered_in_meter_sync(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--all", "--inventory", str(tmp_path / "none.toml")])
    assert code == 2
    assert "cannot read" in capsys.readouterr().err
