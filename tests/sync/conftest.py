from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.inventory import MeterTarget
from agent.store import Change, SharedAccount, SharedList
from agent.sync import MeterResult, QuietProgress, run_fleet
from firmware_sim.accounts import AccountBook, Settings, Supervisor
from firmware_sim.meter import Meter
from firmware_sim.testing import InProcessLink
from protocol.client import MeterClient


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SharedList]:
    s = SharedList.open(tmp_path / "shared.db")
    yield s
    s.close()


def add(store: SharedList, *accounts: SharedAccount) -> None:
    store.apply([Change(after=a, source="test") for a in accounts])


def edit(store: SharedList, code: str, **changes: object) -> None:
    before = store.get(code)
    assert before is not None
    store.apply(
        [Change(after=dataclasses.replace(before, **changes), source="test", before=before)]
    )  # type: ignore[arg-type]


def acct(
    code: str, name: str, parent: str = "", password: str = "", active: bool = True
) -> SharedAccount:
    return SharedAccount(
        code=code,
        name=name,
        parent_code=parent,
        active=active,
        password_enabled=bool(password),
        password=password,
    )


def make_meter(
    serial: str = "SIM-1", capacity: int = 100, supervisor: str | None = "super"
) -> Meter:
    sup = Supervisor(n=2, r=1, p=1)
    if supervisor:
        sup.set_password(supervisor)
    return Meter(serial=serial, book=AccountBook(Settings(capacity=capacity)), supervisor=sup)


class Links:
    """Connects MeterTargets to in-process meters by port name."""

    def __init__(self, **meters: Meter) -> None:
        self.meters = meters
        self.links: list[InProcessLink] = []

    def __call__(self, target: MeterTarget) -> MeterClient:
        if target.port not in self.meters:
            from protocol.link import LinkError

            raise LinkError(f"cannot open {target.port}: no such meter")
        link = InProcessLink(self.meters[target.port])
        self.links.append(link)
        client = MeterClient(link)
        client.hello()
        return client


def sync(
    store: SharedList,
    links: Links,
    *ports: str,
    password: str | None = "super",
    dry_run: bool = False,
) -> list[MeterResult]:
    targets = [MeterTarget(port=p, supervisor_password=password) for p in ports]
    return run_fleet(store, targets, QuietProgress(), connect=links, dry_run=dry_run)
