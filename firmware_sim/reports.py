"""Meter reports (DOMAIN 13) as data, plus a plain-text renderer.

* single account: number, pieces, postage;
* account list: names and numbers;
* multi-account summary: lines in tree order, numbers only on lowest-level lines, a
  subtotal line after the accounts below each parent, grand totals at the end.

Postage is integer mills; the renderer shows dollars with 3 decimals using integer
arithmetic only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware_sim.accounts import AccountBook

__all__ = [
    "AccountListLine",
    "LineKind",
    "SingleReport",
    "SummaryLine",
    "SummaryReport",
    "account_list",
    "format_mills",
    "render_account_list",
    "render_single",
    "render_summary",
    "single_account",
    "summary",
]


@dataclass(frozen=True, slots=True)
class SingleReport:
    number: int
    path: tuple[str, ...]  # names from the top level down
    pieces: int
    postage_mills: int
    active: bool


@dataclass(frozen=True, slots=True)
class AccountListLine:
    depth: int  # 1 = top level
    name: str
    number: int  # 0 for administrative accounts
    active: bool


class LineKind(StrEnum):
    ACCOUNT = "account"  # a lowest-level (chargeable) account
    HEADING = "heading"  # a parent, before the accounts below it
    SUBTOTAL = "subtotal"  # a parent's totals, after the accounts below it


@dataclass(frozen=True, slots=True)
class SummaryLine:
    kind: LineKind
    depth: int
    name: str
    number: int | None  # only on ACCOUNT lines
    pieces: int | None  # None on HEADING lines
    postage_mills: int | None
    active: bool = True


@dataclass(frozen=True, slots=True)
class SummaryReport:
    lines: tuple[SummaryLine, ...]
    total_pieces: int
    total_postage_mills: int


def single_account(book: AccountBook, account: int | str) -> SingleReport:
    """Report one lowest-level account, by number (int) or code (str)."""
    code = account if isinstance(account, str) else book.code_of(account)
    rec = book.get(code)
    return SingleReport(rec.number, tuple(book.path(code)), rec.pieces, rec.postage_mills,
                        rec.active)


def account_list(book: AccountBook) -> list[AccountListLine]:
    return [
        AccountListLine(book.depth(r.code), r.name, r.number, r.active) for r in book.records()
    ]


def summary(book: AccountBook) -> SummaryReport:
    records = book.records()
    lines: list[SummaryLine] = []
    open_parents: list[tuple[str, SummaryLine]] = []  # (code, subtotal line) stack

    def close_until(parent_code: str) -> None:
        while open_parents and open_parents[-1][0] != parent_code:
            lines.append(open_parents.pop()[1])

    total_pieces = total_mills = 0
    for rec in records:
        close_until(rec.parent_code)
        depth = len(open_parents) + 1
        if rec.chargeable:
            lines.append(SummaryLine(LineKind.ACCOUNT, depth, rec.name, rec.number, rec.pieces,
                                     rec.postage_mills, rec.active))
            total_pieces += rec.pieces
            total_mills += rec.postage_mills
        else:
            lines.append(SummaryLine(LineKind.HEADING, depth, rec.name, None, None, None,
                                     rec.active))
            open_parents.append((rec.code, SummaryLine(
                LineKind.SUBTOTAL, depth, rec.name, None, rec.pieces, rec.postage_mills,
                rec.active)))
    close_until("")
    return SummaryReport(tuple(lines), total_pieces, total_mills)


def format_mills(mills: int) -> str:
    """``1234`` -> ``"$1.234"`` (integer arithmetic, never float)."""
    sign = "-" if mills < 0 else ""
    whole, frac = divmod(abs(mills), 1000)
    return f"{sign}${whole:,}.{frac:03d}"


def render_single(report: SingleReport) -> str:
    return (
        f"Account #{report.number}  {' / '.join(report.path)}"
        f"{'' if report.active else '  (inactive)'}\n"
        f"Pieces:  {report.pieces}\n"
        f"Postage: {format_mills(report.postage_mills)}\n"
    )


def render_account_list(lines: list[AccountListLine]) -> str:
    out = []
    for line in lines:
        number = f"#{line.number}" if line.number else ""
        flag = "" if line.active else "  (inactive)"
        out.append(f"{number:>6}  {'  ' * (line.depth - 1)}{line.name}{flag}")
    return "\n".join(out) + ("\n" if out else "")


def render_summary(report: SummaryReport) -> str:
    out = [f"{'No.':>6}  {'Account':<40} {'Pieces':>10} {'Postage':>16}"]
    for line in report.lines:
        indent = "  " * (line.depth - 1)
        flag = "" if line.active else " (inactive)"
        if line.kind is LineKind.HEADING:
            out.append(f"{'':>6}  {indent}{line.name}{flag}")
            continue
        label = f"{indent}{line.name}{flag}"
        if line.kind is LineKind.SUBTOTAL:
            label = f"{indent}Subtotal {line.name}"
        number = f"#{line.number}" if line.number else ""
        out.append(
            f"{number:>6}  {label:<40} {line.pieces or 0:>10} "
            f"{format_mills(line.postage_mills or 0):>16}"
        )
    out.append(
        f"{'':>6}  {'TOTAL':<40} {report.total_pieces:>10} "
        f"{format_mills(report.total_postage_mills):>16}"
    )
    return "\n".join(out) + "\n"
