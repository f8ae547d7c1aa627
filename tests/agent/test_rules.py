"""One test per rule of the table: a small file that breaks exactly that rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.csvio import import_file
from agent.rules import RULES, RULES_BY_NAME, Policy, PolicyKind, check_value
from agent.store import SharedList

from .helpers import ca, ps, snapshot, top, write

STANDALONE = Policy(PolicyKind.STANDALONE, hierarchy_display=True)
DEFAULT = Policy()

#: An existing shared list some cases need: Ops > Mail > Franking, plus Sales and Legal.
EXISTING = ps(
    top("Ops", "OPS"),
    {"Name": "Mail", "Code": "MAIL", "Status": "TRUE", "ParentName": "Ops"},
    {
        "Name": "Franking",
        "Code": "FRANK",
        "Status": "TRUE",
        "ParentName": "Mail",
        "NextParentName": "Ops",
    },
    top("Sales", "S1"),
    top("Legal", "LEGAL"),
)


@dataclass(frozen=True)
class Case:
    rule: str
    text: str | bytes
    line: int
    column: str
    policy: Policy = DEFAULT
    existing: str | None = None


CASES: list[Case] = [
    Case("file-utf8", b"Name,Status\r\nCaf\xe9,TRUE\r\n", 2, "-"),
    Case("header-format", "Foo,Bar\nx,y\n", 1, "-"),
    Case("header-required-column", "Name,Code\nA,A\n", 1, "Status"),
    Case("header-unknown-column", "Name,Status,Colour\nA,TRUE,red\n", 1, "Colour"),
    Case("header-duplicate-column", "Name,Status,name\nA,TRUE,\n", 1, "Name"),
    Case("row-extra-cells", "Name,Status\nA,TRUE,oops\n", 2, "column 3"),
    Case("name-required", ps(top("", "X")), 2, "Name"),
    Case("name-max-75", ps(top("A" * 76, "A")), 2, "Name"),
    Case("code-max-75", ps(top("A", "C" * 76)), 2, "Code"),
    Case("code-max-255-bytes", ps(top("A", "\U0001f600" * 70)), 2, "Code", STANDALONE),
    Case("no-control-chars", ps(top("A\tB", "AB")), 2, "Name"),
    Case("no-trailing-space", ps(top("Sales ", "S")), 2, "Name"),
    Case("chars-cost-accounting", ps(top("R&D", "RD")), 2, "Name"),
    Case("no-double-space", ps(top("Sales  East", "SE")), 2, "Name"),
    Case("no-leading-space", ps(top(" Sales", "S")), 2, "Name"),
    Case("ascii-only", ps(top("Straße", "STR")), 2, "Name"),
    Case("no-at-on-import", ps(top("A", "A@B")), 2, "Code"),
    Case("no-hyphen-with-hierarchy", ps(top("Sales-East", "SE")), 2, "Name", STANDALONE),
    Case("description-max-150", ps(top("A", Description="d" * 151)), 2, "Description"),
    Case(
        "password-exactly-4",
        ps(top("A", PasswordEnabled="TRUE", PasswordCode="abc")),
        2,
        "PasswordCode",
    ),
    Case(
        "password-required-when-enabled",
        ps(top("A"), top("B", PasswordEnabled="TRUE")),
        3,
        "PasswordCode",
    ),
    Case(
        "password-needs-enabled",
        ps(top("A", PasswordEnabled="FALSE", PasswordCode="abcd")),
        2,
        "PasswordCode",
    ),
    Case("status-required", ps({"Name": "A", "Status": ""}), 2, "Status"),
    Case("status-uppercase-bool", ps({"Name": "A", "Status": "true"}), 2, "Status"),
    Case("bool-uppercase", ps(top("A", Billable="yes")), 2, "Billable"),
    Case("yn-flag", ca({"AccountName": "A", "Status": "yes"}), 2, "Status"),
    Case("access-level-values", ps(top("A", AccessLevel="X")), 2, "AccessLevel"),
    Case("code-unique", ps(top("A", "X"), top("B", "X")), 3, "Code"),
    Case("code-immutable", ps(top("Sales", "S2")), 2, "Code", existing=EXISTING),
    Case(
        "parent-immutable",
        ps({"Name": "Mail", "Code": "MAIL", "Status": "TRUE", "ParentName": "Legal"}),
        2,
        "Code",
        existing=EXISTING,
    ),
    Case("sibling-name-unique", ps(top("A", "X"), top("A", "Y")), 3, "Name"),
    Case(
        "max-depth-3",
        ps(
            {"Name": "Stamps", "Status": "TRUE", "ParentName": "Franking",
             "NextParentName": "Mail"}
        ),
        2,
        "NextParentName",
        existing=EXISTING,
    ),
    Case("parent-exists", ps(top("A"), {"Name": "B", "Status": "TRUE", "ParentName": "Nope"}),
         3, "ParentName"),
    Case(
        "parent-code-matches",
        ca(
            {"AccountName": "A", "AccountCode": "A1", "Status": "Y"},
            {"AccountName": "A", "AccountCode": "A2", "SubAccountName": "S", "Status": "Y"},
        ),
        3,
        "AccountCode",
    ),
    Case(
        "next-parent-consistent",
        ps(top("A"), {"Name": "B", "Status": "TRUE", "NextParentName": "A"}),
        3,
        "NextParentName",
    ),
]

#: Rules enforced outside CSV import (tested with attach).
NOT_CSV = {"meter-password-exactly-4"}


def test_every_rule_has_a_case() -> None:
    covered = {c.rule for c in CASES}
    assert covered | NOT_CSV == set(RULES_BY_NAME)
    assert len(covered) == len(CASES), "one case per rule"


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_rule(case: Case, tmp_path: Path) -> None:
    with SharedList.open(tmp_path / "list.db") as store:
        if case.existing is not None:
            base = import_file(store, write(tmp_path / "base.csv", case.existing))
            assert base.ok, base.error_lines()
        before = snapshot(store)
        path = write(tmp_path / "bad.csv", case.text)
        plan = import_file(store, path, policy=case.policy)
        assert snapshot(store) == before, "a file with an error must import nothing"
    lines = plan.error_lines()
    assert {i.rule for i in plan.issues} == {case.rule}, lines
    expected = f"{path}:{case.line}: {case.column}: "
    assert any(line.startswith(expected) and line.endswith(f"[{case.rule}]") for line in lines), (
        lines
    )
    assert plan.summary().endswith("nothing imported")


def test_rule_names_are_kebab_case_and_explained() -> None:
    for rule in RULES:
        assert rule.name == rule.name.lower() and " " not in rule.name
        assert len(rule.meaning) > 20


@pytest.mark.parametrize(
    ("value", "policy", "ok"),
    [
        ("Back\\Office", STANDALONE, True),  # \ allowed on import without the service
        ("Sales-East", Policy(PolicyKind.STANDALONE, hierarchy_display=False), True),
        ("Sales-East", STANDALONE, False),
        ("Sales  East", STANDALONE, True),
        ("Sales@HQ", STANDALONE, True),
        ("Café", Policy(), False),
        ("Sales 2", Policy(), True),
    ],
)
def test_character_policy(value: str, policy: Policy, ok: bool) -> None:
    assert (check_value("name", value, "Name", 2, policy) == []) is ok


def test_all_errors_are_collected(tmp_path: Path) -> None:
    text = ps(
        top("R&D", "RD"),
        {"Name": "B", "Status": "yes"},
        top("C", Billable="no"),
        {"Name": "D", "Status": "TRUE", "ParentName": "Nowhere"},
    )
    with SharedList.open(tmp_path / "l.db") as store:
        plan = import_file(store, write(tmp_path / "f.csv", text))
        assert store.accounts() == []
    assert [(i.line, i.rule) for i in sorted(plan.issues, key=lambda i: i.line)] == [
        (2, "chars-cost-accounting"),
        (3, "status-uppercase-bool"),
        (4, "bool-uppercase"),
        (5, "parent-exists"),
    ]
    assert plan.summary() == f"{tmp_path / 'f.csv'}: 4 errors; nothing imported"


def test_line_numbers_count_comments_blank_lines_and_multiline_fields(tmp_path: Path) -> None:
    text = (
        "\ufeff# exported by the Cost Accounting service\r\n"
        "# second comment\r\n"
        "AccountName,SubAccountName,SubSubAccountName,AccountCode,SubAccountCode,"
        "SubSubAccountCode,Description,Status,Password,Delete\r\n"
        '"Acme, Inc",,,ACME,,,"two\r\nline, ""quoted"" description",Y,,N\r\n'
        "# a comment between rows\r\n"
        "\r\n"
        "Bad|Name,,,BAD,,,,Y,,N\r\n"
    )
    with SharedList.open(tmp_path / "l.db") as store:
        plan = import_file(store, write(tmp_path / "f.csv", text))
    assert [(i.line, i.column, i.rule) for i in plan.issues] == [
        (8, "AccountName", "chars-cost-accounting")
    ]


def test_password_values_never_appear_in_messages(tmp_path: Path) -> None:
    text = ps(top("A", PasswordEnabled="FALSE", PasswordCode="s3cr"),
              top("B", PasswordEnabled="TRUE", PasswordCode="zq9"))
    with SharedList.open(tmp_path / "l.db") as store:
        plan = import_file(store, write(tmp_path / "f.csv", text))
    joined = "\n".join(plan.error_lines())
    assert "s3cr" not in joined and "zq9" not in joined
    assert len(plan.issues) == 2


def test_docs_explain_every_rule() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "CSV.md").read_text(encoding="utf-8")
    missing = [r.name for r in RULES if f"`{r.name}`" not in doc]
    assert missing == []
