"""TTHeader frames: the documented vectors, round trips, incremental reads and hostile input."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcpoll.protocol.frame import (
    FLAG_OUT_OF_ORDER,
    BadMagicError,
    Frame,
    FrameReader,
    FrameTooLargeError,
    MalformedHeaderError,
    MessageType,
    ProtocolError,
    RequestTemplate,
    decode_frame,
    encode_frame,
    write_exception,
    write_frame,
    write_reply,
)
from rpcpoll.transport import BufferCache, LinkBuffer

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def doc_vectors() -> dict[str, bytes]:
    found = re.findall(r"^vector (\w+): ([0-9a-f]+)$", DOC.read_text(), re.MULTILINE)
    return {name: bytes.fromhex(hexes) for name, hexes in found}


EXPECTED = {
    "call": Frame(1, MessageType.CALL, "Echo", "echo.EchoService", b"\x81\xa11\xa5hello"),
    "call_with_timeout_and_metadata": Frame(
        7,
        MessageType.CALL,
        "Echo",
        "echo.EchoService",
        b"\x80",
        timeout_ms=250,
        metadata={"trace-id": "abc"},
    ),
    "reply": Frame(1, MessageType.REPLY, payload=b"\x81\xa11\xa5hello"),
    "exception": Frame(1, MessageType.EXCEPTION, status=12, status_message="unknown method"),
}


def same(a: Frame, b: Frame) -> bool:
    fields = ("seq_id", "message_type", "method", "service", "timeout_ms", "status", "flags")
    return (
        all(getattr(a, f) == getattr(b, f) for f in fields)
        and a.status_message == b.status_message
        and dict(a.metadata) == dict(b.metadata)
        and bytes(a.payload) == bytes(b.payload)
    )


def test_the_documented_vectors_decode_and_re_encode() -> None:
    vectors = doc_vectors()
    assert set(vectors) == set(EXPECTED)
    for name, data in vectors.items():
        frame = decode_frame(data)
        assert same(frame, EXPECTED[name]), name
        assert encode_frame(frame) == data, name
        assert encode_frame(EXPECTED[name]) == data, name


def test_write_paths_produce_the_same_bytes_as_encode() -> None:
    vectors = doc_vectors()

    def written(fill) -> bytes:  # type: ignore[no-untyped-def]
        buf = LinkBuffer()
        fill(buf)
        buf.flush()
        return bytes(buf)

    template = RequestTemplate("echo.EchoService", "Echo")
    assert written(lambda b: template.write(b, 1, b"\x81\xa11\xa5hello")) == vectors["call"]
    assert (
        written(lambda b: template.write(b, 7, b"\x80", 250, {"trace-id": "abc"}))
        == vectors["call_with_timeout_and_metadata"]
    )
    assert written(lambda b: write_reply(b, 1, b"\x81\xa11\xa5hello")) == vectors["reply"]
    assert written(lambda b: write_exception(b, 1, 12, "unknown method")) == vectors["exception"]
    for name, frame in EXPECTED.items():
        assert written(lambda b, f=frame: write_frame(b, f)) == vectors[name]


def test_large_payloads_are_linked_and_round_trip() -> None:
    payload = bytes(range(256)) * 100  # 25.6 KB: linked, not copied, into the buffer
    buf = LinkBuffer()
    RequestTemplate("s.S", "M").write(buf, 42, payload, flags=FLAG_OUT_OF_ORDER)
    buf.flush()
    frame = FrameReader().read(buf)
    assert frame is not None and frame.seq_id == 42 and frame.flags == FLAG_OUT_OF_ORDER
    assert bytes(frame.payload) == payload and len(buf) == 0


def test_reader_returns_none_until_a_frame_is_complete() -> None:
    data = doc_vectors()["call_with_timeout_and_metadata"] * 3
    buf = LinkBuffer(BufferCache(min_size=8, max_size=1 << 16))
    reader = FrameReader()
    frames = []
    for byte in data:  # one byte at a time, as the worst network would deliver it
        buf.write_byte(byte)
        buf.flush()
        frame = reader.read(buf)
        if frame is not None:
            frames.append(frame)
    assert len(frames) == 3 and len(buf) == 0
    assert all(same(f, EXPECTED["call_with_timeout_and_metadata"]) for f in frames)


def test_payload_is_a_view_without_a_copy_when_the_frame_lies_in_one_block() -> None:
    data = doc_vectors()["reply"]
    buf = LinkBuffer()
    buf.write_binary(data)
    buf.flush()
    frame = FrameReader().read(buf)
    assert frame is not None and isinstance(frame.payload, memoryview)


def _fixed(length: int, magic: int = 0x1000, words: int = 1) -> bytes:
    return struct.pack(">IHHIH", length, magic, 0, 1, words)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (_fixed(100, magic=0x1234), BadMagicError),
        (_fixed(4 * 1024 * 1024), FrameTooLargeError),  # 4 MiB + 4 > the default limit
        (_fixed(10, words=0), MalformedHeaderError),  # header of 0 bytes
        (_fixed(12, words=5), MalformedHeaderError),  # header longer than the frame
    ],
)
def test_a_bad_fixed_header_fails_before_the_body_arrives(header: bytes, error: type) -> None:
    buf = LinkBuffer()
    buf.write_binary(header)  # only 14 bytes: the reader must not wait for the rest
    buf.flush()
    with pytest.raises(error):
        FrameReader().read(buf)
    with pytest.raises(error):
        FrameReader().pending_size(buf)


def test_the_frame_size_limit_is_configurable() -> None:
    data = doc_vectors()["call"]
    with pytest.raises(FrameTooLargeError):
        decode_frame(data, max_frame_size=len(data) - 1)
    assert decode_frame(data, max_frame_size=len(data)).method == "Echo"


@pytest.mark.parametrize(
    "info",
    [
        b"\x21\x00\x00\x00",  # unknown protocol id
        b"\x20\x00\x10\x00\x05\x00",  # int block of 5 entries, none there
        b"\x20\x00\x10\x00\x01\x00\x16\x00\x09\x31\x00\x00",  # value runs past the header
        b"\x20\x00\x01\x00\x01\x00\x03isn\x00\x20ab\x00",  # string value runs past the header
        b"\x20\x00\x01\x00\x01\xff\xff",  # string key runs past the header
        b"\x20\x00\x01\x00\x02\x00\x01k\x00\x01v",  # two string entries, one there
        b"\x20\x00\x01\x00\x01\x00\x01\xff\x00\x01v",  # a key that is not UTF-8
        b"\x20\x00\x42\x00",  # unknown block id
        b"\x20\x00\x10\x00\x01\x00\x16\x00\x01\x39\x00\x00",  # message type 9
        b"\x20\x00\x10\x00\x01\x00\x0c\x00\x02xy\x00\x00\x00",  # timeout not a number
        b"\x20\x05\x00\x00",  # transform ids run past the header
    ],
)
def test_malformed_header_info_raises_protocol_error(info: bytes) -> None:
    info += bytes(-len(info) % 4)
    data = struct.pack(">IHHIH", 10 + len(info), 0x1000, 0, 1, len(info) // 4) + info
    with pytest.raises(MalformedHeaderError):
        decode_frame(data)


def test_metadata_must_be_strings_and_not_reserved() -> None:
    template = RequestTemplate("s.S", "M")
    with pytest.raises(TypeError):
        template.write(LinkBuffer(), 1, b"", metadata={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        template.write(LinkBuffer(), 1, b"", metadata={"isn": "other"})
    with pytest.raises(ValueError):
        template.write(LinkBuffer(), 1, b"", metadata={"k": "v" * 70_000})


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    buf = LinkBuffer()
    buf.write_binary(data)
    buf.flush()
    reader = FrameReader(max_frame_size=1 << 16)
    try:
        while reader.read(buf) is not None:
            pass
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_vectors_decode_or_raise_protocol_errors(data: st.DataObject) -> None:
    vectors = doc_vectors()
    frame = bytearray(vectors[data.draw(st.sampled_from(sorted(vectors)))])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(4, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    try:
        decode_frame(bytes(frame))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(list(MessageType)),
    method=st.text(max_size=20),
    service=st.text(max_size=30),
    payload=st.binary(max_size=300),
    timeout=st.none() | st.integers(0, 10**9),
    metadata=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k != "isn"), st.text(max_size=20)
    ),
)
def test_any_frame_round_trips(
    seq: int,
    kind: MessageType,
    method: str,
    service: str,
    payload: bytes,
    timeout: int | None,
    metadata: dict[str, str],
) -> None:
    frame = Frame(seq, kind, method, service, payload, timeout, metadata=metadata)
    if kind == MessageType.EXCEPTION:
        frame.status, frame.status_message, frame.payload = 13, "boom", b""
    assert same(decode_frame(encode_frame(frame)), frame)
