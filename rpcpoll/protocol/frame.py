"""TTHeader frames, sans I/O: Kitex's framing with rpcpoll's info keys and a msgpack payload.

Every byte is specified in docs/protocol.md. In short (all integers big-endian)::

    u32 length        bytes after this field (frame size - 4)
    u16 magic         0x1000
    u16 flags         0x0001: the sender accepts out-of-order replies (multiplexing)
    u32 seq_id        matches a reply to its call
    u16 header_words  size of the header info in 4-byte words
    header info       u8 protocol id (0x20, msgpack), u8 transform count (0),
                      info blocks (0x10 int-keyed, 0x01 string-keyed), zero padding
    payload           the msgpack-encoded message (empty in an exception)

Nothing here touches a socket or a clock: frames are read from and written to LinkBuffers (or
plain bytes), so the module can be tested and fuzzed with byte strings. Decoding never trusts
the peer: sizes are checked against `max_frame_size` and the header before anything is
allocated or waited for.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from ..transport.linkbuffer import LinkBuffer

__all__ = [
    "CONNECTION_RESET_KEY",
    "DEFAULT_MAX_FRAME_SIZE",
    "FIXED_HEADER",
    "FIXED_SIZE",
    "FLAG_OUT_OF_ORDER",
    "FLAG_STREAMING",
    "MAGIC",
    "PROTOCOL_MSGPACK",
    "REPLY_HEAD",
    "BadMagicError",
    "Frame",
    "FrameReader",
    "FrameTooLargeError",
    "FrameType",
    "HeaderLimitError",
    "IntKey",
    "MalformedHeaderError",
    "MessageType",
    "ProtocolError",
    "RequestTemplate",
    "append_frame",
    "check_fixed",
    "decode_frame",
    "encode_frame",
    "exception_info",
    "frame_from_raw",
    "parse_blocks",
    "parse_info",
    "refusal_frame",
    "reply_info",
    "stream_info",
    "write_exception",
    "write_frame",
    "write_info_frame",
    "write_reply",
]

MAGIC: Final = 0x1000
FLAG_OUT_OF_ORDER: Final = 0x0001
FLAG_STREAMING: Final = 0x0002  # Kitex's HeaderFlagsStreaming: a stream frame (FrameType)
PROTOCOL_MSGPACK: Final = 0x20
DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024
FIXED_SIZE: Final = 14  # length, magic, flags, seq_id, header_words

INFO_PADDING: Final = 0x00
INFO_KEYVALUE: Final = 0x01
INFO_INTKEYVALUE: Final = 0x10
INFO_ACL_TOKEN: Final = 0x11

SERVICE_KEY: Final = "isn"  # Kitex's string key for the IDL service name
# Reply metadata by which a draining server asks clients not to reuse the connection (Kitex's).
CONNECTION_RESET_KEY: Final = "crrst"

_FIXED = struct.Struct(">IHHIH")
_U16 = struct.Struct(">H")
_U16_PAIR = struct.Struct(">HH")
_MAX_U16 = 0xFFFF
_MAX_HEADER = 4 * _MAX_U16


class MessageType(enum.IntEnum):
    CALL = 1
    REPLY = 2
    EXCEPTION = 3
    ONEWAY = 4


class FrameType(enum.IntEnum):
    """What a stream frame (FLAG_STREAMING) is: Kitex's TTHeader Streaming frame types. A
    unary call is cancelled with an RST frame carrying its sequence id."""

    META = 1
    HEADER = 2
    DATA = 3
    TRAILER = 4
    RST = 5


class IntKey(enum.IntEnum):
    """Keys of the int-keyed info block. The low ones are Kitex's (transmeta), so Kitex tools
    read them; 0x8000 and up are rpcpoll's own."""

    TO_METHOD = 9
    RPC_TIMEOUT = 12  # the caller's remaining timeout, in ms, as a decimal string
    MSG_TYPE = 22
    FRAME_TYPE = 27  # stream frames (FLAG_STREAMING): a FrameType, as a decimal string
    STATUS_CODE = 0x8000  # decimal StatusCode of an exception reply
    STATUS_MESSAGE = 0x8001


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid frame; the connection cannot continue."""


class BadMagicError(ProtocolError):
    pass


class FrameTooLargeError(ProtocolError):
    """A frame over the maximum frame size: `size` bytes, `seq_id` its sequence id (None when
    not known), `limit` the maximum."""

    def __init__(self, message: str, size: int = 0, limit: int = 0, seq_id: int | None = None):
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.seq_id = seq_id


class HeaderLimitError(ProtocolError):
    """A header over a receiver's limits (bytes or entries). The frame itself is well formed,
    so a server answers the call with RESOURCE_EXHAUSTED and the connection carries on."""


class MalformedHeaderError(ProtocolError):
    pass


@dataclass(slots=True)
class Frame:
    """One decoded (or to-be-encoded) frame. `metadata` is the peer's; treat it as read-only."""

    seq_id: int
    message_type: MessageType
    method: str = ""
    service: str = ""
    payload: bytes | memoryview = b""
    timeout_ms: int | None = None
    status: int = 0
    status_message: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    flags: int = 0


# ------------------------------------------------------------------------------- encoding


def _int_block(entries: list[tuple[int, bytes]]) -> bytes:
    out = [bytes([INFO_INTKEYVALUE]), _U16.pack(len(entries))]
    for key, value in entries:
        if len(value) > _MAX_U16:
            raise ValueError(f"header value for key {key} is longer than 65535 bytes")
        out.append(_U16_PAIR.pack(key, len(value)))
        out.append(value)
    return b"".join(out)


def _str_block(entries: Mapping[str, str]) -> bytes:
    out = [bytes([INFO_KEYVALUE]), _U16.pack(len(entries))]
    for key, value in entries.items():
        k, v = key.encode(), value.encode()
        if len(k) > _MAX_U16 or len(v) > _MAX_U16:
            raise ValueError(f"metadata entry {key!r} is longer than 65535 bytes")
        out += (_U16.pack(len(k)), k, _U16.pack(len(v)), v)
    return b"".join(out)


def _header_info(int_entries: list[tuple[int, bytes]], str_entries: Mapping[str, str]) -> bytes:
    info = bytes([PROTOCOL_MSGPACK, 0]) + _int_block(int_entries)
    if str_entries:
        info += _str_block(str_entries)
    info += bytes(-len(info) % 4)
    if len(info) > _MAX_HEADER:
        raise ValueError("frame header is larger than 262140 bytes")
    return info


def _int_entries(frame: Frame) -> list[tuple[int, bytes]]:
    entries: list[tuple[int, bytes]] = [(IntKey.MSG_TYPE, b"%d" % frame.message_type)]
    if frame.method:
        entries.append((IntKey.TO_METHOD, frame.method.encode()))
    if frame.timeout_ms is not None:
        entries.append((IntKey.RPC_TIMEOUT, b"%d" % frame.timeout_ms))
    if frame.message_type == MessageType.EXCEPTION:
        entries.append((IntKey.STATUS_CODE, b"%d" % frame.status))
        if frame.status_message:
            entries.append((IntKey.STATUS_MESSAGE, frame.status_message.encode()))
    return entries


def _str_entries(frame: Frame) -> dict[str, str]:
    entries: dict[str, str] = {}
    if frame.service:
        entries[SERVICE_KEY] = frame.service
    for key, value in frame.metadata.items():
        _check_metadata(key, value)
        entries[key] = value
    return entries


def _check_metadata(key: object, value: object) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise TypeError(f"metadata keys and values must be str, got {key!r}: {value!r}")
    if not key or key == SERVICE_KEY:
        raise ValueError(f"metadata key {key!r} is reserved or empty")


def encode_frame(frame: Frame) -> bytes:
    """The frame's bytes (the plain, allocation-happy path: tests, vectors, control frames)."""
    info = _header_info(_int_entries(frame), _str_entries(frame))
    payload = bytes(frame.payload)
    length = FIXED_SIZE - 4 + len(info) + len(payload)
    fixed = _FIXED.pack(length, MAGIC, frame.flags, frame.seq_id, len(info) // 4)
    return fixed + info + payload


def write_frame(buf: LinkBuffer, frame: Frame) -> None:
    """Append the frame to `buf` (not flushed). Large payloads are linked, not copied."""
    info = _header_info(_int_entries(frame), _str_entries(frame))
    _write(buf, frame.flags, frame.seq_id, info, frame.payload)


def _write(
    buf: LinkBuffer, flags: int, seq_id: int, info: bytes, payload: bytes | memoryview
) -> None:
    # Reserve the fixed header together with the header info, write the payload after it
    # (linked, not copied, when large), then back-patch the fixed header into the reserve.
    size = len(info)
    head = buf.malloc(FIXED_SIZE + size)
    head[FIXED_SIZE:] = info
    buf.write_binary(payload)
    length = FIXED_SIZE - 4 + size + len(payload)
    _FIXED.pack_into(head, 0, length, MAGIC, flags, seq_id, size >> 2)


class RequestTemplate:
    """Header bytes of one (service, method) computed once; per call only the sequence id,
    the timeout and the metadata change. Headers for recent timeout values are cached too (a
    client with a fixed timeout sends the same few millisecond values over and over)."""

    __slots__ = ("_base", "_base_info", "_by_timeout", "_str_entries", "method", "service")

    _CACHED_TIMEOUTS = 64

    def __init__(self, service: str, method: str, message_type: MessageType = MessageType.CALL):
        self.service = service
        self.method = method
        self._base = [
            (int(IntKey.MSG_TYPE), b"%d" % message_type),
            (int(IntKey.TO_METHOD), method.encode()),
        ]
        self._str_entries = {SERVICE_KEY: service}
        self._base_info = _header_info(self._base, self._str_entries)
        self._by_timeout: dict[int, bytes] = {}

    def header_info(
        self, timeout_ms: int | None = None, metadata: Mapping[str, str] | None = None
    ) -> bytes:
        """The header info bytes of a call with this timeout and metadata."""
        if not metadata:
            if timeout_ms is None:
                return self._base_info
            info = self._by_timeout.get(timeout_ms)
            if info is None:
                if len(self._by_timeout) >= self._CACHED_TIMEOUTS:
                    self._by_timeout.clear()
                info = self._by_timeout[timeout_ms] = _header_info(
                    [*self._base, (int(IntKey.RPC_TIMEOUT), b"%d" % timeout_ms)], self._str_entries
                )
            return info
        ints = self._base
        if timeout_ms is not None:
            ints = [*ints, (int(IntKey.RPC_TIMEOUT), b"%d" % timeout_ms)]
        strs = dict(self._str_entries)
        for key, value in metadata.items():
            _check_metadata(key, value)
            strs[key] = value
        return _header_info(ints, strs)

    def frame_size_bound(self, payload_size: int, metadata: Mapping[str, str] | None) -> int:
        """An upper bound of the size of a call frame with this payload size and metadata,
        whatever its timeout (exact but for the timeout's digits): for refusing a call that
        would exceed the maximum frame size before anything is sent."""
        info = len(self._base_info) + _TIMEOUT_ENTRY_MAX
        if metadata:  # each entry joins the string-keyed block that "isn" already opened
            for key, value in metadata.items():
                _check_metadata(key, value)
                info += 4 + len(key.encode()) + len(value.encode())
        return FIXED_SIZE + info + payload_size

    def write(
        self,
        buf: LinkBuffer,
        seq_id: int,
        payload: bytes | memoryview,
        timeout_ms: int | None = None,
        metadata: Mapping[str, str] | None = None,
        flags: int = 0,
    ) -> None:
        _write(buf, flags, seq_id, self.header_info(timeout_ms, metadata), payload)


def write_reply(
    buf: LinkBuffer,
    seq_id: int,
    payload: bytes | memoryview,
    metadata: Mapping[str, str] | None = None,
    flags: int = 0,
    max_size: int | None = None,
) -> None:
    """A REPLY frame (the header is constant unless there is reply metadata).

    With `max_size`, a frame that would be larger raises `FrameTooLargeError` and nothing is
    written (a server answers RESOURCE_EXHAUSTED instead of sending what its peer refuses).
    """
    info = _REPLY_INFO if not metadata else _header_info(_REPLY_INTS, _checked(metadata))
    if max_size is not None:
        size = FIXED_SIZE + len(info) + len(payload)
        if size > max_size:
            raise FrameTooLargeError(
                f"reply of {size} bytes exceeds the maximum frame size of {max_size}",
                size,
                max_size,
                seq_id,
            )
    _write(buf, flags, seq_id, info, payload)


def write_exception(
    buf: LinkBuffer,
    seq_id: int,
    status: int,
    message: str,
    metadata: Mapping[str, str] | None = None,
    flags: int = 0,
) -> None:
    """An EXCEPTION frame carrying a status code and message, with an empty payload."""
    ints = [
        (int(IntKey.MSG_TYPE), b"%d" % MessageType.EXCEPTION),
        (int(IntKey.STATUS_CODE), b"%d" % status),
        (int(IntKey.STATUS_MESSAGE), message.encode()[:_MAX_U16]),
    ]
    _write(buf, flags, seq_id, _header_info(ints, _checked(metadata or {})), b"")


def exception_info(status: int, message: str, metadata: Mapping[str, str] | None = None) -> bytes:
    """The header info of an EXCEPTION frame, to compute once and send with
    `write_info_frame` (a server's load-shedding answer, say)."""
    ints = [
        (int(IntKey.MSG_TYPE), b"%d" % MessageType.EXCEPTION),
        (int(IntKey.STATUS_CODE), b"%d" % status),
        (int(IntKey.STATUS_MESSAGE), message.encode()[:_MAX_U16]),
    ]
    return _header_info(ints, _checked(metadata or {}))


def write_info_frame(
    buf: LinkBuffer, seq_id: int, info: bytes, payload: bytes | memoryview = b"", flags: int = 0
) -> None:
    """Append a frame made of precomputed header info bytes and a payload (not flushed)."""
    _write(buf, flags, seq_id, info, payload)


def refusal_frame(status: int, message: str) -> bytes:
    """A control frame (sequence id 0) by which a server that will not serve a connection says
    why before closing it: an EXCEPTION with `status` and `message`, and `crrst`. A client
    that reads it knows its request was never read (docs/protocol.md)."""
    frame = Frame(
        0,
        MessageType.EXCEPTION,
        status=status,
        status_message=message,
        metadata={CONNECTION_RESET_KEY: "1"},
    )
    return encode_frame(frame)


def _checked(metadata: Mapping[str, str]) -> dict[str, str]:
    for key, value in metadata.items():
        _check_metadata(key, value)
    return dict(metadata)


# RPC_TIMEOUT's entry: u16 key, u16 length, at most 20 digits, and up to 3 bytes of padding.
_TIMEOUT_ENTRY_MAX = 4 + 20 + 3
_REPLY_INTS = [(int(IntKey.MSG_TYPE), b"%d" % MessageType.REPLY)]
_REPLY_INFO = _header_info(_REPLY_INTS, {})

# ---------------------------------------------------------------- frames into a bytearray
#
# A server writes a whole batch of replies into one bytearray: a reply's payload is encoded
# straight after its header (`Message.encode_into(out, -1)`), and the fixed header is
# patched once the payload's size is known.

#: The fixed 14 bytes of a frame: length, magic, flags, seq_id, header size in words.
FIXED_HEADER: Final = _FIXED
#: The start of a REPLY frame without metadata: 14 bytes for `FIXED_HEADER.pack_into` to fill
#: in, then the header info (the same for every such reply).
REPLY_HEAD: Final = bytes(FIXED_SIZE) + _REPLY_INFO


def reply_info(metadata: Mapping[str, str] | None = None) -> bytes:
    """The header info of a REPLY frame with this metadata."""
    return _REPLY_INFO if not metadata else _header_info(_REPLY_INTS, _checked(metadata))


def stream_info(
    frame_type: FrameType, method: str = "", metadata: Mapping[str, str] | None = None
) -> bytes:
    """The header info of a stream frame (sent with FLAG_STREAMING)."""
    ints = [(int(IntKey.FRAME_TYPE), b"%d" % frame_type)]
    if method:
        ints.append((int(IntKey.TO_METHOD), method.encode()))
    return _header_info(ints, _checked(metadata or {}))


def append_frame(
    out: bytearray,
    flags: int,
    seq_id: int,
    info: bytes,
    payload: bytes | bytearray | memoryview = b"",
) -> None:
    """Append a frame of precomputed header info bytes and a payload to `out`."""
    size = len(info)
    out += _FIXED.pack(FIXED_SIZE - 4 + size + len(payload), MAGIC, flags, seq_id, size >> 2)
    out += info
    out += payload


# ------------------------------------------------------------------------------- decoding

# Parsed header infos by their bytes: requests of one method with the same timeout and
# metadata have identical headers, so most frames skip the parse. Only small headers are kept
# and the cache is cleared when full, so a peer cannot grow it without bound.
_INFO_CACHE_MAX_KEY = 256
#: What `parse_info` returns: (message type, method, service, timeout ms, status, status
#: message, metadata, frame type or 0).
Info = tuple[MessageType, str, str, int | None, int, str, Mapping[str, str], int]
_info_cache: dict[bytes, Info] = {}
_INFO_CACHE_MAX = 4096
_MAX_ENTRIES = 1 << 62  # "no limit" for parse_info
_EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})


def parse_blocks(
    info: bytes, max_entries: int | None = None
) -> tuple[dict[int, bytes], dict[str, str]]:
    """The int-keyed and string-keyed entries of a frame's header info bytes (any block
    order); raises MalformedHeaderError, or HeaderLimitError past `max_entries` entries."""
    end = len(info)
    entries_left = _MAX_ENTRIES if max_entries is None else max_entries
    if end < 2:
        raise MalformedHeaderError("header info shorter than 2 bytes")
    if info[0] != PROTOCOL_MSGPACK:
        raise MalformedHeaderError(f"unsupported protocol id 0x{info[0]:02x}")
    pos = 2 + info[1]  # skip the transform ids
    ints: dict[int, bytes] = {}
    strs: dict[str, str] = {}
    try:
        while pos < end:
            block = info[pos]
            pos += 1
            if block == INFO_PADDING:
                # Skip a run of padding in one C call: byte by byte, a header of zeros would
                # cost a loop turn per byte.
                pos = end - len(info[pos:].lstrip(b"\0"))
                continue
            if pos + 2 > end:
                raise MalformedHeaderError("truncated info block")
            (count,) = _U16.unpack_from(info, pos)
            pos += 2
            if block != INFO_ACL_TOKEN:
                entries_left -= count
                if entries_left < 0:
                    raise HeaderLimitError(f"header has more than {max_entries} entries")
            if block == INFO_INTKEYVALUE:
                for _ in range(count):
                    key, size = _U16_PAIR.unpack_from(info, pos)
                    pos += 4
                    if pos + size > end:
                        raise MalformedHeaderError("truncated int-keyed value")
                    ints[key] = info[pos : pos + size]
                    pos += size
            elif block == INFO_KEYVALUE:
                # The hot loop of a metadata-heavy header: lengths read as two byte indexes
                # (cheaper than unpack_from), and one bounds check once the block is read: a
                # slice past the end comes back short, and then `pos` is past the end.
                for _ in range(count):
                    key_start = pos + 2
                    key_end = key_start + (info[pos] << 8 | info[pos + 1])
                    value_start = key_end + 2
                    pos = value_start + (info[key_end] << 8 | info[key_end + 1])
                    strs[info[key_start:key_end].decode()] = info[value_start:pos].decode()
                if pos > end:
                    raise MalformedHeaderError("truncated string-keyed value")
            elif block == INFO_ACL_TOKEN:
                pos += count  # an ACL token: its length, then the token; rpcpoll ignores it
            else:
                raise MalformedHeaderError(f"unknown info block id 0x{block:02x}")
        if pos > end:
            raise MalformedHeaderError("truncated info block")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedHeaderError(f"malformed frame header: {exc}") from exc
    return ints, strs


def parse_info(info: bytes, max_entries: int | None = None) -> Info:
    """(message type, method, service, timeout ms, status, status message, metadata, frame
    type) of a frame's header info bytes (frame type 0: not a stream frame); raises
    MalformedHeaderError.

    With `max_entries`, a header with more entries than that (int-keyed and string-keyed
    together) raises `HeaderLimitError` before they are read: the parse costs time linear in
    the header's size with a small constant, whatever the peer sent.
    """
    cached = _info_cache.get(info)
    if cached is not None:
        if max_entries is not None and len(cached[6]) > max_entries:
            raise HeaderLimitError(f"header has more than {max_entries} entries")
        return cached
    try:
        ints, strs = parse_blocks(info, max_entries)
        msg_type = MessageType(int(ints.get(IntKey.MSG_TYPE, b"1")))
        method = ints.get(IntKey.TO_METHOD, b"").decode()
        raw_timeout = ints.get(IntKey.RPC_TIMEOUT)
        timeout = int(raw_timeout) if raw_timeout is not None else None
        status = int(ints.get(IntKey.STATUS_CODE, b"0"))
        status_message = ints.get(IntKey.STATUS_MESSAGE, b"").decode()
        frame_type = int(ints.get(IntKey.FRAME_TYPE, b"0"))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise MalformedHeaderError(f"malformed frame header: {exc}") from exc
    service = strs.pop(SERVICE_KEY, "")
    parsed = (
        msg_type,
        method,
        service,
        timeout,
        status,
        status_message,
        MappingProxyType(strs) if strs else _EMPTY_METADATA,
        frame_type,
    )
    if len(info) <= _INFO_CACHE_MAX_KEY:
        if len(_info_cache) >= _INFO_CACHE_MAX:
            _info_cache.clear()
        _info_cache[info] = parsed
    return parsed


def check_fixed(
    length: int, magic: int, words: int, max_frame_size: int, seq_id: int | None = None
) -> int:
    """Validate a frame's fixed header (its length, magic and header size); returns the
    frame's total size. Raises the ProtocolError that says what is wrong."""
    if magic != MAGIC:
        raise BadMagicError(f"bad magic 0x{magic:04x} (not a TTHeader frame)")
    total = length + 4
    if total > max_frame_size:
        raise FrameTooLargeError(
            f"frame of {total} bytes exceeds the limit of {max_frame_size}",
            total,
            max_frame_size,
            seq_id,
        )
    if words * 4 < 2 or FIXED_SIZE + words * 4 > total:
        raise MalformedHeaderError(f"header size {words * 4} does not fit a {total}-byte frame")
    return total


def decode_frame(
    data: bytes | bytearray | memoryview, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> Frame:
    """Decode exactly one complete frame from `data` (the payload is a view into it)."""
    view = memoryview(data)
    if len(view) < FIXED_SIZE:
        raise MalformedHeaderError(f"{len(view)} bytes is shorter than a frame header")
    length, magic, flags, seq_id, words = _FIXED.unpack_from(view)
    total = check_fixed(length, magic, words, max_frame_size)
    if total != len(view):
        raise MalformedHeaderError(f"frame says {total} bytes, got {len(view)}")
    body = FIXED_SIZE + words * 4
    return frame_from_raw(seq_id, flags, bytes(view[FIXED_SIZE:body]), view[body:])


def frame_from_raw(
    seq_id: int, flags: int, info: bytes, payload: memoryview, max_entries: int | None = None
) -> Frame:
    """The Frame of what `FrameReader.read_raw` returns (parses the header info; see
    `parse_info` for `max_entries`)."""
    msg_type, method, service, timeout, status, message, metadata, _ = parse_info(info, max_entries)
    return Frame(
        seq_id, msg_type, method, service, payload, timeout, status, message, metadata, flags
    )


class FrameReader:
    """Incremental decoding from a LinkBuffer: `read(buf)` returns the next complete frame, or
    None if `buf` does not hold one yet. A bad frame raises `ProtocolError` as soon as its
    fixed header is visible, before its body is awaited or buffered further."""

    __slots__ = ("max_frame_size",)

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size

    def pending_size(self, buf: LinkBuffer) -> int:
        """Bytes the next frame needs in total (14 until its header is visible); validates."""
        if len(buf) < FIXED_SIZE:
            return FIXED_SIZE
        length, magic, _flags, seq_id, words = _FIXED.unpack(buf.peek(FIXED_SIZE))
        return check_fixed(length, magic, words, self.max_frame_size, seq_id)

    def read_raw(self, buf: LinkBuffer) -> tuple[int, int, bytes, memoryview] | None:
        """The next complete frame as (seq_id, flags, header info bytes, payload view), or
        None. The header info is not parsed: `parse_info(info)` does that (cached)."""
        available = len(buf)
        if available < FIXED_SIZE:
            return None
        length, magic, flags, seq_id, words = _FIXED.unpack(buf.peek(FIXED_SIZE))
        total = length + 4
        body = FIXED_SIZE + (words << 2)
        if magic != MAGIC or total > self.max_frame_size or words == 0 or body > total:
            check_fixed(length, magic, words, self.max_frame_size, seq_id)  # raises
        if available < total:
            return None
        view = buf.next(total)
        return seq_id, flags, bytes(view[FIXED_SIZE:body]), view[body:]

    def read(self, buf: LinkBuffer) -> Frame | None:
        raw = self.read_raw(buf)
        return None if raw is None else frame_from_raw(*raw)
