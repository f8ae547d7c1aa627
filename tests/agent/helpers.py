"""Small builders for shared-list CSV files in tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from agent.csvio import COST_ACCOUNTING_COLUMNS, PITNEYSHIP_COLUMNS
from agent.store import SharedAccount, SharedList


def ps(*rows: dict[str, str], header: tuple[str, ...] = PITNEYSHIP_COLUMNS) -> str:
    """A PitneyShip file: header then one line per row (missing columns empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        unknown = set(row) - set(header)
        assert not unknown, unknown
        writer.writerow([row.get(c, "") for c in header])
    return buf.getvalue()


def ca(*rows: dict[str, str], header: tuple[str, ...] = COST_ACCOUNTING_COLUMNS) -> str:
    """A Cost Accounting service file."""
    return ps(*rows, header=header)


def top(name: str, code: str = "", **kw: str) -> dict[str, str]:
    return {"Name": name, "Code": code, "Status": "TRUE", **kw}


def snapshot(store: SharedList) -> tuple[list[SharedAccount], int, list[str]]:
    """Everything an import may change, passwords included (compared, never printed)."""
    return (
        store.accounts(),
        len(store.history()),
        [a.password for a in store.accounts()],
    )


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path
