"""`meter-sync conformance`: the protocol conformance suite (firmware_sim.conformance)."""

from __future__ import annotations

from firmware_sim.conformance import add_parser, command

__all__ = ["add_parser", "command"]
