"""The meterlink pytest plugin: virtual meters as fixtures (docs/TESTING.md).

Installed with meterlink through the ``pytest11`` entry point, so ``pip install
meterlink`` is enough.  Fixtures:

* ``virtual_meter`` — a fresh ``meter-sim serve --pty`` subprocess
  (a :class:`firmware_sim.testing.VirtualMeter`), stopped and cleaned after the test.
* ``meter_link`` — an open :class:`protocol.client.MeterClient` (HELLO done) to it.
* ``inprocess_meter`` — an :class:`firmware_sim.testing.InProcessMeter`: no pty,
  no subprocess, for fast unit tests.
* ``meter_factory`` — ``meter_factory(**options)`` starts more meters (all
  stopped after the test); ``meter_factory.in_process(**options)`` too.
* ``meter_config`` — the :class:`firmware_sim.testing.MeterConfig` of the test.
* ``meter_port`` — the ``--meter-port`` URL, or None.
* ``meter_state_machine`` — ``meter_state_machine(MachineClass, settings=None)``
  runs a :class:`firmware_sim.testing.MeterStateMachine` in process, or against
  ``--meter-port``.

Marker: ``@pytest.mark.meter(capacity=100, baud=9600, latency_ms=0, fault="...",
seed=1, accounts=[...], supervisor_password="...", serial="...")``.

Options:

* ``--meter-port URL`` — use that (real or already running) meter instead of
  spawning one; its supervisor password comes from ``$METER_SUPERVISOR_PASSWORD``.
  Line options of the marker (baud, latency, fault) do not apply to it; its
  ``accounts`` are created or updated on it.
* ``--meter-trace DIR`` — keep the ``meter-sim --trace`` file of each *failing*
  test in DIR (``<test id>.trace``); passing tests' traces are removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.testing import (
    InProcessMeter,
    MeterConfig,
    MeterPool,
    TestMeter,
    VirtualMeter,
)
from protocol.client import MeterClient

PASSWORD_ENV = "METER_SUPERVISOR_PASSWORD"  # noqa: S105 - a variable name
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meterlink", "meterlink virtual meter")
    group.addoption(
        "--meter-port",
        metavar="URL",
        default=None,
        help="run the meter fixtures against this meter (a pty path, a device or a pyserial "
        f"URL) instead of spawning meter-sim; supervisor password from ${PASSWORD_ENV}",
    )
    group.addoption(
        "--meter-trace",
        metavar="DIR",
        default=None,
        help="keep the frame trace of every failing test's virtual meters in DIR",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "meter(capacity=25, baud=None, latency_ms=0, fault=None, seed=0, accounts=(), "
        "supervisor_password=None, serial=None): configure the meterlink meter fixtures",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report: ``meter_factory`` keeps traces of failed tests."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(item: pytest.Item) -> bool:
    return any(r.failed for r in item.stash.get(_REPORTS, {}).values())


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200] or "test"


@pytest.fixture
def meter_port(pytestconfig: pytest.Config) -> str | None:
    """The ``--meter-port`` URL, or None when the fixtures spawn their own meters."""
    port: str | None = pytestconfig.getoption("--meter-port")
    return port


@pytest.fixture
def meter_config(request: pytest.FixtureRequest) -> MeterConfig:
    """The test's meter options (the closest ``@pytest.mark.meter``)."""
    marker = request.node.get_closest_marker("meter")
    if marker is None:
        return MeterConfig()
    if marker.args:
        raise pytest.UsageError("@pytest.mark.meter takes keyword arguments only")
    return MeterConfig.from_kwargs(**marker.kwargs)


class MeterFactory:
    """``meter_factory(**options)``: one more meter for this test (stopped afterwards)."""

    def __init__(self, pool: MeterPool) -> None:
        self.pool = pool

    def __call__(self, **options: Any) -> TestMeter:
        return self.pool.new(**options)

    def in_process(self, **options: Any) -> InProcessMeter:
        return self.pool.in_process(**options)


@pytest.fixture
def meter_factory(
    request: pytest.FixtureRequest,
    pytestconfig: pytest.Config,
    meter_config: MeterConfig,
    meter_port: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MeterFactory]:
    """Start meters with ``meter_factory(**options)``; all are stopped after the test."""
    trace_opt = pytestconfig.getoption("--meter-trace")
    trace_dir = None
    if trace_opt and meter_port is None:
        trace_dir = Path(pytestconfig.invocation_params.dir, trace_opt)
        trace_dir.mkdir(parents=True, exist_ok=True)
    pool = MeterPool(
        base=meter_config,
        workdir=tmp_path_factory.mktemp("meter", numbered=True),
        trace_dir=trace_dir,
        trace_stem=_safe_name(request.node.nodeid),
        external_port=meter_port,
        external_password=os.environ.get(PASSWORD_ENV, ""),
    )
    try:
        yield MeterFactory(pool)
    finally:
        traces = pool.traces()
        pool.stop_all()
        if not _failed(request.node):
            for path in traces:
                path.unlink(missing_ok=True)


@pytest.fixture
def virtual_meter(meter_factory: MeterFactory) -> TestMeter:
    """A fresh virtual meter on a real pty (``meter-sim serve --pty`` in a subprocess).

    With ``--meter-port`` it is that meter instead (never started or stopped).
    """
    return meter_factory()


@pytest.fixture
def meter_link(virtual_meter: TestMeter) -> MeterClient:
    """An open protocol link to ``virtual_meter`` (a ``MeterClient`` after HELLO)."""
    return virtual_meter.client()


@pytest.fixture
def inprocess_meter(meter_config: MeterConfig) -> Iterator[InProcessMeter]:
    """A meter in this process (``Meter`` + ``InProcessLink``): no pty, no subprocess."""
    meter = InProcessMeter(meter_config)
    try:
        yield meter
    finally:
        meter.stop()


@pytest.fixture
def meter_state_machine(meter_port: str | None) -> Callable[..., None]:
    """``meter_state_machine(Machine, settings=None)``: run a ``MeterStateMachine``.

    In process by default; with ``--meter-port`` against that meter.
    """
    from hypothesis.stateful import run_state_machine_as_test

    from firmware_sim.testing import MeterStateMachine

    def run(machine: type[MeterStateMachine], settings: Any = None) -> None:
        cls = machine
        if meter_port is not None:
            cls = machine.bind(url=meter_port, supervisor_password=os.environ.get(PASSWORD_ENV))
        run_state_machine_as_test(cls, settings=settings)

    return run


__all__ = ["MeterFactory", "VirtualMeter"]
