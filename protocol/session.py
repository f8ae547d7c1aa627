"""Sans-IO sessions: sequence numbers, windowing, duplicates and retransmission.

Neither class touches a port or a clock.  The caller feeds received bytes in,
passes the current time (any monotonic float, in seconds) where a decision
depends on it, and writes the bytes it gets back.  docs/PROTOCOL.md ("Sequencing")
states the same rules for other implementers.

Client side (``ClientSession``):

* Each request gets the next SEQ (mod 256).  Up to ``window`` requests may be
  in flight; the meter advertises its window in IDENTIFY.
* A request not answered within the retransmission timeout (RTO) is sent again,
  byte for byte, with the same SEQ.  The RTO doubles on each retry up to
  ``max_rto``; after ``max_attempts`` sends the request is given up
  (``GaveUp``) — the peer is gone or the line is dead.
* The meter answers in SEQ order, so only the **oldest** request in flight has
  its RTO timer running; the next one's starts when the oldest is answered (or
  given up).  With ``char_time`` (seconds per byte on the line, 0 = unknown) the
  timer also allows for its own frame and a reply of ``MAX_FRAME`` bytes to
  cross the line.  Without this, a full window of 1 KB frames queued on a
  115,200 baud line (0.7 s) outlived the 0.5 s RTO and every batch was sent twice.
* BUSY is not an answer: the request is resent after ``retry_after_ms``,
  backing off, and BUSY does not count against ``max_attempts`` (a long mail run
  is not a dead line) until ``max_busy_wait`` seconds have passed.
* A reply whose SEQ matches nothing in flight (the late twin of a retransmission)
  is dropped and counted as ``stray``.

Meter side (``ServerSession``):

* Requests are applied strictly in SEQ order.  A request ahead of the expected
  SEQ (an earlier one was lost) waits in a reorder buffer of ``window`` slots; one
  outside the window is answered ERROR(SEQUENCE).
* Every reply except BUSY is cached by SEQ together with a fingerprint (CRC-32 of
  TYPE and payload) of the request it answered.  A request whose SEQ and
  fingerprint match a cached entry is a retransmission: the cached reply is sent
  again and nothing is applied twice.
* HELLO always goes through (unless it is a retransmission of the HELLO just
  answered, recognised by its random nonce): it restarts the sequence at its own
  SEQ + 1 and clears the cache.  Before the first HELLO, and after a power cut, there is no
  session: the meter answers cached retransmissions (it restores the cache
  entries of durable changes with ``snapshot``/``restore``) and refuses anything
  else with ERROR(SEQUENCE) until a new HELLO.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from protocol.decoder import CrcMismatch, FrameDecoder, FrameReceived, Garbage, Oversized, Truncated
from protocol.errors import ErrorCode
from protocol.frames import MAX_FRAME, MAX_PAYLOAD, PROTOCOL_VERSION, RawFrame, encode_frame
from protocol.messages import Busy, Error, Hello, Message, MessageError, decode

SEQ_MOD = 256
DEFAULT_WINDOW = 8
_WAITING = float("inf")  # the deadline of a request whose RTO timer is not running yet


def fingerprint(msg_type: int, payload: bytes) -> int:
    """Identity of a request for duplicate detection: CRC-32 of TYPE and payload."""
    return zlib.crc32(payload, zlib.crc32(bytes((msg_type,))))


@dataclass
class LineStats:
    """What the line did to us (for traces, progress and benchmarks)."""

    frames: int = 0
    garbage_bytes: int = 0
    crc_errors: int = 0
    oversized: int = 0
    truncated: int = 0
    stray_replies: int = 0
    retransmissions: int = 0
    busy: int = 0

    def count(self, event: object) -> None:
        if isinstance(event, FrameReceived):
            self.frames += 1
        elif isinstance(event, Garbage):
            self.garbage_bytes += event.count
        elif isinstance(event, CrcMismatch):
            self.crc_errors += 1
        elif isinstance(event, Oversized):
            self.oversized += 1
        elif isinstance(event, Truncated):
            self.truncated += 1


# ------------------------------------------------------------------ client side


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a request."""

    seq: int
    request: Message
    reply: Message


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A request went unanswered ``max_attempts`` times (or stayed BUSY too long)."""

    seq: int
    request: Message
    attempts: int
    busy: bool


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A reply frame with a CRC that checked but a payload that did not parse."""

    seq: int
    reason: str


ClientEvent = Reply | GaveUp | Undecodable


@dataclass(slots=True)
class _InFlight:
    seq: int
    request: Message
    frame: bytes
    deadline: float
    rto: float
    attempts: int = 1
    busy_since: float | None = None
    busy_backoff: float = 0.0


class ClientSession:
    """The agent's side of the protocol, sans-IO."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        rto: float = 0.5,
        max_rto: float = 4.0,
        max_attempts: int = 6,
        max_busy_wait: float = 60.0,
        max_payload: int = MAX_PAYLOAD,
        first_seq: int = 0,
        char_time: float = 0.0,
    ) -> None:
        if not 1 <= window <= 64:
            raise ValueError("window must be 1..64")
        self.window = window
        self.rto = rto
        self.char_time = char_time
        self.max_rto = max_rto
        self.max_attempts = max_attempts
        self.max_busy_wait = max_busy_wait
        self.decoder = FrameDecoder(max_payload)
        self.stats = LineStats()
        self._next_seq = first_seq % SEQ_MOD
        self._inflight: dict[int, _InFlight] = {}
        self.bytes_sent = 0

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def can_send(self) -> bool:
        return len(self._inflight) < self.window

    def send(self, msg: Message, now: float) -> tuple[int, bytes]:
        """Queue ``msg`` as in flight; return its SEQ and the frame bytes to write."""
        if not msg.IS_REQUEST:
            raise ValueError(f"{type(msg).__name__} is a reply, not a request")
        if not self.can_send():
            raise RuntimeError("window full: wait for a reply first")
        seq = self._next_seq
        self._next_seq = (seq + 1) % SEQ_MOD
        frame = encode_frame(msg.TYPE, seq, msg.encode())
        pending = _InFlight(seq, msg, frame, _WAITING, self.rto)
        if not self._inflight:
            self._start_timer(pending, now)
        self._inflight[seq] = pending
        self.bytes_sent += len(frame)
        return seq, frame

    def _start_timer(self, p: _InFlight, now: float) -> None:
        """``p`` is now the oldest request in flight: its RTO timer starts."""
        p.deadline = now + p.rto + (len(p.frame) + MAX_FRAME) * self.char_time

    def _next_oldest(self, now: float) -> None:
        for p in self._inflight.values():
            if p.deadline == _WAITING:
                self._start_timer(p, now)
            return

    def receive(self, data: bytes, now: float) -> list[ClientEvent]:
        """Feed bytes read from the line; return completed replies."""
        out: list[ClientEvent] = []
        for event in self.decoder.feed(data):
            self._on_decoder_event(event, now, out)
        return out

    def line_idle(self, now: float) -> list[ClientEvent]:
        """The line went quiet mid-frame: let the decoder drop the partial frame."""
        out: list[ClientEvent] = []
        for event in self.decoder.expire():
            self._on_decoder_event(event, now, out)
        return out

    def _on_decoder_event(self, event: object, now: float, out: list[ClientEvent]) -> None:
        self.stats.count(event)
        if not isinstance(event, FrameReceived):
            return
        frame = event.frame
        pending = self._inflight.get(frame.seq)
        if pending is None or frame.type < 0x80 or frame.version != PROTOCOL_VERSION:
            self.stats.stray_replies += 1
            return
        try:
            reply = decode(frame.type, frame.payload)
        except MessageError as exc:
            out.append(Undecodable(frame.seq, str(exc)))
            return
        if isinstance(reply, Busy):
            self.stats.busy += 1
            if pending.busy_since is None:
                pending.busy_since = now
            # back off (doubling, capped at 2 s) but never sooner than the meter asked
            pending.busy_backoff = max(
                reply.retry_after_ms / 1000.0, min(pending.busy_backoff * 2 or 0.05, 2.0)
            )
            pending.deadline = now + pending.busy_backoff
            return
        del self._inflight[frame.seq]
        self._next_oldest(now)
        out.append(Reply(frame.seq, pending.request, reply))

    def next_deadline(self) -> float | None:
        """When ``poll`` next has something to do (None: nothing in flight)."""
        return min((p.deadline for p in self._inflight.values()), default=None)

    def poll(self, now: float) -> tuple[bytes, list[ClientEvent]]:
        """Retransmit what is due; give up on what has been tried enough."""
        resend = bytearray()
        events: list[ClientEvent] = []
        for seq, p in list(self._inflight.items()):
            if p.deadline > now:
                continue
            if p.busy_since is not None:
                if now - p.busy_since > self.max_busy_wait:
                    del self._inflight[seq]
                    events.append(GaveUp(seq, p.request, p.attempts, busy=True))
                    continue
                p.deadline = now + max(p.rto, p.busy_backoff)
            else:
                if p.attempts >= self.max_attempts:
                    del self._inflight[seq]
                    events.append(GaveUp(seq, p.request, p.attempts, busy=False))
                    continue
                p.attempts += 1
                p.rto = min(p.rto * 2, self.max_rto)
                self._start_timer(p, now)
            resend += p.frame
            self.stats.retransmissions += 1
        if events:
            self._next_oldest(now)
        self.bytes_sent += len(resend)
        return bytes(resend), events

    def forget(self) -> None:
        """Drop everything in flight (the caller is starting over with HELLO)."""
        self._inflight.clear()
        self.decoder.reset()


# ------------------------------------------------------------------- meter side


@dataclass(frozen=True, slots=True)
class Request:
    """A request the meter must apply now (in SEQ order)."""

    seq: int
    message: Message
    fingerprint: int


@dataclass
class _CacheEntry:
    fingerprint: int
    reply: bytes
    durable: bool


@dataclass
class ServerSession:
    """The meter's side of the protocol, sans-IO.

    Use::

        out = session.receive(data, busy=meter_busy)   # bytes to write at once
        while (req := session.next_request()) is not None:
            reply = apply(req.message)
            out += session.respond(req, reply, durable=changed_state)
    """

    window: int = DEFAULT_WINDOW
    cache_size: int = 64
    max_payload: int = MAX_PAYLOAD
    stats: LineStats = field(default_factory=LineStats)
    nonce: int | None = None
    expected: int | None = None  # None: no session yet, only HELLO is served
    _cache: OrderedDict[int, _CacheEntry] = field(default_factory=OrderedDict)
    _buffer: dict[int, Request] = field(default_factory=dict)
    decoder: FrameDecoder = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.max_payload)

    # -- input --------------------------------------------------------------

    def receive(self, data: bytes, busy: bool = False) -> bytes:
        """Feed bytes from the line.  Returns bytes to write immediately (cached
        replies to retransmissions, sequence errors, BUSY); queues the requests
        to apply for ``next_request``."""
        out = bytearray()
        for event in self.decoder.feed(data):
            self._on_event(event, busy, out)
        return bytes(out)

    def line_idle(self, busy: bool = False) -> bytes:
        out = bytearray()
        for event in self.decoder.expire():
            self._on_event(event, busy, out)
        return bytes(out)

    def _on_event(self, event: object, busy: bool, out: bytearray) -> None:
        self.stats.count(event)
        if isinstance(event, FrameReceived):
            self._on_frame(event.frame, busy, out)

    def _on_frame(self, frame: RawFrame, busy: bool, out: bytearray) -> None:
        seq = frame.seq
        if frame.version != PROTOCOL_VERSION:
            out += self._frame(
                seq,
                Error(
                    ErrorCode.UNSUPPORTED_VERSION,
                    message=f"this meter speaks version {PROTOCOL_VERSION}",
                ),
            )
            return
        fp = fingerprint(frame.type, frame.payload)
        cached = self._cache.get(seq)
        if cached is not None and cached.fingerprint == fp:
            self.stats.retransmissions += 1
            out += cached.reply
            return
        if busy:
            self.stats.busy += 1
            self._buffer.clear()
            out += self._frame(seq, Busy())
            return
        try:
            message = decode(frame.type, frame.payload)
        except MessageError as exc:
            message = None
            failure = Error(exc.code, message=str(exc))
        if frame.type == Hello.TYPE and message is not None:
            self._cache.clear()
            self._buffer.clear()
            self.expected = seq
        if self.expected is None:
            out += self._frame(
                seq, Error(ErrorCode.SEQUENCE, message="no session: send HELLO first")
            )
            return
        offset = (seq - self.expected) % SEQ_MOD
        if offset >= self.window:
            out += self._frame(
                seq, Error(ErrorCode.SEQUENCE, message=f"expected sequence {self.expected}")
            )
            return
        if message is None:
            # Undecodable but in sequence: answer it in order like any request.
            self._buffer[seq] = Request(seq, Error(failure.code, message=failure.message), fp)
            return
        self._buffer[seq] = Request(seq, message, fp)

    # -- applying -----------------------------------------------------------

    def next_request(self) -> Request | None:
        """The next request to apply, in SEQ order, or None.

        A request whose payload did not parse comes back with an ``Error`` as its
        message: the meter answers it with that error (``respond(req, req.message)``)."""
        if self.expected is None:
            return None
        return self._buffer.get(self.expected)

    def respond(self, req: Request, reply: Message, durable: bool = False) -> bytes:
        """Frame ``reply`` to ``req``, cache it, and move the window on.

        BUSY is not cached and does not move the window: the client will resend.
        ``durable`` marks replies to state changes that ``snapshot`` must keep.
        """
        self._buffer.pop(req.seq, None)
        frame = self._frame(req.seq, reply)
        if isinstance(reply, Busy):
            return frame
        self._cache[req.seq] = _CacheEntry(req.fingerprint, frame, durable)
        self._cache.move_to_end(req.seq)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self.expected = (req.seq + 1) % SEQ_MOD
        return frame

    def _frame(self, seq: int, msg: Message) -> bytes:
        return encode_frame(msg.TYPE, seq, msg.encode())

    # -- persistence across power loss ---------------------------------------

    def snapshot(self) -> bytes:
        """The durable part of the session: cached replies to state changes.

        Layout: u8 count, then per entry u8 seq, u32 fingerprint, u16 length, reply."""
        entries = [(s, e) for s, e in self._cache.items() if e.durable][-16:]
        out = bytearray([len(entries)])
        for seq, e in entries:
            out += struct.pack(">BIH", seq, e.fingerprint, len(e.reply)) + e.reply
        return bytes(out)

    def restore(self, blob: bytes) -> None:
        """Reload ``snapshot`` after a restart; a new HELLO is needed for new requests."""
        self._cache.clear()
        self._buffer.clear()
        self.expected = None
        if not blob:
            return
        count, pos = blob[0], 1
        for _ in range(count):
            seq, fp, n = struct.unpack_from(">BIH", blob, pos)
            pos += 7
            self._cache[seq] = _CacheEntry(fp, bytes(blob[pos : pos + n]), True)
            pos += n
