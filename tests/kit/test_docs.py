"""docs/TESTING.md: every python block is a test file; run them all in a fresh session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "TESTING.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    return [(m[1], m[2].strip(), m[3]) for m in BLOCK.finditer(DOC.read_text())]


def test_every_python_block_is_a_named_test_file() -> None:
    python = [(lang, name) for lang, name, _ in blocks() if lang == "python"]
    assert len(python) >= 5
    for _, name in python:
        assert re.fullmatch(r"test_\w+\.py", name), f"untagged python block: {name!r}"


@pytest.mark.e2e
def test_the_tutorial_runs(pytester: pytest.Pytester) -> None:
    files = {name[:-3]: code for lang, name, code in blocks() if lang == "python"}
    pytester.makepyfile(**files)
    expected = sum(len(re.findall(r"^def test_", c, re.M)) for c in files.values())
    expected += sum(len(re.findall(r"^Test\w+ = \w+\.TestCase", c, re.M)) for c in files.values())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=expected)
