from __future__ import annotations

import pytest
from construct import Container, ListContainer
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import strategies as mst
from protocol.errors import ErrorCode
from protocol.messages import (
    CATALOGUE,
    Ack,
    Auth,
    Commit,
    Error,
    Hello,
    Message,
    MessageError,
    PutAccounts,
    PutRecord,
    SetSettings,
    decode,
)
from tests.protocol.roundtrip import common


@pytest.mark.parametrize(
    "cls", sorted(CATALOGUE.values(), key=lambda c: c.TYPE), ids=lambda c: c.__name__
)
@settings(max_examples=60)
@given(data=st.data())
def test_every_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(mst.message_of(cls))
    payload = msg.encode()
    assert decode(cls.TYPE, payload) == msg
    # plain and compiled structs agree on the same bytes
    container = cls.STRUCT.parse(payload)
    assert cls.STRUCT.build(container) == payload
    assert cls.STRUCT.compile().parse(payload) == container


def test_every_message_has_a_byte_diagram() -> None:
    for cls in CATALOGUE.values():
        assert cls.__doc__ and "+--" in cls.__doc__, cls.__name__


def test_type_bytes_split_requests_and_replies() -> None:
    for t, cls in CATALOGUE.items():
        assert (t < 0x80) == cls.IS_REQUEST, cls.__name__


def test_fixed_examples_in_one_line_each() -> None:
    common(Ack.STRUCT, b"\x00\x00\x00\x05", Container(value=5))  # Terminated: no fixed size
    common(Auth.STRUCT, b"\x04s3cr", Container(password="s3cr"))
    common(Error.STRUCT, b"\x00\x09\xff\xff\x02no", Container(code=9, index=0xFFFF, message="no"))
    common(
        PutAccounts.STRUCT,
        bytes.fromhex("000000010100010101410441636d65"),
        Container(
            txn=1,
            groups=ListContainer(
                [
                    Container(
                        parent="",
                        accounts=ListContainer(
                            [
                                Container(
                                    flags=Container(
                                        has_number=False,
                                        set_password=False,
                                        password_enabled=False,
                                        active=True,
                                    ),
                                    code="A",
                                    name="Acme",
                                    password=None,
                                    number=None,
                                )
                            ]
                        ),
                    )
                ]
            ),
        ),
    )


def test_put_groups_records_by_parent() -> None:
    recs = (PutRecord("a", "P", "x"), PutRecord("b", "P", "y"), PutRecord("c", "Q", "z"))
    c = PutAccounts(1, recs).to_container()
    assert [g["parent"] for g in c["groups"]] == ["P", "Q"]
    assert decode(PutAccounts.TYPE, PutAccounts(1, recs).encode()) == PutAccounts(1, recs)


def test_passwords_never_in_repr() -> None:
    assert "hunter" not in repr(Auth("hunter2"))
    assert "pw12" not in repr(PutAccounts(1, (PutRecord("a", password="pw12"),)))


@pytest.mark.parametrize(
    ("msg_type", "payload", "code"),
    [
        (0x7F, b"", ErrorCode.UNKNOWN_MESSAGE),
        (Hello.TYPE, b"", ErrorCode.MALFORMED),
        (Ack.TYPE, b"\x00\x00\x00\x01\x00", ErrorCode.MALFORMED),  # trailing byte
        (Auth.TYPE, b"\x02\xff\xfe", ErrorCode.MALFORMED),  # not UTF-8
        (Auth.TYPE, b"\x05ab", ErrorCode.MALFORMED),  # str8 promises 5 bytes, 2 follow
        (Commit.TYPE, b"\x00\x00\x00\x01" + bytes(8), ErrorCode.MALFORMED),  # digest cut short
        (SetSettings.TYPE, b"\x02" + bytes(9), ErrorCode.MALFORMED),  # flag byte must be 0/1
    ],
)
def test_bad_payloads_raise_message_error(msg_type: int, payload: bytes, code: ErrorCode) -> None:
    with pytest.raises(MessageError) as info:
        decode(msg_type, payload)
    assert info.value.code == code


@given(st.integers(0, 255), st.binary(max_size=200))
def test_decode_never_raises_anything_but_message_error(msg_type: int, payload: bytes) -> None:
    try:
        decode(msg_type, payload)
    except MessageError:
        pass


# -- the hand-written codecs stay bound to the construct declarations ----------------

from protocol import messages as _m  # noqa: E402

_HAND = sorted(_m._FAST_DECODE, key=int)


def _reference_decode(cls: type[Message], payload: bytes) -> Message | None:
    """What the declared STRUCT accepts: compiled parse plus canonical rebuild."""
    try:
        container = cls.STRUCT.compile().parse(payload)
        if cls.STRUCT.build(container) != payload:
            return None
    except Exception:
        return None
    return cls.from_container(container)


def _hand_decode(msg_type: int, payload: bytes) -> Message | None:
    try:
        return decode(msg_type, payload)
    except MessageError:
        return None


@pytest.mark.parametrize("msg_type", _HAND, ids=lambda t: _m.CATALOGUE[t].__name__)
@settings(max_examples=150)
@given(data=st.data())
def test_hand_codecs_agree_with_the_declared_structs(msg_type: int, data: st.DataObject) -> None:
    cls = _m.CATALOGUE[msg_type]
    msg = data.draw(mst.message_of(cls))
    payload = msg.encode()
    assert cls.STRUCT.build(msg.to_container()) == payload  # encoder == declaration
    # a mutated payload is accepted by one exactly when it is accepted by the other
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        pos = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del mutated[pos:]
        elif op == "insert":
            mutated.insert(pos, data.draw(st.integers(0, 255)))
        else:
            mutated.append(data.draw(st.integers(0, 255)))
    for candidate in (payload, bytes(mutated)):
        assert _hand_decode(msg_type, candidate) == _reference_decode(cls, candidate)


@pytest.mark.parametrize("msg_type", _HAND, ids=lambda t: _m.CATALOGUE[t].__name__)
@given(payload=st.binary(max_size=64))
def test_hand_codecs_agree_on_random_bytes(msg_type: int, payload: bytes) -> None:
    assert _hand_decode(msg_type, payload) == _reference_decode(_m.CATALOGUE[msg_type], payload)


@settings(max_examples=80)
@given(
    records=st.lists(mst.put_records, max_size=400),
    codes=st.lists(mst.codes, max_size=400),
    max_payload=st.integers(300, 1024),
)
def test_batches_fit_the_frame_and_keep_order(
    records: list[PutRecord], codes: list[str], max_payload: int
) -> None:
    puts = _m.batch_puts(7, records, max_payload)
    assert [r for b in puts for r in b.records] == records
    deletes = _m.batch_deletes(7, codes, max_payload)
    assert [c for b in deletes for c in b.codes] == codes
    for batch in (*puts, *deletes):
        assert len(batch.encode()) <= max_payload
        size = len(batch.records) if isinstance(batch, PutAccounts) else len(batch.codes)
        assert 1 <= size <= _m.MAX_BATCH_RECORDS
