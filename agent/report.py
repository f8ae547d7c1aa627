"""Counters back: the multi-account summary report (DOMAIN 13) and ``meter-sync report``.

``protocol.client.read_all_accounts`` reads every page of READ_ACCOUNTS; ``summary``
turns the entries into a :class:`Report` (tree order, numbers only on lowest-level
lines, a subtotal per parent, grand totals).  Postage is integer mills throughout
(DOMAIN 7); :func:`dollars` formats it with integer arithmetic only.

CLI::

    meter-sync report --port P [--format table|csv|json] [--baud N]
    meter-sync report --all --inventory FILE [--output FILE.csv]

Exit codes: 0 ok, 1 failed (meter unreachable), 2 bad input, 3 refused by the meter.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.csvio import write_private
from agent.inventory import InventoryError, MeterTarget, load_inventory
from protocol.client import MeterClient, MeterError, read_all_accounts
from protocol.link import LinkError
from protocol.messages import AccountEntry, Identify

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3

#: How a handler reaches a meter: ``connect(port, baud)`` -> a client that has said HELLO.
ConnectFn = Callable[[str, int], MeterClient]

#: Restarts of a read when the list's size changes under it (e.g. a front-panel edit).

ALL_COLUMNS = (
    "meter_serial",
    "meter_name",
    "number",
    "path",
    "code",
    "active",
    "pieces",
    "postage",
    "postage_mills",
)
METER_COLUMNS = (
    "kind",
    "number",
    "path",
    "code",
    "active",
    "chargeable",
    "pieces",
    "postage",
    "postage_mills",
)
PATH_SEPARATOR = " > "


def default_connect(port: str, baud: int) -> MeterClient:
    return MeterClient.connect(port, baudrate=baud)


# --------------------------------------------------------------------------- reading


# --------------------------------------------------------------------------- the report


def dollars(mills: int) -> str:
    """Integer mills as dollars with three decimals (730 -> "0.730"); no float involved."""
    if not isinstance(mills, int) or isinstance(mills, bool):
        raise TypeError("postage is integer mills")
    sign = "-" if mills < 0 else ""
    mills = abs(mills)
    return f"{sign}{mills // 1000}.{mills % 1000:03d}"


@dataclass(frozen=True)
class ReportLine:
    """One account of the summary.  A parent carries the subtotal of everything below it."""

    number: int  # 0 on parent (administrative) lines: numbers only on lowest-level lines
    code: str
    path: tuple[str, ...]  # names from the top level down to this account
    active: bool
    chargeable: bool
    pieces: int
    postage_mills: int

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def is_subtotal(self) -> bool:
        return not self.chargeable


@dataclass(frozen=True)
class MeterInfo:
    serial: str
    model: str
    firmware: str
    capacity: int

    @classmethod
    def from_identify(cls, ident: Identify) -> MeterInfo:
        return cls(ident.serial, ident.model, ident.firmware, ident.capacity)


@dataclass(frozen=True)
class Report:
    meter: MeterInfo
    lines: tuple[ReportLine, ...]  # tree order, parents before their children
    pieces: int  # grand totals (lowest-level accounts only)
    postage_mills: int

    @property
    def lowest(self) -> list[ReportLine]:
        return [line for line in self.lines if line.chargeable]


def summary(identity: Identify | MeterInfo, entries: Sequence[AccountEntry]) -> Report:
    """The multi-account summary of ``entries`` (as read from the meter).

    Subtotals and totals are computed here from the lowest-level accounts; the
    counters the meter sends for parent entries are not trusted.  An account is
    lowest-level when nothing names it as parent.
    """
    info = identity if isinstance(identity, MeterInfo) else MeterInfo.from_identify(identity)
    by_code = {e.code: e for e in entries}
    children: dict[str, list[AccountEntry]] = {}
    roots: list[AccountEntry] = []
    for e in entries:
        if e.parent_code and e.parent_code in by_code:
            children.setdefault(e.parent_code, []).append(e)
        else:
            roots.append(e)

    lines: list[ReportLine] = []

    def visit(entry: AccountEntry, path: tuple[str, ...]) -> tuple[int, int]:
        path = (*path, entry.name)
        kids = children.get(entry.code, [])
        index = len(lines)
        lines.append(ReportLine(0, "", (), False, False, 0, 0))  # placeholder
        if not kids:
            pieces, mills = entry.pieces, entry.postage_mills
            lines[index] = ReportLine(
                entry.number, entry.code, path, entry.active, True, pieces, mills
            )
            return pieces, mills
        pieces = mills = 0
        for kid in kids:
            p, m = visit(kid, path)
            pieces += p
            mills += m
        lines[index] = ReportLine(0, entry.code, path, entry.active, False, pieces, mills)
        return pieces, mills

    pieces = mills = 0
    for root in roots:
        p, m = visit(root, ())
        pieces += p
        mills += m
    if len(lines) != len(entries):
        raise ValueError("the account list has a cycle (some accounts are unreachable)")
    return Report(info, tuple(lines), pieces, mills)


def read_report(client: MeterClient) -> Report:
    """HELLO already said (``client.identity``); read the list and summarise it."""
    ident = client.identity or client.hello()
    return summary(ident, read_all_accounts(client))


# --------------------------------------------------------------------------- rendering


def report_json(report: Report) -> dict[str, Any]:
    m = report.meter
    return {
        "meter": {
            "serial": m.serial,
            "model": m.model,
            "firmware": m.firmware,
            "capacity": m.capacity,
        },
        "accounts": [
            {
                "number": line.number,
                "path": list(line.path),
                "code": line.code,
                "active": line.active,
                "chargeable": line.chargeable,
                "pieces": line.pieces,
                "postage_mills": line.postage_mills,
            }
            for line in report.lines
        ],
        "totals": {"pieces": report.pieces, "postage_mills": report.postage_mills},
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def report_csv(report: Report) -> str:
    """One meter: every line (kind account/subtotal) and a final total row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METER_COLUMNS)
    for line in report.lines:
        w.writerow(
            [
                "account" if line.chargeable else "subtotal",
                line.number if line.chargeable else "",
                PATH_SEPARATOR.join(line.path),
                line.code,
                _yes(line.active),
                _yes(line.chargeable),
                line.pieces,
                dollars(line.postage_mills),
                line.postage_mills,
            ]
        )
    w.writerow(
        [
            "total",
            "",
            "",
            "",
            "",
            "",
            report.pieces,
            dollars(report.postage_mills),
            report.postage_mills,
        ]
    )
    return buf.getvalue()


_Row = tuple[str, str, str, str, str]


def _text_rows(report: Report) -> list[tuple[bool, _Row]]:
    """(is a total, (number, label, status, pieces, postage)); subtotals follow subtrees."""
    rows: list[tuple[bool, _Row]] = []
    pending: list[ReportLine] = []  # open parents, innermost last

    def close_until(depth: int) -> None:
        while pending and pending[-1].depth >= depth:
            p = pending.pop()
            label = "  " * p.depth + f"Subtotal {p.name}"
            rows.append((True, ("", label, "", str(p.pieces), dollars(p.postage_mills))))

    for line in report.lines:
        close_until(line.depth)
        status = "" if line.active else "inactive"
        if line.chargeable:
            label = "  " * line.depth + line.name
            counts = (str(line.pieces), dollars(line.postage_mills))
            rows.append((False, (str(line.number), label, status, *counts)))
        else:
            rows.append((False, ("", "  " * line.depth + line.name, status, "", "")))
            pending.append(line)
    close_until(0)
    grand = ("", "Grand total", "", str(report.pieces), dollars(report.postage_mills))
    rows.append((True, grand))
    return rows


def _title(report: Report) -> str:
    m = report.meter
    return f"{m.model} {m.serial} (firmware {m.firmware}, capacity {m.capacity})"


def report_text(report: Report) -> str:
    """Plain text (not a terminal): fixed columns."""
    head = ("Number", "Account", "Status", "Pieces", "Postage $")
    rows = [head, *(r for _, r in _text_rows(report))]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = [_title(report)]
    for r in rows:
        out.append(
            f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
            f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}".rstrip()
        )
    return "\n".join(out) + "\n"


def print_rich_table(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(_title(report)))
    table.add_column("Number", justify="right")
    table.add_column("Account")
    table.add_column("Status")
    table.add_column("Pieces", justify="right")
    table.add_column("Postage $", justify="right")
    for total, r in _text_rows(report):
        table.add_row(*(escape(c) for c in r), style="bold" if total else None)
    Console(file=sys.stdout, highlight=False).print(table)


def fleet_rows(target: MeterTarget, report: Report) -> list[list[object]]:
    """The accounting department's rows: lowest-level accounts only, no subtotals."""
    return [
        [
            report.meter.serial,
            target.label,
            line.number,
            PATH_SEPARATOR.join(line.path),
            line.code,
            _yes(line.active),
            line.pieces,
            dollars(line.postage_mills),
            line.postage_mills,
        ]
        for line in report.lowest
    ]


def fleet_csv(rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ALL_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- CLI


def _fetch(connect: ConnectFn, port: str, baud: int) -> Report:
    with connect(port, baud) as client:
        return read_report(client)


def _err(msg: str) -> None:
    print(f"meter-sync report: {msg}", file=sys.stderr)


def _one_meter(args: argparse.Namespace, connect: ConnectFn) -> int:
    try:
        report = _fetch(connect, args.port, args.baud)
    except MeterError as exc:
        _err(f"{args.port}: refused: {exc}")
        return EXIT_REFUSED
    except (LinkError, OSError) as exc:
        _err(f"{args.port}: cannot reach the meter: {exc}")
        return EXIT_FAILED
    fmt = args.format or "table"
    if fmt == "json":
        json.dump(report_json(report), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif fmt == "csv":
        sys.stdout.write(report_csv(report))
    elif sys.stdout.isatty():
        print_rich_table(report)
    else:
        sys.stdout.write(report_text(report))
    return EXIT_OK


def _all_meters(args: argparse.Namespace, connect: ConnectFn) -> int:
    if args.format not in (None, "csv"):
        _err("--all writes CSV only")
        return EXIT_BAD_INPUT
    try:
        targets = load_inventory(args.inventory)
    except InventoryError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    rows: list[list[object]] = []
    failed = 0
    for target in targets:
        try:
            report = _fetch(connect, target.port, target.baud)
        except MeterError as exc:
            _err(f"{target.label} ({target.port}): refused: {exc}")
            failed += 1
            continue
        except (LinkError, OSError) as exc:
            _err(f"{target.label} ({target.port}): cannot reach the meter: {exc}")
            failed += 1
            continue
        rows.extend(fleet_rows(target, report))
    text = fleet_csv(rows)
    if args.output:
        try:
            write_private(args.output, text)  # atomic; counters are the firm's money
        except OSError as exc:
            _err(f"{args.output}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
        print(
            f"{args.output}: {len(rows)} accounts from {len(targets) - failed} of "
            f"{len(targets)} meters"
        )
    else:
        sys.stdout.write(text)
    if failed:
        _err(f"{failed} of {len(targets)} meters failed")
        return EXIT_FAILED
    return EXIT_OK


def cmd_report(args: argparse.Namespace, connect: ConnectFn | None = None) -> int:
    """``meter-sync report``; ``connect`` is injectable (tests pass an in-process meter)."""
    connect = connect or default_connect
    if args.all:
        if not args.inventory:
            _err("--all needs --inventory FILE")
            return EXIT_BAD_INPUT
        return _all_meters(args, connect)
    if args.inventory or args.output:
        _err("--inventory and --output go with --all")
        return EXIT_BAD_INPUT
    if not args.port:
        _err("give --port PORT (or --all --inventory FILE)")
        return EXIT_BAD_INPUT
    return _one_meter(args, connect)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="read a meter's counters: multi-account summary with subtotals and totals",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--port", metavar="PORT", help="the meter's port (device path or URL)")
    which.add_argument("--all", action="store_true", help="every meter of --inventory into one CSV")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default=None,
        help="output for one meter (default table; --all is always CSV)",
    )
    p.add_argument("--inventory", metavar="FILE", help="the fleet inventory (TOML), with --all")
    p.add_argument("--output", metavar="FILE", help="with --all: write the CSV here (atomically)")
    p.set_defaults(func=cmd_report)
