from __future__ import annotations

import pytest
from construct import ChecksumError, Container
from hypothesis import given
from hypothesis import strategies as st

from protocol.frames import (
    FRAME_OVERHEAD,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SOF,
    Frame,
    Header,
    crc16,
    encode_frame,
)
from tests.protocol.roundtrip import common


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_header_round_trip() -> None:
    common(Header, b"\x01\x05\x07\x00\x10", Container(version=1, type=5, seq=7, length=16), 5)


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=MAX_PAYLOAD))
def test_encode_frame_matches_the_declared_frame(msg_type: int, seq: int, payload: bytes) -> None:
    data = encode_frame(msg_type, seq, payload)
    assert data.startswith(SOF)
    assert len(data) == len(payload) + FRAME_OVERHEAD
    parsed = Frame.parse(data)
    body = parsed.body.value
    assert (body.version, body.type, body.seq, body.payload) == (
        PROTOCOL_VERSION,
        msg_type,
        seq,
        payload,
    )
    built = Frame.build(
        {"body": {"value": {"version": 1, "type": msg_type, "seq": seq, "payload": payload}}}
    )
    assert built == data


def test_declared_frame_rejects_a_bad_crc() -> None:
    data = bytearray(encode_frame(1, 2, b"abc"))
    data[-1] ^= 0x01
    with pytest.raises(ChecksumError):
        Frame.parse(bytes(data))


def test_oversized_payload_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="MAX_PAYLOAD"):
        encode_frame(1, 0, bytes(MAX_PAYLOAD + 1))
