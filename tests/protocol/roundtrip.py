"""One-line round-trip checks for construct structs (after construct's declarativeunittest)."""

from __future__ import annotations

from typing import Any

from construct import Construct, SizeofError


def common(fmt: Construct, data: bytes, obj: Any, size: int | None = None) -> None:
    """parse(data) == obj, build(obj) == data, sizeof == size (None: variable-size),
    and the compiled struct agrees with the plain one on both parse and build."""
    assert fmt.parse(data) == obj
    assert fmt.build(obj) == data
    if size is None:
        try:
            fmt.sizeof()
        except SizeofError:
            pass
        else:
            raise AssertionError("expected a variable-size struct")
    else:
        assert fmt.sizeof() == size
    compiled = fmt.compile()
    assert compiled.parse(data) == obj
    assert compiled.build(obj) == data
