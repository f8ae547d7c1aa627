"""The line model: fault SPEC grammar, pacing arithmetic, determinism (no clocks)."""

from __future__ import annotations

import random

import pytest

from firmware_sim.line import (
    Direction,
    FaultSpec,
    FaultSpecError,
    Line,
    LineConfig,
    parse_fault_spec,
)


def test_full_spec() -> None:
    spec = parse_fault_spec("corrupt=0.001,drop=0.002,dup=0.003,delay=0.01:50ms,stall=0.005:0.3s")
    assert spec == FaultSpec(0.001, 0.002, 0.003, 0.01, 0.05, 0.005, 0.3)
    assert parse_fault_spec(str(spec)) == spec
    assert parse_fault_spec("delay=0.5") == FaultSpec(delay=0.5)  # default duration


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("drop=abc", "drop=abc"),
        ("corrupt=0.1,smash=0.2", "smash=0.2"),
        ("dup=1.5", "dup=1.5"),
        ("delay=0.1:fast", "delay=0.1:fast"),
        ("stall=0.1:5parsecs", "stall=0.1:5parsecs"),
        ("corrupt=0.1:5ms", "corrupt=0.1:5ms"),
        ("drop", "drop"),
        ("drop=0.1,drop=0.2", "drop=0.2"),
        ("drop=0.1,,dup=0.1", "empty part"),
        ("", "empty"),
    ],
)
def test_parse_errors_name_the_bad_part(spec: str, named: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_fault_spec(spec)
    assert named in str(info.value)


def _direction(baud: int | None = None, latency: float = 0.0, faults: FaultSpec | None = None,
               seed: int = 1) -> Direction:
    return Direction(LineConfig(baud, latency, faults or FaultSpec(), seed), random.Random(seed))


def test_pacing_ten_bits_per_byte() -> None:
    d = _direction(baud=1000)  # 10 ms per byte
    d.push(b"abcde", 0.0)
    assert d.next_due() == pytest.approx(0.010)
    assert d.pop_due(0.0499) == b"abcd"
    assert d.pop_due(0.0501) == b"e"
    d.push(b"xy", 0.02)  # the line was free again at 0.05: y lands at 0.07
    d.push(b"z", 0.5)  # an idle line: starts at once
    assert d.pop_due(0.0699) == b"x"
    assert d.pop_due(0.0701) == b"y"
    assert d.pop_due(0.5099) == b""
    assert d.pop_due(0.5101) == b"z"


def test_latency_per_chunk_and_ideal_line() -> None:
    d = _direction(baud=None, latency=0.016)
    d.push(b"hello", 1.0)
    assert d.pop_due(1.0159) == b""
    assert d.pop_due(1.016) == b"hello"
    ideal = _direction()
    ideal.push(b"now", 3.0)
    assert ideal.pop_due(3.0) == b"now"


def test_directions_are_independent() -> None:
    line = Line(LineConfig(baud=1000))
    line.to_meter.push(b"x" * 100, 0.0)  # busy for a second
    line.from_meter.push(b"r", 0.0)
    assert line.from_meter.pop_due(0.0101) == b"r"
    assert line.next_due() == pytest.approx(0.010)


def test_faults_are_deterministic_given_the_seed() -> None:
    spec = parse_fault_spec("corrupt=0.05,drop=0.05,dup=0.05,delay=0.2:50ms,stall=0.05:300ms")

    def run(seed: int) -> tuple[list[tuple[float, bytes]], float]:
        line = Line(LineConfig(9600, 0.001, spec, seed))
        for i in range(20):
            line.to_meter.push(bytes(range(64)), i * 0.5)
        out = []
        t = 0.0
        while (due := line.to_meter.next_due()) is not None:
            t = due
            out.append((t, line.to_meter.pop_due(t)))
        return out, t

    assert run(3) == run(3)
    assert run(3) != run(4)
    data = b"".join(chunk for _, chunk in run(3)[0])
    assert data != bytes(range(64)) * 20  # the noise did something


def test_each_fault_kind() -> None:
    data = bytes(range(200))
    d = _direction(baud=1000, faults=FaultSpec(corrupt=1.0))
    d.push(data, 0.0)
    got = d.pop_due(100.0)
    assert len(got) == len(data)
    assert all(bin(a ^ b).count("1") == 1 for a, b in zip(got, data, strict=True))

    d = _direction(baud=1000, faults=FaultSpec(drop=1.0))
    d.push(data, 0.0)
    assert d.pop_due(100.0) == b"" and d.line_free == pytest.approx(2.0)  # time still passed

    d = _direction(faults=FaultSpec(dup=1.0))
    d.push(b"ab", 0.0)
    assert d.pop_due(100.0) == b"aabb"

    d = _direction(baud=1000, faults=FaultSpec(stall=1.0, stall_s=0.3))
    d.push(b"abc", 0.0)  # a stall before every byte but the first
    assert d.pop_due(0.0101) == b"a"
    assert d.pop_due(0.3199) == b""
    assert d.pop_due(0.3201) == b"b"
    assert d.line_free == pytest.approx(0.63)

    d = _direction(baud=1000, faults=FaultSpec(delay=1.0, delay_s=0.05))
    d.push(b"ab", 0.0)  # the whole chunk starts late
    assert d.pop_due(0.0599) == b""
    assert d.pop_due(0.0701) == b"ab"


def test_idle_gap() -> None:
    assert LineConfig().idle_gap == pytest.approx(0.020)
    assert LineConfig(baud=9600).idle_gap == pytest.approx(30 * 10 / 9600)
    assert LineConfig(baud=1200).idle_gap == pytest.approx(0.25)
