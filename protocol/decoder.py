"""The sans-IO frame decoder: bytes in, events out.  No port, no clock, never raises.

``FrameDecoder.feed(data)`` accepts bytes in any chunking (one byte at a time
included) and returns the events they complete::

    FrameReceived(frame)   a frame whose CRC checked; frame.payload is still untrusted
                           as a message (protocol.messages parses it)
    Garbage(count)         bytes that were not part of any frame candidate
    Oversized(length)      a header announced LEN > max_payload; refused unbuffered
    CrcMismatch(length)    a complete candidate whose CRC did not check
    Truncated(have, need)  ``expire()`` found a candidate the line stopped sending

How it stays O(n) in bytes fed (see protocol/frames.py for the byte layout):

* The marker search keeps a cursor: each byte is searched for SOF exactly once, and
  the offsets of every marker found are queued.  The search is ``bytearray.find``.
* A candidate starts at a queued marker.  Its LEN is checked against
  ``max_payload`` as soon as the 5 header bytes are in, before anything else is
  buffered for it.
* The CRC of a candidate is computed once, when its last byte arrives.
* After a CRC mismatch the decoder resumes at the next *queued* marker (one that
  lies inside the failed candidate, if any) instead of searching again.  That is
  what keeps a good frame that follows a truncated one: the truncated frame's
  LEN swallows it, the CRC fails, and the good frame's marker is already queued.
* Between calls the decoder holds at most one incomplete candidate, so its
  buffer never exceeds ``FRAME_OVERHEAD + max_payload`` bytes.

Header bytes are read with plain slicing, never with a compiled construct struct:
construct's docs warn against feeding untrusted bytes to compiled parsers before
length and CRC are checked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from protocol.frames import CRC_SIZE, FRAME_OVERHEAD, HEADER_SIZE, MAX_PAYLOAD, SOF, RawFrame, crc16

_PREFIX = len(SOF) + HEADER_SIZE  # bytes up to the payload


@dataclass(frozen=True, slots=True)
class FrameReceived:
    frame: RawFrame


@dataclass(frozen=True, slots=True)
class Garbage:
    count: int


@dataclass(frozen=True, slots=True)
class Oversized:
    length: int


@dataclass(frozen=True, slots=True)
class CrcMismatch:
    length: int


@dataclass(frozen=True, slots=True)
class Truncated:
    have: int
    need: int


DecoderEvent = FrameReceived | Garbage | Oversized | CrcMismatch | Truncated


class FrameDecoder:
    """Incremental frame decoder; see the module docstring for its guarantees."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= 0xFFFF:
            raise ValueError("max_payload must fit the 16-bit LEN field")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._base = 0  # absolute stream offset of _buf[0]
        self._pos = 0  # absolute offset where processing stands (candidate start)
        self._scan = 0  # absolute offset from which the marker search continues
        self._marks: deque[int] = deque()  # absolute offsets of markers not yet used
        self._candidate = False  # a candidate frame starts at _pos
        self.bytes_fed = 0
        self.bytes_examined = 0  # distinct bytes the marker search has looked at
        self._examined_to = 0

    @property
    def buffered(self) -> int:
        """Bytes held between calls (bounded by FRAME_OVERHEAD + max_payload)."""
        return len(self._buf) - (self._pos - self._base)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame candidate is buffered (the adapter then runs an
        inter-byte timer and calls ``expire()`` when the line goes quiet)."""
        return self._candidate

    def reset(self) -> None:
        """Forget everything buffered (e.g. after the port was reopened)."""
        self.__init__(self.max_payload)  # type: ignore[misc]

    def feed(self, data: bytes | bytearray | memoryview) -> list[DecoderEvent]:
        """Take more bytes from the line; return the events they complete."""
        if data:
            self._buf += data
            self.bytes_fed += len(data)
            self._search()
        events: list[DecoderEvent] = []
        self._process(events, expiring=False)
        self._compact()
        return events

    def expire(self) -> list[DecoderEvent]:
        """The line went quiet: whatever candidate is incomplete is truncated."""
        events: list[DecoderEvent] = []
        self._process(events, expiring=True)
        self._compact()
        return events

    # -- internals ---------------------------------------------------------------

    def _search(self) -> None:
        buf, base = self._buf, self._base
        start = self._scan - base
        end = len(buf)
        # The byte kept back for a split marker is looked at again, once per call:
        # count each byte of the stream once.
        self.bytes_examined += max(0, base + end - max(self._scan, self._examined_to))
        self._examined_to = max(self._examined_to, base + end)
        find = buf.find
        marks = self._marks
        i = find(SOF, start)
        while i >= 0:
            marks.append(base + i)
            i = find(SOF, i + 1)
        # The last byte may be the first half of a marker: search it again next time.
        self._scan = base + max(start, end - (len(SOF) - 1))

    def _advance(self, events: list[DecoderEvent], as_garbage: bool) -> bool:
        """Move _pos to the next queued marker and make it the candidate.

        Returns False when none is queued: _pos then moves up to the search cursor
        (the bytes before it hold no marker).  Skipped bytes are reported as
        ``Garbage`` unless they belong to a candidate that just failed.
        """
        marks = self._marks
        while marks and marks[0] < self._pos:
            marks.popleft()
        target = marks.popleft() if marks else max(self._pos, self._scan)
        if as_garbage and target > self._pos:
            events.append(Garbage(target - self._pos))
        self._pos = target
        self._candidate = bool(self._buf) and self._is_mark(target)
        return self._candidate

    def _is_mark(self, pos: int) -> bool:
        i = pos - self._base
        return self._buf[i : i + len(SOF)] == SOF

    def _process(self, events: list[DecoderEvent], expiring: bool) -> None:
        buf = self._buf
        while True:
            if not self._candidate and not self._advance(events, as_garbage=True):
                tail = self._base + len(buf) - self._pos
                if expiring and tail:
                    events.append(Garbage(tail))
                    self._pos += tail
                    self._scan = self._pos
                return
            start = self._pos - self._base
            have = len(buf) - start
            if have < _PREFIX:
                if not expiring:
                    return
                events.append(Truncated(have, _PREFIX))
                self._drop_candidate(events)
                continue
            length = (buf[start + 5] << 8) | buf[start + 6]
            if length > self.max_payload:
                events.append(Oversized(length))
                self._drop_candidate(events)
                continue
            total = FRAME_OVERHEAD + length
            if have < total:
                if not expiring:
                    return
                events.append(Truncated(have, total))
                self._drop_candidate(events)
                continue
            end = start + total
            crc_at = end - CRC_SIZE
            if crc16(memoryview(buf)[start + 2 : crc_at]) == (buf[crc_at] << 8) | buf[crc_at + 1]:
                events.append(
                    FrameReceived(
                        RawFrame(
                            version=buf[start + 2],
                            type=buf[start + 3],
                            seq=buf[start + 4],
                            payload=bytes(buf[start + _PREFIX : crc_at]),
                        )
                    )
                )
                self._pos += total
                self._scan = max(self._scan, self._pos)  # a frame's insides are not searched
                self._candidate = False
                continue
            events.append(CrcMismatch(length))
            self._drop_candidate(events)

    def _drop_candidate(self, events: list[DecoderEvent]) -> None:
        """Abandon the candidate at _pos and resume at the next queued marker, which
        may lie inside it.  The skipped bytes belong to the failed candidate."""
        self._pos += 1
        self._advance(events, as_garbage=False)

    def _compact(self) -> None:
        drop = self._pos - self._base
        if drop > 0:
            del self._buf[:drop]
            self._base = self._pos
