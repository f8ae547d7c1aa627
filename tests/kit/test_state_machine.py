"""MeterStateMachine: in process (fast), a user subclass, and that it can fail."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from firmware_sim.meter import Meter
from firmware_sim.testing import MeterStateMachine, ReferenceModel
from protocol.messages import Ack, Auth, RunMail

FAST = settings(
    max_examples=50, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_meter_agrees_with_the_reference_model() -> None:
    run_state_machine_as_test(MeterStateMachine, settings=FAST)


class WithPasswordChecks(MeterStateMachine):
    """A user subclass: one more rule, using the machine's client and model."""

    @rule(attempts=st.integers(1, 3))
    def wrong_supervisor_password_changes_nothing(self, attempts: int) -> None:
        for _ in range(attempts):
            self.expect(self._refused_auth, Auth("definitely-wrong"))
        self.client.call(Auth(self.supervisor_password or ""), expect=Ack)
        self.staged = None  # a refused AUTH outside a transaction; AUTH again

    def _refused_auth(self) -> None:
        from firmware_sim.testing import ModelRefusal
        from protocol.errors import ErrorCode

        if self.staged is not None:  # AUTH is not in the transaction's table
            raise ModelRefusal({ErrorCode.NO_TRANSACTION})
        raise ModelRefusal({ErrorCode.BAD_SUPERVISOR_PASSWORD})


def test_a_user_subclass_adds_rules(
    meter_state_machine: Callable[..., None],
) -> None:
    meter_state_machine(WithPasswordChecks, settings=settings(FAST, max_examples=10))


def test_the_machine_catches_a_meter_that_loses_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the meter (runs of an even number of pieces are charged no postage):
    the machine notices."""
    original = Meter._mail

    def lossy(self: Meter, msg: RunMail, now: float):  # type: ignore[no-untyped-def]
        if msg.pieces % 2 == 0 and msg.postage_mills:
            msg = RunMail(msg.number, msg.password, msg.pieces, 0, msg.duration_ms)
        return original(self, msg, now)

    from firmware_sim import meter as meter_module

    monkeypatch.setitem(
        meter_module.TRANSITIONS, (meter_module.State.SUPERVISOR, RunMail), (lossy, None)
    )
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            MeterStateMachine,
            settings=settings(FAST, max_examples=60, database=None, phases=[Phase.generate]),
        )


def test_model_predicts_roll_down() -> None:
    from protocol.messages import PutRecord

    model = ReferenceModel(capacity=25)
    model.put(PutRecord("a", "", "A", password_enabled=True, password="Abcd"))
    model.accounts["a"].number = 1
    model.put(PutRecord("b", "a", "B", password_enabled=True))
    assert model.accounts["b"].number == 1 and model.accounts["b"].password == "Abcd"
    assert model.accounts["a"].number == 0 and [a.code for a in model.chargeable()] == ["b"]
