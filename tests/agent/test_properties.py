"""Hypothesis: round trips through both formats, and update-mode edits."""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.csvio import Format, export_rows, export_text, import_file, render_csv
from agent.rules import RULES, Policy, PolicyKind, check_value, quick_ok, rules_for
from agent.store import Change, SharedAccount, SharedList, tree_order

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CA = Policy()

names = st.text(string.ascii_letters + string.digits + " .,#()!?", min_size=1, max_size=20).filter(
    lambda s: not check_value("name", s, "Name", 1, CA) and not s.startswith("Z")
)
codes = st.text(string.ascii_letters + string.digits + "._", min_size=1, max_size=8)
free_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40
)
passwords = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=4,
    max_size=4,
)


@st.composite
def accounts_for(draw: st.DrawFn, fmt: Format) -> list[SharedAccount]:
    out: list[SharedAccount] = []
    used: set[str] = set()

    def make(parent: str) -> SharedAccount:
        code = draw(codes.filter(lambda c: c not in used))
        used.add(code)
        pw = draw(st.one_of(st.just(""), passwords))
        full = fmt is Format.PITNEYSHIP
        acc = SharedAccount(
            code=code,
            name="",
            parent_code=parent,
            description=draw(free_text),
            active=draw(st.booleans()),
            password_enabled=bool(pw),
            password=pw,
            billable=draw(st.booleans()) if full else False,
            access_level=draw(st.sampled_from(["", "E", "D", "L"])) if full else "",
            access_level_value=draw(free_text) if full else "",
            division=draw(free_text) if full else "",
            archived=draw(st.booleans()),
        )
        return replace(acc, active=acc.active and not acc.archived)

    def level(parent: str, depth: int) -> None:
        if depth == 3:
            return
        for name in draw(st.lists(names, max_size=3 if depth else 4, unique=True)):
            acc = replace(make(parent), name=name)
            out.append(acc)
            level(acc.code, depth + 1)

    level("", 0)
    return out


@contextmanager
def fresh_store() -> Iterator[tuple[SharedList, Path]]:
    with tempfile.TemporaryDirectory() as tmp, SharedList.open(Path(tmp) / "l.db") as store:
        yield store, Path(tmp)


def seed(store: SharedList, accounts: list[SharedAccount]) -> None:
    store.apply([Change(after=a, source="test") for a in accounts])


@SETTINGS
@given(data=st.data(), fmt=st.sampled_from(list(Format)))
def test_export_import_round_trip(data: st.DataObject, fmt: Format) -> None:
    accounts = data.draw(accounts_for(fmt))
    with fresh_store() as (store, tmp), fresh_store() as (other, _):
        seed(store, accounts)
        path = tmp / "out.csv"
        path.write_text(export_text(store.accounts(), fmt), encoding="utf-8", newline="")
        again = import_file(store, path)
        assert again.ok, again.error_lines()
        assert again.changes == [] and again.unchanged == len(accounts)
        plan = import_file(other, path)
        assert plan.ok, plan.error_lines()
        assert other.accounts() == store.accounts()


@st.composite
def edits(draw: st.DrawFn, accounts: list[SharedAccount]) -> tuple[list[SharedAccount], set[str]]:
    """The expected list after an update-mode file, and the codes the file names."""
    by_code = {a.code: a for a in accounts}
    touched: set[str] = set()
    for acc in accounts:
        kind = draw(st.sampled_from(["keep", "keep", "rename", "status", "describe", "password"]))
        if kind == "keep":
            if draw(st.booleans()):
                touched.add(acc.code)  # in the file, unchanged
            continue
        touched.add(acc.code)
        if kind == "rename":
            new = replace(acc, name=f"Z9 {acc.code}")
        elif kind == "status":
            new = replace(acc, active=not acc.active, archived=False)
        elif kind == "describe":
            new = replace(acc, description=draw(free_text))
        else:
            pw = draw(st.one_of(st.just(""), passwords))
            new = replace(acc, password_enabled=bool(pw), password=pw)
        by_code[acc.code] = new
    parents = [""] + [a.code for a in accounts if not a.parent_code]
    parents += [
        a.code for a in accounts if a.parent_code and not by_code[a.parent_code].parent_code
    ]
    for i in range(draw(st.integers(0, 4))):
        parent = draw(st.sampled_from(parents))
        code = f"N{i}"
        by_code[code] = SharedAccount(code=code, name=f"Z8 {i}", parent_code=parent)
        touched.add(code)
    return tree_order(by_code.values()), touched


@SETTINGS
@given(data=st.data())
def test_update_mode_edits_give_the_expected_store(data: st.DataObject) -> None:
    accounts = data.draw(accounts_for(Format.PITNEYSHIP))
    expected, touched = data.draw(edits(accounts))
    rows = export_rows(expected, Format.PITNEYSHIP)
    by_code = {a.code: a for a in expected}
    order = [a for a in expected if a.code in touched]
    data.draw(st.randoms()).shuffle(order)  # parents may come after children
    lines = [rows[0]] + [
        rows[1 + expected.index(by_code[a.code])] for a in order
    ]
    with fresh_store() as (store, tmp):
        seed(store, accounts)
        path = tmp / "edit.csv"
        path.write_text(render_csv(lines), encoding="utf-8", newline="")
        plan = import_file(store, path)
        assert plan.ok, plan.error_lines()
        assert {a.code: a for a in store.accounts()} == by_code
        assert plan.left_alone == len(accounts) - len(touched & {a.code for a in accounts})


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["name", "code", "description", "password", "status", "bool", "yn"]),
    value=st.text(min_size=1, max_size=160),
    policy=st.sampled_from(
        [CA, Policy(PolicyKind.STANDALONE), Policy(PolicyKind.STANDALONE, hierarchy_display=False)]
    ),
)
def test_fast_path_never_accepts_what_the_rules_refuse(
    kind: str, value: str, policy: Policy
) -> None:
    if quick_ok(kind, value, policy):
        for rule in rules_for(kind, policy):
            assert rule.check is not None
            assert rule.check(value, policy) is None, rule.name


def test_fast_path_covers_every_value_rule() -> None:
    assert {r.name for r in RULES if r.check} == {
        r.name
        for kind in ("name", "code", "description", "password", "status", "bool", "yn",
                     "access-level")
        for p in (CA, Policy(PolicyKind.STANDALONE))
        for r in rules_for(kind, p)
    }
