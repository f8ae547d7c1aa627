from __future__ import annotations

from agent.plan import SUB_NAME_MAX, TOP_NAME_MAX, make_plan, project
from protocol.messages import AccountEntry
from protocol.records import AccountRecord


def rec(code: str, name: str, parent: str = "", **kw: object) -> AccountRecord:
    return AccountRecord(code=code, parent_code=parent, name=name, **kw)  # type: ignore[arg-type]


def entry(code: str, name: str, parent: str = "", number: int = 0, **kw: object) -> AccountEntry:
    base = dict(active=True, chargeable=number != 0, password_enabled=False, ever_charged=False)
    base.update(kw)
    return AccountEntry(number=number, code=code, parent_code=parent, name=name, **base)  # type: ignore[arg-type]


def test_shortening_is_deterministic_and_keeps_siblings_distinct() -> None:
    records = [
        rec("T", "A" * 40),
        rec("s1", "Software Engineering Group", "T"),
        rec("s2", "Software Engineering Guild", "T"),
        rec("s3", "Software Enginee", "T"),  # already exactly the cut of the others
    ]
    first = project(records)
    again = project(reversed(records))
    assert {r.code: r.name for r in first.records} == {r.code: r.name for r in again.records}
    names = {r.code: r.name for r in first.records}
    assert len(names["T"]) == TOP_NAME_MAX
    subs = [names["s1"], names["s2"], names["s3"]]
    assert len(set(subs)) == 3 and all(len(n) <= SUB_NAME_MAX for n in subs)
    assert names["s3"] == "Software Enginee"  # a name that fits is never changed
    assert {s.code for s in first.shortenings} == {"T", "s1", "s2"}
    assert all(s.old != s.new for s in first.shortenings)


def test_plan_on_empty_meter_adds_parents_first() -> None:
    proj = project([rec("c", "Child", "p"), rec("p", "Parent")])
    plan = make_plan(proj, [], capacity=25)
    assert [p.code for p in plan.puts] == ["p", "c"]
    assert plan.counts() == {"add": 2}


def test_roll_down_is_announced_with_the_counters() -> None:
    meter = [entry("eng", "Engineering", number=1, pieces=4, postage_mills=2920, ever_charged=True)]
    plan = make_plan(
        project(
            [rec("eng", "Engineering"), rec("sw", "Software", "eng"), rec("id", "Design", "eng")]
        ),
        meter,
        25,
    )
    rolls = [c for c in plan.changes if c.kind == "roll-down"]
    assert len(rolls) == 1 and rolls[0].code == "sw"
    assert "#1" in rolls[0].detail and "2920 mills" in rolls[0].detail


def test_charged_accounts_are_deactivated_not_deleted() -> None:
    meter = [
        entry("a", "Kept", number=1),
        entry("b", "Charged", number=2, ever_charged=True),
        entry("c", "Never used", number=3),
    ]
    plan = make_plan(project([rec("a", "Kept")]), meter, 25)
    assert plan.deletes == ["c"]
    assert [(p.code, p.active) for p in plan.puts] == [("b", False)]
    assert {r.code for r in plan.target} == {"a", "b"}  # b stays, inactive, with its history


def test_parent_of_charged_history_is_kept() -> None:
    meter = [entry("p", "Parent"), entry("c", "Child", "p", number=1, ever_charged=True)]
    plan = make_plan(project([]), meter, 25)
    assert plan.deletes == []
    assert {(p.code, p.active) for p in plan.puts} == {("p", False), ("c", False)}


def test_over_capacity_is_refused_with_the_numbers() -> None:
    proj = project([rec(f"a{i}", f"Account {i}") for i in range(26)])
    plan = make_plan(proj, [], capacity=25)
    assert plan.over_capacity
    assert "26" in plan.problems[-1] and "25" in plan.problems[-1]
    assert "Cannot create any more accounts" in plan.problems[-1]


def test_first_child_does_not_need_capacity() -> None:
    meter = [entry(f"a{i}", f"A{i}", number=i + 1) for i in range(25)]
    proj = project([*(rec(f"a{i}", f"A{i}") for i in range(25)), rec("kid", "Kid", "a0")])
    assert not make_plan(proj, meter, 25).over_capacity


def test_moves_are_problems_and_renames_are_changes() -> None:
    meter = [entry("p", "P"), entry("q", "Q", number=2), entry("c", "C", "p", number=1)]
    plan = make_plan(project([rec("p", "P"), rec("q", "Q2"), rec("c", "C", "q")]), meter, 25)
    assert any("moving from parent" in p for p in plan.problems)
    assert [c.kind for c in plan.changes] == ["rename"]


def test_no_change_plan_is_empty_and_digest_matches() -> None:
    from protocol.digest import list_digest

    records = [rec("p", "P"), rec("c", "C", "p", password_enabled=True, password="abcd")]
    meter = [
        entry("p", "P"),
        entry("c", "C", "p", number=1, password_enabled=True, password="abcd"),
    ]
    plan = make_plan(project(records), meter, 25)
    assert plan.empty
    assert plan.target_digest == list_digest(records)


def test_history_account_gives_its_name_to_a_new_shared_account() -> None:
    meter = [entry("old", "Mailroom", number=1, ever_charged=True, pieces=3)]
    plan = make_plan(project([rec("new", "Mailroom")]), meter, 25)
    kept = {r.code: r for r in plan.target}
    assert kept["old"].name == "Mailroom~2" and not kept["old"].active
    assert kept["new"].name == "Mailroom"
    assert [p.code for p in plan.puts] == ["old", "new"]  # the name is freed first


def test_name_swap_goes_through_temporary_names() -> None:
    meter = [entry("p", "P"), entry("a", "Alpha", "p", number=1), entry("b", "Beta", "p", number=2)]
    plan = make_plan(
        project([rec("p", "P"), rec("a", "Beta", "p"), rec("b", "Alpha", "p")]), meter, 25
    )
    names: dict[str, str] = {"a": "Alpha", "b": "Beta"}
    for put in plan.puts:  # replay the puts: sibling names unique after every one
        names[put.code] = put.name
        assert len(set(names.values())) == len(names), plan.puts
    assert names == {"a": "Beta", "b": "Alpha"}
