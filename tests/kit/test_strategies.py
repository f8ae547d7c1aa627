"""protocol.strategies account lists: the meter accepts the valid ones and refuses
each broken one with the rule's ErrorCode (in process: fast)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim.testing import InProcessMeter, MeterConfig
from protocol import strategies as mst
from protocol.client import MeterError
from protocol.digest import list_digest
from protocol.records import AccountRecord

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _chargeable(records: list[AccountRecord]) -> int:
    parents = {r.parent_code for r in records}
    return sum(1 for r in records if r.code not in parents)


@FAST
@given(records=mst.account_lists(capacity=25, max_size=15))
def test_meter_accepts_every_valid_list(records: list[AccountRecord]) -> None:
    assert _chargeable(records) <= 25
    with InProcessMeter(MeterConfig(capacity=25)) as meter:
        if records:
            committed = meter.load(records)
            assert committed.chargeable == _chargeable(records)
            assert committed.digest == list_digest(records)
        assert len(meter.accounts()) == len(records)


@FAST
@given(case=mst.account_lists_breaking_one_rule(capacity=25))
def test_meter_refuses_each_broken_rule_with_its_code(
    case: tuple[list[AccountRecord], str],
) -> None:
    records, rule = case
    valid, bad = records[:-1], records[-1]
    with InProcessMeter(MeterConfig(capacity=25)) as meter:
        meter.load(valid)  # everything before the last record is fine
        before = meter.accounts()
        try:
            meter.load([bad])
        except MeterError as exc:
            assert exc.code == mst.BROKEN_RULES[rule], (rule, exc)
        else:
            raise AssertionError(f"the meter accepted a list breaking {rule}")
        assert meter.accounts() == before  # refused: nothing changed


@settings(max_examples=30, deadline=None)
@given(case=mst.account_lists_breaking_one_rule(capacity=25), data=st.data())
def test_the_whole_broken_list_in_one_transaction_changes_nothing(
    case: tuple[list[AccountRecord], str], data: st.DataObject
) -> None:
    records, rule = case
    with InProcessMeter(MeterConfig(capacity=25)) as meter:
        try:
            meter.load(records)
        except MeterError as exc:
            assert exc.code == mst.BROKEN_RULES[rule]
        else:
            raise AssertionError(f"accepted {rule}")
        assert meter.accounts() == []


@pytest.mark.parametrize("rule", sorted(mst.BROKEN_RULES))
def test_every_rule_is_reachable(rule: str) -> None:
    # one rule per test: reaching it does not depend on a lucky draw among six
    @settings(max_examples=5, deadline=None, database=None)
    @given(mst.account_lists_breaking_one_rule(capacity=25, rules=(rule,)))
    def check(case: tuple[list[AccountRecord], str]) -> None:
        records, broken = case
        assert broken == rule and records

    check()
