"""The planner against the real meter model: any change of list applies cleanly."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.plan import make_plan, project
from firmware_sim.accounts import AccountBook, AccountError, Settings
from protocol import strategies as mst
from protocol.records import AccountRecord

TODAY = dt.date(2026, 11, 22)


def _load(records: list[AccountRecord]) -> AccountBook:
    book = AccountBook(Settings(capacity=3000))
    for r in records:
        book.put(r.code, r.parent_code, r.name, r.active, r.password_enabled, r.password or None)
    return book


@st.composite
def changed_lists(draw: st.DrawFn, before: list[AccountRecord]) -> list[AccountRecord]:
    """``before`` with sibling names permuted, leaves dropped, accounts added (some
    taking freed names) and statuses toggled: still a valid list."""
    kids: dict[str, list[AccountRecord]] = defaultdict(list)
    for r in before:
        kids[r.parent_code].append(r)
    renamed: dict[str, str] = {}
    for group in kids.values():
        if len(group) > 1 and draw(st.booleans()):
            names = [r.name for r in group]
            shuffled = draw(st.permutations(names))
            renamed.update({r.code: n for r, n in zip(group, shuffled, strict=True)})
    parents = {r.parent_code for r in before}
    dropped = {r.code for r in before if r.code not in parents and draw(st.integers(0, 4)) == 0}
    after = [
        replace(
            r, name=renamed.get(r.code, r.name), active=r.active ^ (draw(st.integers(0, 5)) == 0)
        )
        for r in before
        if r.code not in dropped
    ]
    depth = {"": 0}
    for r in before:
        depth[r.code] = depth[r.parent_code] + 1
    freed = [(r.parent_code, r.name) for r in before if r.code in dropped]
    for i in range(draw(st.integers(0, 4))):
        if freed and draw(st.booleans()):
            parent, name = freed.pop()
        else:
            parent = draw(st.sampled_from(["", *(r.code for r in after if depth[r.code] < 3)]))
            name = f"New {i}"
        if parent and parent not in {r.code for r in after}:
            continue
        siblings = {r.name for r in after if r.parent_code == parent}
        if name not in siblings:
            after.append(AccountRecord(code=f"NEW{i}", parent_code=parent, name=name))
            depth[f"NEW{i}"] = depth[parent] + 1
    return after


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_change_of_list_applies_cleanly_and_keeps_counters(data: st.DataObject) -> None:
    before = data.draw(mst.account_lists(capacity=3000, min_size=1, max_size=14))
    book = _load(before)
    for rec in book.records(include_passwords=True):
        if rec.chargeable and data.draw(st.booleans()):
            try:
                book.charge(rec.number, rec.password, 2, 150, TODAY)
            except AccountError:
                pass  # inactive: cannot be charged
    charged = book.totals()
    after = data.draw(changed_lists(before))
    plan = make_plan(project(after), book.records(include_passwords=True), capacity=3000)
    assert not plan.problems, plan.problems
    staged = book.copy()
    for code in plan.deletes:  # the order the sync sends them in
        staged.delete(code)
    for p in plan.puts:
        staged.put(p.code, p.parent_code, p.name, p.active, p.password_enabled, p.password)
    assert staged.digest() == plan.target_digest
    assert staged.totals() == charged  # no counter lost
    again = make_plan(project(after), staged.records(include_passwords=True), capacity=3000)
    assert again.empty, again.changes
