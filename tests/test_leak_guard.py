"""The leak guard itself must be able to fail."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from tests.conftest import _children, _fd_kinds, _threads


def test_guard_sees_a_pty() -> None:
    before = _fd_kinds()
    master, slave = os.openpty()
    try:
        assert {master, slave} <= set(_fd_kinds()) - set(before)
    finally:
        os.close(master)
        os.close(slave)
    assert set(_fd_kinds()) == set(before)


def test_guard_sees_a_thread() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="leaky")
    before = _threads()
    t.start()
    try:
        assert t in _threads() - before
    finally:
        stop.set()
        t.join()


def test_guard_sees_a_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert proc.pid in _children()
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in _children()
