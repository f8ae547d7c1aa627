"""The serve loop: one thread per meter, between a transport and a sans-IO ``Meter``.

Each ``MeterServer`` thread::

    read the transport (waiting at most until the line model's next due time)
      -> Line.to_meter.push(bytes, now)          paced / delayed / damaged
      -> bytes due now -> Meter.receive(bytes, now) -> reply bytes
      -> Line.from_meter.push(reply, now)
      -> bytes due now -> transport.write(bytes)

When a frame is partly buffered in the meter and no byte has reached it for the
idle gap (``max(20 ms, 30 character times)``) the loop calls ``Meter.line_idle``
so the meter drops the stub.  ``stop()`` ends the loop within ~0.1 s; the thread
then closes its transport and the meter's NVM.

The NVM is opened *inside* the thread (SQLite connections belong to the thread
that made them): ``open_meter`` is called there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from firmware_sim.line import Line, LineConfig
from firmware_sim.meter import Meter
from firmware_sim.trace import TraceChannel, Tracer
from protocol.link import Transport

MAX_WAIT = 0.1  # the longest the loop blocks, so stop() is noticed quickly


class MeterServer:
    """Serves one meter on one transport, in its own thread."""

    def __init__(
        self,
        transport: Transport,
        open_meter: Callable[[], Meter],
        line: LineConfig | None = None,
        label: str = "meter",
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.open_meter = open_meter
        self.line = Line(line)
        self.label = label
        self.clock = clock
        self.trace: TraceChannel | None = tracer.channel(label) if tracer else None
        self.error: BaseException | None = None
        self.meter: Meter | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"meter-{label}", daemon=True)

    # -- control ---------------------------------------------------------------

    def start(self) -> MeterServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> MeterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    # -- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        meter: Meter | None = None
        try:
            meter = self.meter = self.open_meter()
            self.ready.set()
            self._serve(meter)
        except BaseException as exc:  # reported by the owner (the CLI exits 1)
            self.error = exc
        finally:
            self.ready.set()
            try:
                self.transport.close()
            finally:
                if meter is not None and meter.nvm is not None:
                    meter.nvm.close()

    def _serve(self, meter: Meter) -> None:
        line = self.line
        inbound, outbound = line.to_meter, line.from_meter
        idle_gap = line.config.idle_gap
        clock = self.clock
        trace = self.trace
        last_rx = clock()
        while not self._stop.is_set():
            now = clock()
            wait = MAX_WAIT
            due = line.next_due()
            if due is not None:
                wait = min(wait, due - now)
            if meter.session.decoder.in_frame:
                wait = min(wait, last_rx + idle_gap - now)
            data = self.transport.read(max(wait, 0.0))
            now = clock()
            if data:
                inbound.push(data, now)
            arrived = inbound.pop_due(now)
            reply = b""
            if arrived:
                last_rx = now
                if trace:
                    trace.received(arrived, now)
                reply = meter.receive(arrived, now)
            elif meter.session.decoder.in_frame and now - last_rx >= idle_gap:
                if trace:
                    trace.idle(now)
                reply = meter.line_idle(now)
                last_rx = now
            if reply:
                if trace:
                    trace.sent(reply, now)
                outbound.push(reply, now)
            out = outbound.pop_due(now)
            if out:
                self.transport.write(out)


def stop_all(servers: list[MeterServer], timeout: float = 5.0) -> None:
    for s in servers:
        s.stop()
    for s in servers:
        s.join(timeout)
