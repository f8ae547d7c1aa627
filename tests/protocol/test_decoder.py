from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import strategies as mst
from protocol.decoder import CrcMismatch, FrameDecoder, FrameReceived, Garbage, Oversized, Truncated
from protocol.frames import MAX_FRAME, MAX_PAYLOAD, SOF, encode_frame
from protocol.messages import Message, decode


def _decode_all(
    chunks: list[bytes], expire: bool = True
) -> tuple[list[tuple[int, Message]], FrameDecoder]:
    d = FrameDecoder()
    out: list[tuple[int, Message]] = []
    for chunk in chunks:
        for ev in d.feed(chunk):
            if isinstance(ev, FrameReceived):
                out.append((ev.frame.seq, decode(ev.frame.type, ev.frame.payload)))
        assert d.buffered <= MAX_FRAME
    if expire:
        for ev in d.expire():
            if isinstance(ev, FrameReceived):
                out.append((ev.frame.seq, decode(ev.frame.type, ev.frame.payload)))
    return out, d


@given(data=st.data())
def test_any_split_of_a_valid_stream_yields_the_same_frames(data: st.DataObject) -> None:
    stream, expected = data.draw(mst.streams())
    chunks = data.draw(mst.chunkings(stream))
    got, _ = _decode_all(chunks, expire=False)
    assert got == expected


@given(mst.streams())
def test_one_byte_at_a_time(sample: tuple[bytes, list[tuple[int, Message]]]) -> None:
    stream, expected = sample
    got, d = _decode_all([bytes([b]) for b in stream], expire=False)
    assert got == expected
    assert d.bytes_examined <= len(stream)  # the marker search looks at each byte once


def _is_subsequence(needles: list[tuple[int, Message]], hay: list[tuple[int, Message]]) -> bool:
    it = iter(hay)
    return all(any(n == h for h in it) for n in needles)


@settings(max_examples=200)
@given(data=st.data())
def test_garbage_never_loses_a_later_intact_frame(data: st.DataObject) -> None:
    stream, frames, intact = data.draw(mst.corrupted_streams())
    chunks = data.draw(mst.chunkings(stream))
    got, _ = _decode_all(chunks)
    must = [f for f, ok in zip(frames, intact, strict=True) if ok]
    assert _is_subsequence(must, got)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise_and_the_buffer_stays_bounded(chunks: list[bytes]) -> None:
    d = FrameDecoder()
    for c in chunks:
        d.feed(c)
        assert d.buffered <= MAX_FRAME
    d.expire()
    assert d.buffered == 0


def test_oversized_length_is_refused_before_buffering() -> None:
    d = FrameDecoder()
    header = SOF + bytes([1, 1, 0]) + (MAX_PAYLOAD + 1).to_bytes(2, "big")
    events = d.feed(header)
    assert events == [Oversized(MAX_PAYLOAD + 1)]
    good = encode_frame(1, 9, b"ok")
    events = d.feed(b"\x00" * 5000 + good)
    assert isinstance(events[-1], FrameReceived) and events[-1].frame.seq == 9
    assert d.buffered == 0


def test_bad_crc_then_good_frame() -> None:
    bad = bytearray(encode_frame(1, 1, b"hello"))
    bad[8] ^= 0xFF
    good = encode_frame(1, 2, b"world")
    events = FrameDecoder().feed(bytes(bad) + good)
    assert isinstance(events[0], CrcMismatch)
    assert [e.frame.seq for e in events if isinstance(e, FrameReceived)] == [2]


def test_truncated_frame_swallowing_the_next_is_recovered() -> None:
    first = encode_frame(1, 1, b"x" * 100)
    good = encode_frame(1, 2, b"short")
    d = FrameDecoder()
    events = d.feed(first[:20] + good)
    assert not any(isinstance(e, FrameReceived) for e in events)  # still waiting for 100 bytes
    assert d.in_frame
    events = d.expire()
    assert isinstance(events[0], Truncated)
    assert [e.frame.seq for e in events if isinstance(e, FrameReceived)] == [2]
    # and when traffic goes on instead of idling, the CRC failure finds it too
    d = FrameDecoder()
    more = encode_frame(1, 3, b"z" * 120)
    events = d.feed(first[:20] + good + more)
    assert [e.frame.seq for e in events if isinstance(e, FrameReceived)] == [2, 3]


def test_garbage_is_counted() -> None:
    events = FrameDecoder().feed(b"noise" + encode_frame(1, 1, b""))
    assert events[0] == Garbage(5)


def test_work_is_linear_in_bytes_fed() -> None:
    # A pathological stream: markers everywhere.  The marker search still looks
    # at each byte once, whatever the chunking.
    stream = (SOF + b"\x01") * 3000 + encode_frame(1, 7, b"end")
    d = FrameDecoder()
    seqs = []
    for i in range(0, len(stream), 7):
        seqs += [e.frame.seq for e in d.feed(stream[i : i + 7]) if isinstance(e, FrameReceived)]
    seqs += [e.frame.seq for e in d.expire() if isinstance(e, FrameReceived)]
    assert seqs == [7]
    assert d.bytes_examined <= len(stream)
