"""``--trace FILE``: a text trace of both directions of every served meter.

One line per event::

    <seconds since start> <serial> <dir> <frame hex> <decoded message>[ (redacted)]

``dir`` is ``>>`` for bytes the meter received (after the line model's faults, as
the meter saw them) and ``<<`` for bytes the meter sent (before the line model).
Each direction has its own ``FrameDecoder``; bytes that are not a good frame are
reported by count only (``!! garbage 3 bytes``, ``!! crc mismatch 41 bytes``),
never in hex: a damaged AUTH frame still holds its password.

Passwords never reach the file.  Message reprs already hide them
(``repr=False`` fields); the hex of a frame that carries one (AUTH, RUN_MAIL,
PUT_ACCOUNTS with passwords, ACCOUNT_PAGE with passwords) is re-encoded with
every password replaced by ``*`` of the same length and the line ends in
``(redacted)``.  The file is created with mode 0600.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from protocol.decoder import CrcMismatch, FrameDecoder, FrameReceived, Garbage, Oversized, Truncated
from protocol.frames import encode_frame
from protocol.messages import (
    AccountPage,
    Auth,
    Message,
    MessageError,
    PutAccounts,
    RunMail,
    decode,
    message_name,
    redacted,
)

# Request types whose payload carries a password: if such a frame does not even
# parse, its hex is withheld.
_SECRET_TYPES = {Auth.TYPE, RunMail.TYPE, PutAccounts.TYPE, AccountPage.TYPE}


def _stars(text: str | None) -> str | None:
    return None if text is None else "*" * len(text)


def mask_passwords(msg: Message) -> Message | None:
    """``msg`` with every password replaced by stars, or None if it carries none."""
    if isinstance(msg, Auth):
        return dataclasses.replace(msg, password=_stars(msg.password) or "")
    if isinstance(msg, RunMail):
        if not msg.password:
            return None
        return dataclasses.replace(msg, password=_stars(msg.password) or "")
    if isinstance(msg, PutAccounts):
        if all(r.password is None for r in msg.records):
            return None
        records = tuple(dataclasses.replace(r, password=_stars(r.password)) for r in msg.records)
        return dataclasses.replace(msg, records=records)
    if isinstance(msg, AccountPage):
        if not any(e.password for e in msg.entries):
            return None
        entries = tuple(
            dataclasses.replace(e, password=_stars(e.password) or "") for e in msg.entries
        )
        return dataclasses.replace(msg, entries=entries)
    return None


def describe_frame(version: int, msg_type: int, seq: int, payload: bytes) -> str:
    """``<hex> <message>`` for one good frame, passwords redacted."""
    try:
        msg = decode(msg_type, payload)
    except MessageError as exc:
        if msg_type in _SECRET_TYPES:
            what = f"<{len(payload)}-byte {message_name(msg_type)} payload withheld>"
            return f"{what} seq={seq} {exc}"
        raw = encode_frame(msg_type, seq, payload, version)
        return f"{raw.hex()} seq={seq} {exc}"
    masked = mask_passwords(msg)
    if masked is None:
        return f"{encode_frame(msg_type, seq, payload, version).hex()} seq={seq} {redacted(msg)}"
    try:
        raw = encode_frame(msg_type, seq, masked.encode(), version)
        hexed = raw.hex()
    except ValueError:
        hexed = f"<{len(payload)}-byte payload withheld>"
    return f"{hexed} seq={seq} {redacted(msg)} (redacted)"


class Tracer:
    """One trace file shared by every meter a process serves (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str], clock: object = time.monotonic) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: force it
        self._fh: TextIO = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._start = time.monotonic()
        started = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        self._fh.write(
            f"# meter-sim trace started {started}; seconds since start, serial, "
            ">> to meter / << from meter, frame hex, message\n"
        )

    def channel(self, label: str) -> TraceChannel:
        return TraceChannel(self, label)

    def write(self, label: str, direction: str, text: str, now: float) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.write(f"{now - self._start:12.6f} {label} {direction} {text}\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class TraceChannel:
    """The two decoders of one meter's line."""

    def __init__(self, tracer: Tracer, label: str) -> None:
        self.tracer = tracer
        self.label = label
        self._decoders = {">>": FrameDecoder(), "<<": FrameDecoder()}

    def received(self, data: bytes, now: float) -> None:
        self._feed(">>", data, now)

    def sent(self, data: bytes, now: float) -> None:
        self._feed("<<", data, now)

    def idle(self, now: float) -> None:
        for direction, decoder in self._decoders.items():
            if decoder.in_frame:
                self._events(direction, decoder.expire(), now)

    def _feed(self, direction: str, data: bytes, now: float) -> None:
        if data:
            self._events(direction, self._decoders[direction].feed(data), now)

    def _events(self, direction: str, events: Sequence[object], now: float) -> None:
        for event in events:
            if isinstance(event, FrameReceived):
                f = event.frame
                text = describe_frame(f.version, f.type, f.seq, f.payload)
            elif isinstance(event, Garbage):
                text = f"!! garbage {event.count} bytes"
            elif isinstance(event, CrcMismatch):
                text = f"!! crc mismatch, {event.length}-byte candidate dropped"
            elif isinstance(event, Oversized):
                text = f"!! oversized frame header (LEN {event.length})"
            elif isinstance(event, Truncated):
                text = f"!! truncated frame ({event.have} of {event.need} bytes)"
            else:
                continue
            self.tracer.write(self.label, direction, text, now)
