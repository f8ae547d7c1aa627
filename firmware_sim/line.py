"""The line model: serial pacing, adapter latency and seeded faults.  No sleeping.

A ``Line`` is one full-duplex serial line: two independent ``Direction`` objects
(``to_meter`` and ``from_meter``).  ``Direction.push(data, now)`` says when each
byte becomes visible at the far end; ``pop_due(now)`` hands over every byte whose
time has come; ``next_due()`` tells the caller when to look again.  The serve
loop owns the clock and the waiting; this module only computes times.

Timing (per direction):

* ``baud``: 10 bits per byte (start, 8 data, stop).  A byte written at ``t`` is
  delivered at ``max(t, line_free) + 10 / baud`` and the line is then busy until
  that moment.  ``baud=None`` (or 0) means an ideal line: no pacing.
* ``latency``: every chunk is delivered ``latency`` seconds after its paced time
  (a USB serial adapter's latency timer).  It does not occupy the line.

Faults (``FaultSpec``, parsed from ``corrupt=0.001,drop=0.001,dup=0.001,
delay=0.01:50ms,stall=0.005:300ms``), drawn from ``random.Random(seed)`` so a run
is reproducible:

* ``corrupt=P``  each byte: with probability P one random bit is flipped
* ``drop=P``     each byte: with probability P it is lost (its time still passes)
* ``dup=P``      each byte: with probability P it arrives twice
* ``delay=P:D``  each chunk: with probability P the line stays silent for D first
* ``stall=P:D``  each byte after a chunk's first: with probability P the line
                 stalls for D before it (a stall in the middle of a frame)

Order is always kept: a serial line delays but never reorders.
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass, fields

CHAR_BITS = 10


class FaultSpecError(ValueError):
    """A ``--fault`` SPEC that does not parse; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    corrupt: float = 0.0
    drop: float = 0.0
    dup: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.050
    stall: float = 0.0
    stall_s: float = 0.300

    @property
    def any(self) -> bool:
        return any((self.corrupt, self.drop, self.dup, self.delay, self.stall))

    def __str__(self) -> str:
        parts = []
        for name in ("corrupt", "drop", "dup"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name):g}")
        if self.delay:
            parts.append(f"delay={self.delay:g}:{self.delay_s * 1000:g}ms")
        if self.stall:
            parts.append(f"stall={self.stall:g}:{self.stall_s * 1000:g}ms")
        return ",".join(parts) or "none"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
_PER_BYTE = ("corrupt", "drop", "dup")
_WITH_DURATION = ("delay", "stall")
KINDS = _PER_BYTE + _WITH_DURATION


def _probability(text: str, part: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"{part!r}: {text!r} is not a probability") from None
    if not 0.0 <= value <= 1.0 or value != value:
        raise FaultSpecError(f"{part!r}: probability must be between 0 and 1")
    return value


def _duration(text: str, part: str) -> float:
    m = _DURATION.match(text.strip())
    if m is None:
        raise FaultSpecError(f"{part!r}: {text!r} is not a duration (like 50ms or 0.3s)")
    value = float(m.group(1))
    seconds = value if m.group(2) == "s" else value / 1000.0
    if seconds > 60.0:
        raise FaultSpecError(f"{part!r}: duration over 60 s")
    return seconds


def parse_fault_spec(text: str) -> FaultSpec:
    """Parse ``KIND=P[,KIND=P:DURATION...]``; raise FaultSpecError naming the bad part."""
    values: dict[str, float] = {}
    if not text.strip():
        raise FaultSpecError("empty fault SPEC")
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise FaultSpecError(f"empty part in {text!r}")
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq:
            raise FaultSpecError(f"{part!r}: expected KIND=PROBABILITY")
        if name not in KINDS:
            raise FaultSpecError(f"{part!r}: unknown fault {name!r} (one of {', '.join(KINDS)})")
        if name in values:
            raise FaultSpecError(f"{part!r}: {name} given twice")
        prob, colon, dur = value.partition(":")
        if name in _PER_BYTE:
            if colon:
                raise FaultSpecError(f"{part!r}: {name} takes no duration")
            values[name] = _probability(prob.strip(), part)
        else:
            values[name] = _probability(prob.strip(), part)
            if colon:
                values[f"{name}_s"] = _duration(dur, part)
    known = {f.name for f in fields(FaultSpec)}
    return FaultSpec(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class LineConfig:
    baud: int | None = None
    latency: float = 0.0
    faults: FaultSpec = FaultSpec()
    seed: int = 0

    @property
    def char_time(self) -> float:
        return CHAR_BITS / self.baud if self.baud else 0.0

    @property
    def idle_gap(self) -> float:
        """Quiet time after which a partly received frame is abandoned."""
        return max(0.020, 30 * self.char_time)

    @property
    def ideal(self) -> bool:
        return not self.baud and not self.latency and not self.faults.any


class Direction:
    """One direction of the line: bytes in at the near end, out at the far end."""

    def __init__(self, config: LineConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.line_free = 0.0
        self._pending: deque[tuple[float, bytes]] = deque()
        self.stats = {k: 0 for k in KINDS}

    def push(self, data: bytes, now: float) -> None:
        """``data`` was written at ``now``: schedule its arrival."""
        if not data:
            return
        cfg = self.config
        faults = cfg.faults
        if not cfg.baud and not faults.any:
            self._append(now + cfg.latency, data)
            return
        rng = self.rng
        step = cfg.char_time
        t = max(now, self.line_free)
        if faults.delay and rng.random() < faults.delay:
            t += faults.delay_s
            self.stats["delay"] += 1
        out: list[tuple[float, bytes]] = []
        for i, byte in enumerate(data):
            if i and faults.stall and rng.random() < faults.stall:
                t += faults.stall_s
                self.stats["stall"] += 1
            t += step
            if faults.drop and rng.random() < faults.drop:
                self.stats["drop"] += 1
                continue
            if faults.corrupt and rng.random() < faults.corrupt:
                byte ^= 1 << rng.randrange(8)
                self.stats["corrupt"] += 1
            out.append((t, bytes((byte,))))
            if faults.dup and rng.random() < faults.dup:
                t += step
                out.append((t, bytes((byte,))))
                self.stats["dup"] += 1
        self.line_free = t
        for when, b in out:
            self._append(when + cfg.latency, b)

    def _append(self, when: float, data: bytes) -> None:
        pending = self._pending
        if pending and pending[-1][0] >= when:
            # never reorder: a byte cannot overtake the one before it
            last_when, last = pending.pop()
            pending.append((last_when, last + data))
        else:
            pending.append((when, data))

    def next_due(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def pop_due(self, now: float) -> bytes:
        """Every byte that has arrived by ``now``."""
        out = bytearray()
        pending = self._pending
        while pending and pending[0][0] <= now:
            out += pending.popleft()[1]
        return bytes(out)

    @property
    def pending(self) -> int:
        return sum(len(d) for _, d in self._pending)


class Line:
    """A full-duplex line: ``to_meter`` and ``from_meter`` are independent."""

    def __init__(self, config: LineConfig | None = None) -> None:
        self.config = config or LineConfig()
        rng = random.Random(self.config.seed)
        # one seeded generator per direction, so each direction's faults do not
        # depend on how the two directions interleave in time
        self.to_meter = Direction(self.config, random.Random(rng.getrandbits(64)))
        self.from_meter = Direction(self.config, random.Random(rng.getrandbits(64)))

    def next_due(self) -> float | None:
        times = [t for t in (self.to_meter.next_due(), self.from_meter.next_due()) if t is not None]
        return min(times, default=None)
