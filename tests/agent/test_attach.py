"""Attach: the three choices, duplicates, the three overwritten fields, backup, preview."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.attach import (
    AttachError,
    Choice,
    FileListSource,
    attach,
    write_backup,
)
from agent.csvio import import_file
from agent.store import SharedList
from protocol.records import AccountRecord

from .helpers import ps, snapshot, top, write

SHARED = ps(
    top("Engineering", "ENG", Description="All engineering"),
    {"Name": "Software", "Code": "SW", "Status": "TRUE", "ParentName": "Engineering",
     "Description": "Code", "PasswordEnabled": "TRUE", "PasswordCode": "old1"},
    top("Sales", "SALES", Description="Sales desc"),
)

METER = [
    # same code as a shared account, different name: a duplicate by code
    AccountRecord(code="ENG", name="Eng", active=False, number=0),
    # same name under the same parent, different code: a duplicate by name
    AccountRecord(code="M7", parent_code="ENG", name="Software", password_enabled=True,
                  password="new2", number=1, chargeable=True, pieces=12, postage_mills=6540),
    # new under a duplicate parent
    AccountRecord(code="M8", parent_code="ENG", name="Hardware", number=2, chargeable=True),
    # new top with a new child; listed child first
    AccountRecord(code="M10", parent_code="M9", name="Parcels", number=3, chargeable=True,
                  password_enabled=True, password="pa55"),
    AccountRecord(code="M9", name="Shipping"),
]


class ListSource:
    def __init__(self, records: list[AccountRecord], serial: str = "0401234") -> None:
        self.records = records
        self.serial = serial

    def identify(self) -> tuple[str, str]:
        return self.serial, "DM800i"

    def read_accounts(self) -> list[AccountRecord]:
        return list(self.records)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SharedList]:
    with SharedList.open(tmp_path / "l.db") as s:
        assert import_file(s, write(tmp_path / "shared.csv", SHARED)).ok
        yield s


def test_add_update(store: SharedList) -> None:
    result = attach(store, ListSource(METER), "add-update")
    assert sorted(a.code for a in result.added) == ["M10", "M8", "M9"]
    assert sorted((m, s, why) for m, s, why in result.duplicates) == [
        ("ENG", "ENG", "same code"),
        ("M7", "SW", "same name"),
    ]
    eng = store.get("ENG")
    assert eng is not None
    # Status overwritten; name and description kept (the meter has no description)
    assert (eng.name, eng.active, eng.description) == ("Engineering", False, "All engineering")
    sw = store.get("SW")
    assert sw is not None and sw.password == "new2" and sw.description == "Code"
    hw = store.get("M8")
    assert hw is not None and hw.parent_code == "ENG"
    parcels = store.get("M10")
    assert parcels is not None and parcels.parent_code == "M9" and parcels.password == "pa55"
    [product] = store.products()
    assert (product.serial, product.choice, product.in_sync) == ("0401234", "add-update", False)
    assert store.history("SW")[-1].source == "attach DM800i 0401234"


def test_add_keep_changes_no_existing_account(store: SharedList) -> None:
    before = {a.code: a for a in store.accounts()}
    result = attach(store, ListSource(METER), Choice.ADD_KEEP)
    assert sorted(a.code for a in result.added) == ["M10", "M8", "M9"]
    assert result.updated == []
    after = {a.code: a for a in store.accounts()}
    assert all(after[c] == a for c, a in before.items())
    sw = store.get("SW")
    assert sw is not None and sw.password == "old1"


def test_discard_adds_nothing_but_attaches(store: SharedList) -> None:
    before = store.accounts()
    result = attach(store, ListSource(METER), Choice.DISCARD)
    assert result.changes == []
    assert store.accounts() == before
    assert [p.choice for p in store.products()] == ["discard"]


def test_update_touches_only_status_and_password(store: SharedList) -> None:
    renamed = [AccountRecord(code="SALES", name="Sales Dept", active=True,
                             password_enabled=True, password="s4le")]
    result = attach(store, ListSource(renamed), "add-update")
    [change] = result.updated
    assert set(change.fields) == {"password_enabled", "password"}
    sales = store.get("SALES")
    assert sales is not None and sales.name == "Sales" and sales.description == "Sales desc"


def test_backup_and_preview_change_nothing(store: SharedList, tmp_path: Path) -> None:
    before = snapshot(store)
    backup, preview = tmp_path / "backup.json", tmp_path / "preview.csv"
    result = attach(store, ListSource(METER), "add-update", backup=backup, preview=preview)
    assert result.previewed
    assert snapshot(store) == before and store.products() == []
    for path in (backup, preview):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(backup.read_text())
    assert doc["serial"] == "0401234"
    assert {a["code"]: a["postage_mills"] for a in doc["accounts"]}["M7"] == 6540
    # The preview is an importable shared list: importing it equals doing the attach.
    with SharedList.open(tmp_path / "other.db") as other:
        assert import_file(other, preview).ok
        attach(store, ListSource(METER), "add-update")
        assert [a.to_record() for a in other.accounts()] == [
            a.to_record() for a in store.accounts()
        ]


def test_backup_round_trips_through_file_source(store: SharedList, tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    write_backup(path, "0409999", "DM800i", METER)
    source = FileListSource(path)
    assert source.identify() == ("0409999", "DM800i")
    assert source.read_accounts() == METER
    attach(store, source, "add-keep")
    assert store.product("0409999") is not None


def test_bad_meter_password_refuses_everything(store: SharedList) -> None:
    before = snapshot(store)
    records = [AccountRecord(code="X", name="X", password_enabled=True, password="123456")]
    with pytest.raises(AttachError) as info:
        attach(store, ListSource(records), "add-keep")
    assert any("[meter-password-exactly-4]" in p for p in info.value.problems)
    assert "123456" not in " ".join(info.value.problems) + str(info.value)
    assert snapshot(store) == before and store.products() == []


def test_meter_names_follow_the_policy(store: SharedList) -> None:
    records = [AccountRecord(code="RD", name="R&D")]
    with pytest.raises(AttachError) as info:
        attach(store, ListSource(records), "add-keep")
    assert any("[chars-cost-accounting]" in p for p in info.value.problems)


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"format": "other"}', b'{"format": "meterlink-meter-list", "version": 1,'
     b' "serial": "1", "model": "m", "accounts": [{"code": 5}]}'],
)
def test_bad_backup_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AttachError):
        FileListSource(path).read_accounts()
