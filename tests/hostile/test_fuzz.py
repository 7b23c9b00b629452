"""The frame and header parsers under arbitrary bytes: they return a frame, ask for more, or
raise the project's own ProtocolError; nothing else, however malformed (hypothesis)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_testutil import call_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcpoll.protocol.frame import (
    FrameReader,
    FrameType,
    IntKey,
    ProtocolError,
    decode_frame,
    parse_info,
)
from rpcpoll.protocol.stream import parse_stream_frame
from rpcpoll.transport.linkbuffer import LinkBuffer

VALID = [
    call_frame(1, "hi"),
    call_frame(7, "meta", b"p" * 40, metadata={"trace-id": "abc", "k": "v"}, timeout_ms=250),
    call_frame(9, out_of_order=True),
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(data: bytes, max_frame_size: int = 1 << 16) -> None:
    """Feed `data` to a FrameReader in two chunks; parse every frame it returns."""
    reader = FrameReader(max_frame_size)
    buf = LinkBuffer()
    try:
        for chunk in (data[: len(data) // 2], data[len(data) // 2 :]):
            buf.write_binary(chunk)
            buf.flush()
            while True:
                try:
                    raw = reader.read_raw(buf)
                except ProtocolError:
                    return
                if raw is None:
                    reader.pending_size(buf)  # validates, never raises anything else
                    break
                for limit in (None, 4):
                    try:
                        parse_info(raw[2], limit)
                    except ProtocolError:
                        pass
    finally:
        buf.close()


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_give_frames_or_protocol_errors(data: bytes) -> None:
    read_all(data)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_mutated_frames_give_frames_or_protocol_errors(
    frame: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(frame)
    for index, value in flips:
        data[index % len(data)] = value
    mutated = bytes(data[: max(0, len(data) - cut)])
    read_all(mutated)
    try:
        decode_frame(mutated, max_frame_size=1 << 16)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=400), st.none() | st.integers(0, 8))
def test_random_header_info_parses_or_raises_protocol_error(info: bytes, limit: int | None) -> None:
    try:
        parse_info(bytes([0x20, 0]) + info, limit)
    except ProtocolError:
        pass
    try:
        parse_info(info, limit)
    except ProtocolError:
        pass


@FUZZ
@given(st.integers(0, 7), st.binary(max_size=300), st.binary(max_size=64))
def test_random_stream_frames_parse_or_raise_protocol_error(
    frame_type: int, rest: bytes, payload: bytes
) -> None:
    # an int-key block holding the frame type (key 27), then arbitrary bytes
    key = int(IntKey.FRAME_TYPE).to_bytes(2, "big")
    value = str(frame_type).encode()
    info = bytes([0x00, 1]) + key + len(value).to_bytes(2, "big") + value + rest
    for candidate in (info, rest):
        try:
            event = parse_stream_frame(5, candidate, payload, 8)
        except ProtocolError:
            continue
        assert isinstance(event.kind, FrameType)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
@pytest.mark.timeout(120)
def test_coverage_guided_fuzzing_finds_no_crash() -> None:
    """tests/hostile/fuzz_atheris.py for a bounded number of inputs (libFuzzer exits non-zero
    on any exception other than the project's own errors)."""
    script = Path(__file__).with_name("fuzz_atheris.py")
    done = subprocess.run(
        [sys.executable, str(script), "-runs=30000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
