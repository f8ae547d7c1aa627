"""Import behaviour: hierarchy resolution, modes, real spreadsheet output, export."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.csvio import (
    COST_ACCOUNTING_COLUMNS,
    Format,
    ImportPlan,
    Mode,
    export_file,
    export_text,
    import_file,
    template_text,
    write_private,
)
from agent.store import SharedList

from .helpers import ca, ps, snapshot, top, write


def sub(name: str, parent: str, code: str = "", **kw: str) -> dict[str, str]:
    return {"Name": name, "Code": code, "Status": "TRUE", "ParentName": parent, **kw}


def subsub(name: str, parent: str, grand: str, code: str = "", **kw: str) -> dict[str, str]:
    return {**sub(name, parent, code, **kw), "NextParentName": grand}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SharedList]:
    with SharedList.open(tmp_path / "list.db") as s:
        yield s


def load(store: SharedList, tmp_path: Path, text: str | bytes, **kw: Any) -> ImportPlan:
    plan = import_file(store, write(tmp_path / "in.csv", text), **kw)
    assert plan.ok, plan.error_lines()
    return plan


def tree(store: SharedList) -> list[tuple[str, str, str]]:
    return [(a.code, a.parent_code, a.name) for a in store.accounts()]


def test_rows_in_any_order_and_code_defaults_to_name(store: SharedList, tmp_path: Path) -> None:
    text = ps(
        subsub("Software Testing", "Software", "Engineering", "ST"),
        sub("Industrial Design", "Engineering", "ID"),
        sub("Software", "Engineering"),
        top("Engineering", "ENG"),
    )
    plan = load(store, tmp_path, text)
    assert len(plan.added) == 4
    assert sorted(tree(store)) == sorted(
        [
            ("ENG", "", "Engineering"),
            ("Software", "ENG", "Software"),
            ("ID", "ENG", "Industrial Design"),
            ("ST", "Software", "Software Testing"),
        ]
    )
    assert tree(store)[0][0] == "ENG", "parents come before children"


def test_same_sub_name_under_two_tops_resolves_by_next_parent(
    store: SharedList, tmp_path: Path
) -> None:
    text = ps(
        top("East", "E"),
        top("West", "W"),
        sub("Sales", "East", "ES"),
        sub("Sales", "West", "WS"),
        subsub("Mail", "Sales", "West", "WSM"),
        subsub("Mail", "Sales", "East", "ESM"),
    )
    load(store, tmp_path, text)
    got = store.get("WSM")
    assert got is not None and got.parent_code == "WS"
    got = store.get("ESM")
    assert got is not None and got.parent_code == "ES"


def test_parents_already_in_store(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("Engineering", "ENG"), sub("Software", "Engineering", "SW")))
    plan = load(store, tmp_path, ps(subsub("QA", "Software", "Engineering", "QA")))
    assert [a.code for a in plan.added] == ["QA"]
    assert plan.left_alone == 2
    qa = store.get("QA")
    assert qa is not None and qa.parent_code == "SW"


def test_update_mode_changes_and_leaves_others_alone(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("A", "A"), top("B", "B"), top("C", "C")))
    plan = load(store, tmp_path, ps(top("A renamed", "A"), {"Name": "B", "Code": "B",
                                                          "Status": "FALSE"}))
    assert [c.after.code for c in plan.changed] == ["A"]
    assert plan.changed[0].fields == ("name",)
    assert [c.after.code for c in plan.deactivated] == ["B"]
    assert plan.left_alone == 1
    c = store.get("C")
    assert c is not None and c.active
    history = store.history("A")
    assert history[-1].changes == {"name": ["A", "A renamed"]}
    assert history[-1].source == "import in.csv:2"


def test_replace_mode_deactivates_absent_never_deletes(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("A", "A"), top("B", "B"), sub("B1", "B", "B1")))
    plan = load(store, tmp_path, ps(top("A", "A")), mode=Mode.REPLACE)
    assert sorted(c.after.code for c in plan.deactivated) == ["B", "B1"]
    assert plan.unchanged == 1
    assert len(store.accounts()) == 3
    assert [a.code for a in store.accounts() if a.active] == ["A"]
    again = load(store, tmp_path, ps(top("A", "A")), mode=Mode.REPLACE)
    assert again.changes == [] and again.left_alone == 2


def test_siblings_may_swap_names_in_one_import(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("X", "1"), top("Y", "2")))
    load(store, tmp_path, ps(top("Y", "1"), top("X", "2")))
    assert tree(store) == [("1", "", "Y"), ("2", "", "X")]


def test_empty_code_matches_existing_account_by_place(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("Sales", "S-1".replace("-", ""))))
    plan = load(store, tmp_path, ps(top("Sales", Description="now described")))
    assert [c.after.code for c in plan.changed] == ["S1"]
    assert plan.added == []


def test_password_kept_when_enabled_without_code(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("A", "A", PasswordEnabled="TRUE", PasswordCode="k3y!")))
    plan = load(store, tmp_path, ps(top("A", "A", PasswordEnabled="TRUE")))
    assert plan.changes == []
    got = store.get("A")
    assert got is not None and got.password == "k3y!"
    load(store, tmp_path, ps(top("A", "A", PasswordEnabled="FALSE")))
    got = store.get("A")
    assert got is not None and not got.password_enabled and got.password == ""
    changes = store.history("A")[-1].changes
    assert changes["password"] == "password changed"
    assert "k3y!" not in repr(store.history())


def test_archive_deactivates_and_delete_y_too(store: SharedList, tmp_path: Path) -> None:
    load(store, tmp_path, ps(top("A", "A", Archive="TRUE")))
    a = store.get("A")
    assert a is not None and a.archived and not a.active
    load(
        store,
        tmp_path,
        ca({"AccountName": "B", "AccountCode": "B", "Status": "Y", "Delete": "Y"}),
    )
    b = store.get("B")
    assert b is not None and b.archived and not b.active


def test_spreadsheet_output(store: SharedList, tmp_path: Path) -> None:
    text = (
        "\ufeff name , CODE,status,Description,Division name,,,\r\n"
        '"Smith, Jones and Co",SJ,TRUE,"He said ""hi"", twice",North,,,\r\n'
        ",,,,,,,\r\n"
        "Other,O,TRUE,,,,,\r\n"
    )
    load(store, tmp_path, text)
    sj = store.get("SJ")
    assert sj is not None
    assert (sj.name, sj.description, sj.division) == (
        "Smith, Jones and Co",
        'He said "hi", twice',
        "North",
    )
    assert store.get("O") is not None


def test_cost_accounting_format(store: SharedList, tmp_path: Path) -> None:
    text = "# Cost Accounting export\n" + ca(
        {"AccountName": "Eng", "AccountCode": "E", "Status": "Y"},
        {"AccountName": "Eng", "SubAccountName": "SW", "AccountCode": "E",
         "SubAccountCode": "E1", "Status": "Y", "Password": "abcd"},
        {"AccountName": "Eng", "SubAccountName": "SW", "SubSubAccountName": "QA",
         "Status": "N", "Description": "tests, mostly"},
    )
    plain = ",".join(COST_ACCOUNTING_COLUMNS)
    assert plain in text
    fancy = plain.replace("Status", "Status (Y/N)").replace("Delete", "Delete (Y/N)")
    text = text.replace(plain, fancy)
    plan = load(store, tmp_path, text)
    assert plan.fmt is Format.COST_ACCOUNTING
    assert tree(store) == [("E", "", "Eng"), ("E1", "E", "SW"), ("QA", "E1", "QA")]
    e1 = store.get("E1")
    assert e1 is not None and e1.password_enabled and e1.password == "abcd"
    qa = store.get("QA")
    assert qa is not None and not qa.active and qa.description == "tests, mostly"


def test_dry_run_writes_nothing(store: SharedList, tmp_path: Path) -> None:
    before = snapshot(store)
    plan = load(store, tmp_path, ps(top("A", "A")), dry_run=True)
    assert len(plan.added) == 1
    assert snapshot(store) == before


@pytest.mark.parametrize("fmt", list(Format))
def test_export_then_import_changes_nothing(
    store: SharedList, tmp_path: Path, fmt: Format
) -> None:
    example = Path(__file__).parents[2] / "examples" / "shared-list.csv"
    plan = import_file(store, example)
    assert plan.ok and len(plan.added) >= 30
    out = tmp_path / f"out-{fmt}.csv"
    export_file(store.accounts(), out, fmt)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    again = import_file(store, out)
    assert again.ok and again.changes == [] and again.unchanged == len(store.accounts())
    with SharedList.open(tmp_path / "fresh.db") as fresh:
        assert import_file(fresh, out).ok
        if fmt is Format.PITNEYSHIP:
            assert fresh.accounts() == store.accounts()
        else:  # the service's format has no Billable column
            assert [a.to_record() for a in fresh.accounts()] == [
                a.to_record() for a in store.accounts()
            ]


def test_example_has_names_to_shorten(store: SharedList) -> None:
    example = Path(__file__).parents[2] / "examples" / "shared-list.csv"
    assert import_file(store, example).ok
    accounts = store.accounts()
    assert any(len(a.name) > 32 for a in accounts if not a.parent_code)
    assert any(len(a.name) > 16 for a in accounts if a.parent_code)
    assert any(a.password_enabled for a in accounts)
    codes = {a.code: a for a in accounts}
    assert any(codes[a.parent_code].parent_code for a in accounts if a.parent_code)


def test_export_quotes_hash_names_so_they_are_not_comments(
    store: SharedList, tmp_path: Path
) -> None:
    load(store, tmp_path, ps(top("#1 Priority", "P1")))
    text = export_text(store.accounts(), Format.COST_ACCOUNTING)
    assert '"#1 Priority"' in text
    write(tmp_path / "again.csv", text)
    assert import_file(store, tmp_path / "again.csv").changes == []


def test_template_and_private_writes(tmp_path: Path) -> None:
    assert template_text().startswith("Name,Code,Status,")
    assert template_text(Format.COST_ACCOUNTING).startswith("AccountName,")
    target = tmp_path / "t.csv"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"], "no temp file left behind"


def test_five_thousand_rows(store: SharedList, tmp_path: Path) -> None:
    rows = []
    for t in range(50):
        rows.append(top(f"Dept {t}", f"T{t}"))
        for s in range(9):
            rows.append(sub(f"Team {s}", f"Dept {t}", f"T{t}S{s}"))
            for u in range(10):
                pw = {"PasswordEnabled": "TRUE", "PasswordCode": f"{u:04d}"} if u % 3 == 0 else {}
                rows.append(subsub(f"Unit {u}", f"Team {s}", f"Dept {t}", f"T{t}S{s}U{u}", **pw))
    rows.reverse()  # children before parents
    plan = load(store, tmp_path, ps(*rows))
    assert len(plan.added) == len(rows) == 50 * (1 + 9 * 11)
    assert store.count() == len(rows)
    leaf = store.get("T49S8U9")
    assert leaf is not None and leaf.parent_code == "T49S8"
    bad = [*rows, top("Dept 3", "DUP")]
    plan = import_file(store, write(tmp_path / "bad.csv", ps(*bad)))
    assert [(i.line, i.rule) for i in plan.issues] == [(len(bad) + 1, "sibling-name-unique")]
