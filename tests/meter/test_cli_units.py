"""Pure parts of the CLI: postage parsing (no float) and the multi-account summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.cli import BadInput, default_serial, format_mills, parse_mills, summary_lines
from protocol.messages import AccountEntry


@pytest.mark.parametrize(
    ("text", "mills"),
    [("0.730", 730), ("0.1", 100), ("12", 12_000), ("1.5", 1_500), ("0.001", 1), (".25", 250),
     ("1234567.891", 1_234_567_891)],
)
def test_parse_mills(text: str, mills: int) -> None:
    assert parse_mills(text) == mills


@pytest.mark.parametrize("text", ["0.7305", "-1", "1e3", "abc", "", ".", "1.2.3", "nan", "+1"])
def test_parse_mills_refuses(text: str) -> None:
    with pytest.raises(BadInput):
        parse_mills(text)


def test_format_mills() -> None:
    assert format_mills(2190) == "$2.190"
    assert format_mills(1_234_567_001) == "$1,234,567.001"


def test_default_serial_is_stable_and_from_the_name() -> None:
    assert default_serial(Path("/a/front.nvm")) == default_serial(Path("/b/front.nvm"))
    assert default_serial(Path("front-1.nvm")) != default_serial(Path("front-2.nvm"))


def _e(number: int, code: str, parent: str, name: str, pieces: int = 0, mills: int = 0
       ) -> AccountEntry:
    return AccountEntry(number, code, parent, name, True, number != 0, False, pieces > 0,
                        pieces=pieces, postage_mills=mills)


def test_summary_numbers_subtotals_and_totals() -> None:
    entries = [
        _e(0, "eng", "", "Engineering"),
        _e(0, "sw", "eng", "Software"),
        _e(1, "swt", "sw", "Testing", 3, 2_190),
        _e(3, "swd", "sw", "Design", 1, 500),
        _e(2, "id", "eng", "Industrial", 2, 1_000),
        _e(4, "ops", "", "Operations", 5, 10),
    ]
    lines = summary_lines(entries)
    text = "\n".join(lines)
    eng = next(line for line in lines if line.strip() == "Engineering")
    assert eng.startswith("     ")  # a parent line carries no number
    assert any("Subtotal Software" in line and "$2.690" in line and " 4 " in line
               for line in lines)
    assert any("Subtotal Engineering" in line and "$3.690" in line for line in lines)
    assert lines[-1].split()[:2] == ["Total", "11"] and lines[-1].endswith("$3.700")
    assert text.index("Testing") < text.index("Subtotal Software") < text.index("Industrial")
