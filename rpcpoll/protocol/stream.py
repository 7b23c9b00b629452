"""Streams over TTHeader, sans I/O: frames, events and the state of one stream.

Kitex's TTHeader Streaming, where it fits (docs/protocol.md, "Streams"): every stream event is
one TTHeader frame flagged `FLAG_STREAMING`, whose sequence id is the stream id and whose
int-keyed header 27 says what it is (`FrameType`):

- HEADER opens a stream (client: method, service, metadata, deadline) or carries the
  server's response metadata (sent before its first DATA or its TRAILER);
- DATA carries one message;
- TRAILER from the client half-closes (no more requests; no status); from the server it ends
  the stream with a status code, message and trailing metadata;
- RST ends a stream from either side at once, with a status;
- META carries credit (below); Kitex peers ignore it.

Unlike Kitex (whose per-stream queues are unbounded), rpcpoll streams have **credit**: a
receiver announces a window in bytes in its HEADER (`STREAM_WINDOW`, `DEFAULT_WINDOW` if
absent); the sender may send a DATA frame while its credit for the stream is positive, and
each frame uses up its payload's size (at least 1), so credit can go negative by at most one
message. The receiver grants more (a META frame with `STREAM_CREDIT`) as its application
consumes messages, once half the window has been consumed. A receiver therefore holds at most
a window plus one message per stream, and a slow reader stops its sender, on both sides.

`StreamState` applies these rules for one side of one stream; the server and client runtimes
own the I/O (rpcpoll/server, rpcpoll/client, rpcpoll/aio).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .frame import (
    FLAG_STREAMING,
    SERVICE_KEY,
    FrameType,
    IntKey,
    ProtocolError,
    _checked,
    _header_info,
    parse_blocks,
    parse_info,
)
from .status import StatusCode

__all__ = [
    "DEFAULT_WINDOW",
    "STREAM_CREDIT",
    "STREAM_FLAGS",
    "STREAM_WINDOW",
    "Phase",
    "StreamEvent",
    "StreamReset",
    "StreamState",
    "credit_info",
    "data_info",
    "open_info",
    "parse_stream_frame",
    "response_header_info",
    "rst_info",
    "trailer_info",
]

STREAM_FLAGS: Final = FLAG_STREAMING
#: rpcpoll's int keys for credit (Kitex has none: it ignores them).
STREAM_WINDOW: Final = 0x8002  # in a HEADER: the sender's receive window, bytes (decimal)
STREAM_CREDIT: Final = 0x8003  # in a META: bytes of credit granted (decimal)
DEFAULT_WINDOW: Final = 1024 * 1024


class StreamReset(Exception):
    """A stream must end with an RST of `code` (a rule of the stream was broken)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------- frames out


def _ints(frame_type: FrameType, method: str = "") -> list[tuple[int, bytes]]:
    ints = [(int(IntKey.FRAME_TYPE), b"%d" % frame_type)]
    if method:
        ints.append((int(IntKey.TO_METHOD), method.encode()))
    return ints


def open_info(
    method: str,
    service: str,
    metadata: Mapping[str, str] | None = None,
    timeout_ms: int | None = None,
    window: int = DEFAULT_WINDOW,
) -> bytes:
    """The client's HEADER: opens a stream of `service`/`method`."""
    ints = _ints(FrameType.HEADER, method)
    if timeout_ms is not None:
        ints.append((int(IntKey.RPC_TIMEOUT), b"%d" % timeout_ms))
    if window != DEFAULT_WINDOW:
        ints.append((STREAM_WINDOW, b"%d" % window))
    strs = {SERVICE_KEY: service} if service else {}
    strs.update(_checked(metadata or {}))
    return _header_info(ints, strs)


def response_header_info(
    metadata: Mapping[str, str] | None = None, window: int = DEFAULT_WINDOW
) -> bytes:
    """The server's HEADER: its response metadata and receive window."""
    ints = _ints(FrameType.HEADER)
    if window != DEFAULT_WINDOW:
        ints.append((STREAM_WINDOW, b"%d" % window))
    return _header_info(ints, _checked(metadata or {}))


_DATA_INFO: Final = _header_info(_ints(FrameType.DATA), {})


def data_info() -> bytes:
    """The header of every DATA frame (the same bytes each time)."""
    return _DATA_INFO


def trailer_info(
    status: int | None = None, message: str = "", metadata: Mapping[str, str] | None = None
) -> bytes:
    """A TRAILER: the client's half-close (no status), or the server's end of stream."""
    ints = _ints(FrameType.TRAILER)
    if status is not None:
        ints.append((int(IntKey.STATUS_CODE), b"%d" % status))
        if message:
            ints.append((int(IntKey.STATUS_MESSAGE), message.encode()[:0xFFFF]))
    return _header_info(ints, _checked(metadata or {}))


def rst_info(status: int = StatusCode.CANCELLED, message: str = "") -> bytes:
    """An RST: the stream (or unary call) with this sequence id ends now."""
    ints = _ints(FrameType.RST)
    ints.append((int(IntKey.STATUS_CODE), b"%d" % status))
    if message:
        ints.append((int(IntKey.STATUS_MESSAGE), message.encode()[:0xFFFF]))
    return _header_info(ints, {})


def credit_info(credit: int) -> bytes:
    """A META granting `credit` more bytes."""
    return _header_info([*_ints(FrameType.META), (STREAM_CREDIT, b"%d" % credit)], {})


# ------------------------------------------------------------------------------- frames in


@dataclass(slots=True)
class StreamEvent:
    """One stream frame, parsed: `kind` says which fields mean something."""

    kind: FrameType
    stream_id: int
    method: str = ""
    service: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    timeout_ms: int | None = None
    status: int | None = None  # TRAILER (server's) and RST
    message: str = ""
    window: int = DEFAULT_WINDOW  # HEADER
    credit: int = 0  # META
    payload: memoryview | bytes = b""


def parse_stream_frame(
    stream_id: int, info: bytes, payload: memoryview | bytes, max_entries: int | None = None
) -> StreamEvent:
    """The StreamEvent of a frame flagged FLAG_STREAMING; ProtocolError if malformed."""
    _msg_type, method, service, timeout_ms, status, message, metadata, kind = parse_info(
        info, max_entries
    )
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise ProtocolError(f"unknown stream frame type {kind}") from None
    event = StreamEvent(frame_type, stream_id, method, service, metadata, timeout_ms)
    if frame_type is FrameType.DATA:  # the hot path: its header is parsed once and cached
        event.payload = payload
        return event
    ints = parse_blocks(info, max_entries)[0]  # what parse_info does not return
    if frame_type is FrameType.HEADER:
        window = ints.get(STREAM_WINDOW)
        if window is not None:
            event.window = _positive(window, "window")
    elif frame_type is FrameType.META:
        credit = ints.get(STREAM_CREDIT)
        event.credit = _positive(credit, "credit") if credit is not None else 0
    elif frame_type in (FrameType.TRAILER, FrameType.RST):
        event.status = status if IntKey.STATUS_CODE in ints else None
        event.message = message
        if frame_type is FrameType.RST and event.status is None:
            event.status = StatusCode.CANCELLED
    return event


def _positive(raw: bytes, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ProtocolError(f"stream {what} {raw!r} is not a number") from None
    if value <= 0 or value > 1 << 40:
        raise ProtocolError(f"stream {what} {value} is out of range")
    return value


# ------------------------------------------------------------------------------- one stream


class Phase(enum.Enum):
    OPEN = "open"
    LOCAL_CLOSED = "half-closed (local)"  # we sent our last message
    REMOTE_CLOSED = "half-closed (remote)"  # the peer sent its last message
    CLOSED = "closed"


class StreamState:
    """The rules of one side of one stream: what may be sent and received, and credit.

    `send_credit` starts at the peer's window (from its HEADER; DEFAULT_WINDOW until known).
    `window` is ours. Raises StreamReset when the peer breaks a rule; ProtocolError-free.
    """

    __slots__ = ("consumed", "phase", "received", "send_credit", "window")

    def __init__(self, window: int = DEFAULT_WINDOW, peer_window: int = DEFAULT_WINDOW) -> None:
        self.phase = Phase.OPEN
        self.window = window
        self.send_credit = peer_window
        self.received = 0  # bytes of DATA received and not yet granted back
        self.consumed = 0  # of which the application has taken this many

    # -- sending ---------------------------------------------------------------------------

    @property
    def can_send(self) -> bool:
        """Whether a DATA frame may go now (the stream is open for us, credit is positive)."""
        return self.phase in (Phase.OPEN, Phase.REMOTE_CLOSED) and self.send_credit > 0

    def sent_data(self, size: int) -> None:
        if self.phase not in (Phase.OPEN, Phase.REMOTE_CLOSED):
            raise RuntimeError(f"cannot send on a {self.phase.value} stream")
        self.send_credit -= max(1, size)

    def sent_end(self) -> None:
        """We sent our last message (a TRAILER; for a server, the end of the stream)."""
        self.phase = Phase.CLOSED if self.phase is Phase.REMOTE_CLOSED else Phase.LOCAL_CLOSED

    def granted(self, credit: int) -> None:
        self.send_credit += credit

    def peer_window(self, window: int) -> None:
        """The peer's HEADER announced its window: our credit is that, less what we sent."""
        used = DEFAULT_WINDOW - self.send_credit
        self.send_credit = window - used

    # -- receiving ---------------------------------------------------------------------------

    def received_data(self, size: int) -> None:
        """A DATA frame arrived; StreamReset if the peer had ended its side or overran the
        window it was given (by more than the one message it may overshoot with)."""
        if self.phase in (Phase.REMOTE_CLOSED, Phase.CLOSED):
            raise StreamReset(StatusCode.INVALID_ARGUMENT, "data after the end of the stream")
        # `received` is what the peer sent and was not granted back: its credit is the window
        # less that, and it may send while that is positive.
        if self.received >= self.window:
            raise StreamReset(
                StatusCode.RESOURCE_EXHAUSTED,
                f"the peer sent past its credit ({self.window} bytes unread)",
            )
        self.received += max(1, size)

    def received_end(self) -> None:
        self.phase = Phase.CLOSED if self.phase is Phase.LOCAL_CLOSED else Phase.REMOTE_CLOSED

    def consume(self, size: int) -> int:
        """The application took a message of `size` bytes; returns the credit to grant the
        peer now (0: not yet, half a window has not been consumed)."""
        self.consumed += max(1, size)
        if self.consumed * 2 < self.window:
            return 0
        grant = self.consumed
        self.received -= grant
        self.consumed = 0
        return grant

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED
