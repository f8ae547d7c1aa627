"""Reports (DOMAIN 13): single account, account list, multi-account summary."""

from __future__ import annotations

from firmware_sim.accounts import AccountBook
from firmware_sim.reports import (
    LineKind,
    SummaryLine,
    account_list,
    format_mills,
    render_account_list,
    render_single,
    render_summary,
    single_account,
    summary,
)
from tests.firmware.conftest import TODAY, manual_book


def charged_book() -> AccountBook:
    book = manual_book()
    book.put("ops", "", "Operations")
    book.charge(1, "Eng1", 3, 1_410, TODAY)  # Software Testing
    book.charge(3, "SdPw", 2, 1_001, TODAY)  # Software Design
    book.charge(2, "IdPw", 1, 5, TODAY)  # Industrial Desig
    book.charge(4, None, 10, 123_456, TODAY)  # Operations
    return book


def test_summary_lines_subtotals_and_totals() -> None:
    report = summary(charged_book())
    A, H, S = LineKind.ACCOUNT, LineKind.HEADING, LineKind.SUBTOTAL
    assert report.lines == (
        SummaryLine(H, 1, "Engineering", None, None, None),
        SummaryLine(H, 2, "Software", None, None, None),
        SummaryLine(A, 3, "Software Testing", 1, 3, 1_410),
        SummaryLine(A, 3, "Software Design", 3, 2, 1_001),
        SummaryLine(S, 2, "Software", None, 5, 2_411),
        SummaryLine(A, 2, "Industrial Desig", 2, 1, 5),
        SummaryLine(S, 1, "Engineering", None, 6, 2_416),
        SummaryLine(A, 1, "Operations", 4, 10, 123_456),
    )
    assert (report.total_pieces, report.total_postage_mills) == (16, 125_872)
    # Numbers only on lowest-level lines.
    assert all((line.number is not None) == (line.kind is A) for line in report.lines)


def test_summary_of_an_empty_meter() -> None:
    report = summary(AccountBook())
    assert report.lines == () and report.total_pieces == report.total_postage_mills == 0
    assert "TOTAL" in render_summary(report)


def test_single_and_list() -> None:
    book = charged_book()
    rep = single_account(book, 3)
    assert (rep.number, rep.path, rep.pieces, rep.postage_mills) == (
        3, ("Engineering", "Software", "Software Design"), 2, 1_001)
    assert single_account(book, "swd") == rep
    text = render_single(rep)
    assert "#3" in text and "$1.001" in text and "SdPw" not in text
    lines = account_list(book)
    assert [(x.depth, x.name, x.number) for x in lines] == [
        (1, "Engineering", 0), (2, "Software", 0), (3, "Software Testing", 1),
        (3, "Software Design", 3), (2, "Industrial Desig", 2), (1, "Operations", 4)]
    listing = render_account_list(lines)
    assert "    #1      Software Testing" in listing


def test_money_formatting_is_exact() -> None:
    assert format_mills(0) == "$0.000"
    assert format_mills(5) == "$0.005"
    assert format_mills(1_410) == "$1.410"
    assert format_mills(123_456_789) == "$123,456.789"
    assert format_mills(10**18 + 1) == "$1,000,000,000,000,000.001"  # no float rounding
    text = render_summary(summary(charged_book()))
    assert "Subtotal Software" in text and "$2.411" in text and "$125.872" in text
    assert text.rstrip().splitlines()[-1].split()[-2:] == ["16", "$125.872"]
