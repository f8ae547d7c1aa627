"""Test helpers for users of the virtual meter (public).

``InProcessLink`` is a transport (write/read/close) wired straight into a
``Meter``: the full protocol stack — frames, sessions, transition table — runs in
one process with no pty and no thread, so unit tests stay fast and deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_sim.meter import Meter


class InProcessLink:
    """A transport whose far end is a ``Meter`` in this process."""

    def __init__(self, meter: Meter, clock: Callable[[], float] = time.monotonic) -> None:
        self.meter = meter
        self.clock = clock
        self._inbox = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._inbox += self.meter.receive(bytes(data), self.clock())

    def read(self, timeout: float) -> bytes:
        if not self._inbox:
            self._inbox += self.meter.line_idle(self.clock())
        if not self._inbox and timeout > 0:
            # Nothing will come until the meter's busy time or a retransmission:
            # let the caller's clock move on.
            time.sleep(min(timeout, 0.01))
            return b""
        data = bytes(self._inbox)
        self._inbox.clear()
        self.bytes_in += len(data)
        return data

    def close(self) -> None:
        self.closed = True
