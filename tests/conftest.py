"""Suite-wide fixtures: the leak guard.

Every test must leave the process as it found it: no extra threads, no open
pty or socket file descriptors, no live child processes.  The guard is autouse,
so a test that leaks fails by name instead of poisoning the tests after it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest


def _fd_kinds() -> dict[int, str]:
    kinds: dict[int, str] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: the fd part of the guard is skipped
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(("/dev/pts/", "/dev/ptmx", "socket:")):
            kinds[int(name)] = target
    return kinds


def _children() -> set[int]:
    pid = os.getpid()
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.update(int(c) for c in fh.read().split())
    except OSError:
        return found
    alive = set()
    for child in found:
        try:
            with open(f"/proc/{child}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(child)
    return alive


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves a thread, a pty/socket fd or a child process behind."""
    threads_before = _threads()
    fds_before = _fd_kinds()
    children_before = _children()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        threads = {t for t in _threads() - threads_before if not t.daemon or t.is_alive()}
        fds = {fd: k for fd, k in _fd_kinds().items() if fds_before.get(fd) != k}
        children = _children() - children_before
        if not (threads or fds or children) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if threads:
        problems.append(f"threads: {sorted(t.name for t in threads)}")
    if fds:
        problems.append(f"file descriptors: {sorted(fds.items())}")
    if children:
        problems.append(f"child processes: {sorted(children)}")
    if problems:
        pytest.fail(f"{request.node.nodeid} leaked " + "; ".join(problems), pytrace=False)
