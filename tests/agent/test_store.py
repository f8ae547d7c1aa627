"""The SQLite store: permissions, migrations, transactions, products, history."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.store import (
    MIGRATIONS,
    Change,
    SharedAccount,
    SharedList,
    StoreError,
)
from protocol.digest import list_digest
from protocol.records import AccountRecord


def acc(code: str, parent: str = "", **kw: Any) -> SharedAccount:
    return SharedAccount(code=code, name=str(kw.pop("name", code)), parent_code=parent, **kw)


def test_created_0600_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "list.db"
    with SharedList.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.apply([Change(after=acc("A"), source="test")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not Path(f"{path}-journal").exists()
    os.chmod(path, 0o644)
    with SharedList.open(path) as store:  # reopening keeps data and tightens the mode
        assert [a.code for a in store.accounts()] == ["A"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.db"
    SharedList.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SharedList.open(path)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError):
        SharedList.open(path)


def test_apply_is_all_or_nothing(tmp_path: Path) -> None:
    with SharedList.open(tmp_path / "l.db") as store:
        store.apply([Change(after=acc("A"), source="t")])
        bad = [
            Change(after=acc("B"), source="t"),
            Change(after=acc("C", name="A"), source="t"),  # sibling name clash
        ]
        with pytest.raises(StoreError):
            store.apply(bad)
        assert [a.code for a in store.accounts()] == ["A"]
        assert len(store.history()) == 1
        with pytest.raises(StoreError):  # parent must exist (checked at commit)
            store.apply([Change(after=acc("D", parent="NOPE"), source="t")])
        assert store.get("D") is None


def test_accounts_parents_before_children_and_to_record(tmp_path: Path) -> None:
    with SharedList.open(tmp_path / "l.db") as store:
        store.apply(
            [
                Change(after=acc("SS", parent="S"), source="t"),
                Change(after=acc("S", parent="T"), source="t"),
                Change(after=acc("T", password_enabled=True, password="abcd"), source="t"),
                Change(after=acc("U"), source="t"),
            ]
        )
        codes = [a.code for a in store.accounts()]
        assert codes.index("T") < codes.index("S") < codes.index("SS")
        t = store.get("T")
        assert t is not None
        assert "abcd" not in repr(t)
        assert t.to_record() == AccountRecord(
            code="T", parent_code="", name="T", password_enabled=True, password="abcd"
        )
        ss = store.get("SS")
        assert ss is not None and ss.to_record().parent_code == "S"
        digest = list_digest(a.to_record() for a in store.accounts())
        assert len(digest) == 16


def test_products(tmp_path: Path) -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with SharedList.open(tmp_path / "l.db") as store:
        store.record_product("0401234", "DM800i", "add-keep", when)
        [p] = store.products()
        assert (p.serial, p.model, p.choice, p.attached_at, p.in_sync) == (
            "0401234", "DM800i", "add-keep", when, False
        )
        store.mark_synced("0401234", b"\x01" * 16, when)
        p2 = store.product("0401234")
        assert p2 is not None and p2.in_sync and p2.last_digest == b"\x01" * 16
        assert p2.last_sync_at == when
        store.apply([Change(after=acc("A"), source="t")])  # the list changed
        p3 = store.product("0401234")
        assert p3 is not None and not p3.in_sync
        store.mark_synced("0401234", b"\x02" * 16, when)
        store.mark_out_of_sync("0401234")
        p4 = store.product("0401234")
        assert p4 is not None and not p4.in_sync
        with pytest.raises(StoreError):
            store.mark_synced("nope", b"", when)


def test_history_never_holds_passwords(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with SharedList.open(path) as store:
        a = acc("A", password_enabled=True, password="Zx9!")
        store.apply([Change(after=a, source="import f.csv:2")], actor="alice")
        b = SharedAccount(code="A", name="A", password_enabled=True, password="Qw3$")
        store.apply([Change(after=b, before=a, source="edit")], actor="bob")
        h = store.history("A")
        assert [(e.actor, e.source, e.action) for e in h] == [
            ("alice", "import f.csv:2", "add"),
            ("bob", "edit", "update"),
        ]
        assert h[1].changes == {"password": "password changed"}
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT changes FROM history").fetchall()
    raw.close()
    assert rows and all("Zx9!" not in r[0] and "Qw3$" not in r[0] for r in rows)
