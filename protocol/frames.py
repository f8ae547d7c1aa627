"""Frame layout and CRC: the one envelope every message travels in.

Wire format (all integers big-endian)::

     0      1      2      3      4      5      6      7 .. 7+LEN-1   7+LEN  8+LEN
    +------+------+------+------+------+------+------+-------------+------+------+
    | 0xA5 | 0x4D | VER  | TYPE | SEQ  |    LEN      |   PAYLOAD   |     CRC     |
    +------+------+------+------+------+------+------+-------------+------+------+
    |<-- SOF --->|<------------- covered by the CRC ------------->|
                 |<---------- HEADER (5) ------->|

    SOF      start-of-frame marker, the two bytes A5 4D ("M" for meter)
    VER      protocol version, 1 for this spec
    TYPE     message type (protocol.messages catalogue); requests < 0x80 <= replies
    SEQ      sequence number 0..255; a reply carries its request's SEQ
    LEN      payload length 0..MAX_PAYLOAD (1024); larger is refused before buffering
    PAYLOAD  LEN bytes, the message body
    CRC      CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final
             xor; check value 0x29B1) over VER..PAYLOAD, computed with binascii.crc_hqx

A frame is therefore ``FRAME_OVERHEAD`` (9) bytes longer than its payload.

Recovery cases (what the decoder in ``protocol.decoder`` does):

* bytes before a marker              -> skipped, reported once as ``Garbage(n)``
* LEN > MAX_PAYLOAD                  -> ``Oversized``; resume at the next marker
* CRC mismatch                       -> ``CrcMismatch``; resume at the next marker
                                        found *inside* the bad candidate, so a frame
                                        that follows a truncated one is not lost
* frame cut off and the line idles   -> the adapter calls ``expire()``: ``Truncated``
"""

from __future__ import annotations

from binascii import crc_hqx
from dataclasses import dataclass

from construct import Bytes, Checksum, Const, Int8ub, Int16ub, RawCopy, Rebuild, Struct, len_, this

SOF = b"\xa5\x4d"
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 1024
HEADER_SIZE = 5  # VER TYPE SEQ LEN(2)
CRC_SIZE = 2
FRAME_OVERHEAD = len(SOF) + HEADER_SIZE + CRC_SIZE
MAX_FRAME = FRAME_OVERHEAD + MAX_PAYLOAD
CRC_INIT = 0xFFFF


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    return crc_hqx(data, CRC_INIT)


Header = Struct(
    "version" / Int8ub,
    "type" / Int8ub,
    "seq" / Int8ub,
    "length" / Int16ub,
)
"""The five header bytes after SOF: VER TYPE SEQ LEN(u16)."""

Frame = Struct(
    "sof" / Const(SOF),
    "body"
    / RawCopy(
        Struct(
            "version" / Int8ub,
            "type" / Int8ub,
            "seq" / Int8ub,
            "length" / Rebuild(Int16ub, len_(this.payload)),
            "payload" / Bytes(this.length),
        )
    ),
    "crc" / Checksum(Int16ub, crc16, this.body.data),
)
"""A whole frame, declared: parse checks SOF and CRC, build computes LEN and CRC."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One frame that passed the CRC check: header fields and the undecoded payload."""

    version: int
    type: int
    seq: int
    payload: bytes


def encode_frame(msg_type: int, seq: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Build the bytes of one frame.

    Equivalent to ``Frame.build(...)`` (the tests hold the two to each other) but
    written with plain byte operations because it sits on the hot path.
    """
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"payload of {n} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    body = bytes((version, msg_type, seq & 0xFF, n >> 8, n & 0xFF)) + payload
    crc = crc16(body)
    return SOF + body + bytes((crc >> 8, crc & 0xFF))
