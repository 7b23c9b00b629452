"""Frames that break the stream rules, sent raw over a socket: each resets only its stream, with
an RST saying why, while another stream and unary calls on the same connection go on; only a
frame that cannot be parsed closes the connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from streams_testutil import WAIT, Seen, async_client, rectangle, run

import rpcpoll
from rpcpoll import StatusCode
from rpcpoll.examples.route_guide_rpc import (
    Feature,
    Point,
    RouteGuideClient,
    RouteNote,
    RouteSummary,
)
from rpcpoll.protocol.frame import (
    FIXED_HEADER,
    FIXED_SIZE,
    FLAG_STREAMING,
    Frame,
    FrameType,
    MessageType,
    append_frame,
    decode_frame,
    encode_frame,
)
from rpcpoll.protocol.stream import (
    StreamEvent,
    credit_info,
    data_info,
    open_info,
    parse_stream_frame,
    trailer_info,
)
from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)

SERVICE = "routeguide.RouteGuide"
READ_TIMEOUT = 10.0


class RawClient:
    """A client that writes frames by hand and reads what comes back, frame by frame."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT)
        self.buffer = bytearray()
        self.events: list[StreamEvent] = []  # stream frames read, not yet taken
        self.replies: dict[int, Frame] = {}  # unary replies by sequence id

    def close(self) -> None:
        self.sock.close()

    def stream(self, seq: int, info: bytes, payload: bytes = b"") -> None:
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, seq, info, payload)
        self.sock.sendall(frame)

    def open(self, seq: int, method: str, metadata: dict[str, str] | None = None) -> None:
        self.stream(seq, open_info(method, SERVICE, metadata))

    def data(self, seq: int, payload: bytes) -> None:
        self.stream(seq, data_info(), payload)

    def half_close(self, seq: int) -> None:
        self.stream(seq, trailer_info())

    def unary(self, seq: int) -> Feature:
        request = Frame(seq, MessageType.CALL, "GetFeature", SERVICE, payload=Point().to_bytes())
        self.sock.sendall(encode_frame(request))
        while seq not in self.replies:
            self._read_one()
        reply = self.replies.pop(seq)
        assert reply.message_type is MessageType.REPLY, reply
        return Feature.from_bytes(reply.payload)

    def next_event(self, seq: int, kinds: tuple[FrameType, ...] | None = None) -> StreamEvent:
        """The next frame of stream `seq` (of one of `kinds`, skipping others)."""
        while True:
            for index, event in enumerate(self.events):
                if event.stream_id == seq:
                    del self.events[index]
                    if kinds is None or event.kind in kinds:
                        return event
                    break
            else:
                self._read_one()

    def end_of(self, seq: int) -> StreamEvent:
        """The TRAILER or RST that ends stream `seq` (what came before is skipped)."""
        return self.next_event(seq, (FrameType.TRAILER, FrameType.RST))

    def _read_one(self) -> None:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + int.from_bytes(self.buffer[:4], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        size = 4 + int.from_bytes(self.buffer[:4], "big")
        raw, self.buffer = bytes(self.buffer[:size]), self.buffer[size:]
        _length, _magic, flags, seq, words = FIXED_HEADER.unpack_from(raw)
        if flags & FLAG_STREAMING:
            body = FIXED_SIZE + words * 4
            self.events.append(parse_stream_frame(seq, raw[FIXED_SIZE:body], raw[body:]))
        else:
            frame = decode_frame(raw)
            self.replies[frame.seq_id] = frame

    def closed_by_server(self) -> bool:
        try:
            while True:
                self._read_one()
        except ConnectionError:
            return True


@pytest.fixture
def raw(server: Server) -> Iterator[RawClient]:
    client = RawClient(server.address)
    yield client
    client.close()


ECHO = {"mode": "echo"}
STALL = {"mode": "stall", "count": "1"}
NOTE = RouteNote(message="hi").to_bytes()
POINT = Point(latitude=1).to_bytes()


def check_neighbours_work(raw: RawClient, seq: int = 1000) -> None:
    """A bidi stream opened before the bad frame still echoes, and unary calls answer."""
    raw.data(1, NOTE)
    event = raw.next_event(1, (FrameType.DATA,))
    assert RouteNote.from_bytes(event.payload).message == "hi"
    assert raw.unary(seq).name == "feature 0 0"


def assert_reset(event: StreamEvent, code: StatusCode, words: str) -> None:
    assert event.kind is FrameType.RST, event
    assert event.status == code, event
    assert words in event.message, event


@pytest.fixture
def with_neighbour(raw: RawClient) -> RawClient:
    """The raw client with stream 1 open (RouteChat echoing) before the bad frames."""
    raw.open(1, "RouteChat", ECHO)
    raw.data(1, NOTE)
    raw.next_event(1, (FrameType.DATA,))
    return raw


def test_data_for_a_stream_that_was_never_opened(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    raw.data(7, NOTE)
    assert_reset(raw.end_of(7), StatusCode.INVALID_ARGUMENT, "stream 7 is not open")
    check_neighbours_work(raw)


def test_a_half_close_or_credit_for_a_stream_that_was_never_opened(
    with_neighbour: RawClient,
) -> None:
    raw = with_neighbour
    raw.half_close(7)
    assert_reset(raw.end_of(7), StatusCode.INVALID_ARGUMENT, "stream 7 is not open")
    raw.stream(8, credit_info(4096))
    assert_reset(raw.end_of(8), StatusCode.INVALID_ARGUMENT, "stream 8 is not open")
    check_neighbours_work(raw)


def test_data_for_a_stream_that_ended_long_ago(with_neighbour: RawClient) -> None:
    """Late frames of a stream that ended lately are dropped (they are expected: a client
    sends until it reads the server's end); one long gone is answered with an RST."""
    raw = with_neighbour
    for seq in range(10, 310):  # 300 streams refused at once: each ends as it opens
        raw.open(seq, "NoSuchMethod")
    for seq in range(10, 310):
        assert raw.end_of(seq).status == StatusCode.UNIMPLEMENTED
    raw.data(309, NOTE)  # ended lately: dropped
    raw.data(10, NOTE)  # ended 300 streams ago: forgotten, so not open
    assert_reset(raw.end_of(10), StatusCode.INVALID_ARGUMENT, "stream 10 is not open")
    check_neighbours_work(raw)
    assert not [event for event in raw.events if event.stream_id == 309]


def test_data_after_the_clients_half_close(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    raw.open(3, "RecordRoute", STALL)
    raw.data(3, POINT)
    raw.half_close(3)
    raw.data(3, POINT)
    assert_reset(raw.end_of(3), StatusCode.INVALID_ARGUMENT, "data after the end of the stream")
    check_neighbours_work(raw)


def test_a_second_request_on_a_server_stream(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    rect = b"\x80"  # an empty Rectangle
    raw.open(3, "ListFeatures", {"mode": "hang"})
    raw.data(3, rect)
    raw.data(3, rect)
    assert_reset(raw.end_of(3), StatusCode.INVALID_ARGUMENT, "a server stream takes one request")
    check_neighbours_work(raw)


def test_sending_past_the_credit(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    big_point = msgspec.msgpack.encode({"99": b"x" * 65536})  # a Point, unknown field ignored
    assert Point.from_bytes(big_point) == Point()
    raw.open(3, "RecordRoute", STALL)
    frames = bytearray()
    for _ in range(20):  # 1.25 MiB without waiting for a grant: over the 1 MiB window
        append_frame(frames, FLAG_STREAMING, 3, data_info(), big_point)
    raw.sock.sendall(frames)
    assert_reset(raw.end_of(3), StatusCode.RESOURCE_EXHAUSTED, "past its credit")
    check_neighbours_work(raw)


def test_an_undecodable_message(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    raw.open(3, "RecordRoute")
    raw.data(3, b"\xc1 not msgpack")
    assert_reset(raw.end_of(3), StatusCode.INVALID_ARGUMENT, "cannot decode a request")
    check_neighbours_work(raw)


def test_a_second_header_on_an_open_stream(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    raw.open(3, "RecordRoute", STALL)
    raw.open(3, "RecordRoute", STALL)
    assert_reset(raw.end_of(3), StatusCode.INVALID_ARGUMENT, "opened twice")
    check_neighbours_work(raw)


def test_a_reset_stream_id_can_be_used_again(with_neighbour: RawClient) -> None:
    raw = with_neighbour
    raw.data(5, NOTE)
    raw.end_of(5)
    raw.open(5, "RecordRoute")  # a fresh stream on the id the server reset
    raw.data(5, POINT)
    raw.half_close(5)
    event = raw.next_event(5, (FrameType.DATA,))
    assert RouteSummary.from_bytes(event.payload).point_count == 1
    assert raw.end_of(5).status == StatusCode.OK


def test_an_unparseable_stream_frame_closes_the_connection(
    with_neighbour: RawClient, server: Server, serve: Callable[..., Any]
) -> None:
    raw = with_neighbour
    bad = bytearray(trailer_info())
    bad[bad.index(b"4")] = ord("9")  # frame type 9: no such thing
    raw.stream(3, bytes(bad))
    assert raw.closed_by_server()
    fresh = RawClient(server.address)  # the server itself is fine
    try:
        assert fresh.unary(1).name == "feature 0 0"
    finally:
        fresh.close()


# ------------------------------------------------------------------------------- hostile servers


class RawServer:
    """A server that reads a client's stream HEADER and answers with frames written by hand."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.peer: RawClient | None = None

    def accept(self) -> RawClient:
        """The client's connection, as a RawClient (it reads frames the same way)."""
        self.listener.settimeout(READ_TIMEOUT)
        sock, _ = self.listener.accept()
        peer = RawClient.__new__(RawClient)
        peer.sock, peer.buffer, peer.events, peer.replies = sock, bytearray(), [], {}
        sock.settimeout(READ_TIMEOUT)
        self.peer = peer
        return peer

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    made = RawServer()
    yield made
    made.close()


def opened_stream(raw_server: RawServer, client: Any) -> tuple[Any, RawClient, int]:
    """A ListFeatures call of `client` to the raw server, and the stream id it opened."""
    from rpcpoll.examples.route_guide_rpc import Rectangle

    call = client.list_features(Rectangle())
    peer = raw_server.accept()
    header = peer.next_event_any((FrameType.HEADER,))
    return call, peer, header.stream_id


def _next_event_any(self: RawClient, kinds: tuple[FrameType, ...]) -> StreamEvent:
    while True:
        for index, event in enumerate(self.events):
            if event.kind in kinds:
                del self.events[index]
                return event
        self._read_one()


RawClient.next_event_any = _next_event_any  # type: ignore[attr-defined]


def test_a_client_resets_a_stream_whose_message_does_not_decode(raw_server: RawServer) -> None:
    from rpcpoll.examples.route_guide_rpc import RouteGuideClient

    with RouteGuideClient(raw_server.address, timeout=READ_TIMEOUT) as client:
        call, peer, sid = opened_stream(raw_server, client)
        peer.data(sid, b"\xc1 not msgpack")
        with pytest.raises(rpcpoll.InternalError, match="cannot decode a message"):
            next(call)
        rst = peer.next_event(sid, (FrameType.RST,))  # (after the client's half-close)
        assert_reset(rst, StatusCode.INTERNAL, "cannot decode a message")


def test_a_client_resets_a_stream_whose_server_sends_past_its_credit(
    raw_server: RawServer,
) -> None:
    from rpcpoll.examples.route_guide_rpc import RouteGuideClient

    big = Feature(name="x" * 65536).to_bytes()
    with RouteGuideClient(raw_server.address, timeout=READ_TIMEOUT) as client:
        call, peer, sid = opened_stream(raw_server, client)
        frames = bytearray()
        for _ in range(20):  # 1.25 MiB, the client's window is 1 MiB and it reads nothing
            append_frame(frames, FLAG_STREAMING, sid, data_info(), big)
        peer.sock.sendall(frames)
        rst = peer.next_event(sid, (FrameType.RST,))
        assert_reset(rst, StatusCode.RESOURCE_EXHAUSTED, "past its credit")
        with pytest.raises(rpcpoll.ResourceExhaustedError):
            for _ in call:
                pass


def test_an_oversized_message_resets_only_its_stream(
    serve: Callable[..., Server], handler_kind: str
) -> None:
    server = serve(handler_kind, max_frame_size=64 * 1024)
    raw = RawClient(server.address)
    try:
        raw.open(1, "RouteChat", ECHO)
        raw.open(3, "RecordRoute", STALL)
        raw.data(3, b"\x80" + b"x" * 100_000)  # over the server's max_frame_size
        assert_reset(raw.end_of(3), StatusCode.RESOURCE_EXHAUSTED, "exceeds the server's limit")
        check_neighbours_work(raw)
    finally:
        raw.close()


def test_an_oversized_message_trickling_in_is_skipped_as_it_arrives(
    serve: Callable[..., Server],
) -> None:
    """The reset goes out once the frame's header is in, before its body; the body is then
    dropped piece by piece (never buffered whole), and the frame after it is read."""
    server = serve("sync", max_frame_size=64 * 1024)
    raw = RawClient(server.address)
    try:
        raw.open(1, "RouteChat", ECHO)
        raw.open(3, "RecordRoute", STALL)
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, 3, data_info(), b"\x80" + b"x" * 300_000)
        raw.sock.sendall(frame[:10])  # not even the whole fixed header
        time.sleep(0.05)
        raw.sock.sendall(frame[10:40])  # the header
        assert_reset(raw.end_of(3), StatusCode.RESOURCE_EXHAUSTED, "300")
        for start in range(40, len(frame), 7_000):
            raw.sock.sendall(frame[start : start + 7_000])
        check_neighbours_work(raw)
    finally:
        raw.close()


def test_an_oversized_header_frame_is_refused_and_one_for_no_stream_is_reset(
    serve: Callable[..., Server],
) -> None:
    server = serve("async", max_frame_size=64 * 1024)
    raw = RawClient(server.address)
    try:
        raw.open(1, "RouteChat", ECHO)
        raw.stream(5, open_info("RouteChat", SERVICE), b"\x00" * 70_000)
        end = raw.end_of(5)
        assert end.kind is FrameType.TRAILER and end.status == StatusCode.RESOURCE_EXHAUSTED
        raw.data(7, b"\x80" + b"x" * 70_000)  # a stream that was never opened
        assert_reset(raw.end_of(7), StatusCode.RESOURCE_EXHAUSTED, "exceeds")
        check_neighbours_work(raw)
    finally:
        raw.close()


def test_an_oversized_unary_frame_still_closes_the_connection(
    serve: Callable[..., Server],
) -> None:
    """Only a stream's frame names what to reset; an oversized call could be anything."""
    server = serve("sync", max_frame_size=64 * 1024)
    raw = RawClient(server.address)
    try:
        big = Frame(9, MessageType.CALL, "GetFeature", SERVICE, payload=b"\x00" * 70_000)
        raw.sock.sendall(encode_frame(big))
        with pytest.raises(ConnectionError):
            raw.unary(10)
    finally:
        raw.close()


# ------------------------------------------------------------------ oversized server messages

BIG_FEATURES = {"mode": "endless", "size": "100000"}  # each feature over the client's 64 KiB


def test_a_message_over_the_clients_limit_resets_only_its_stream(
    server: Server, seen: Seen
) -> None:
    """The sync client skips the message's bytes as they arrive, resets its stream (the
    handler sees the cancel) and the other stream on the same connection carries on."""
    client = RouteGuideClient(server.address, timeout=WAIT, max_frame_size=64 * 1024)
    with client, client.route_chat(metadata={"mode": "echo"}) as chat:
        chat.send(RouteNote(message="before"))
        assert next(chat).message == "before"
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="max_frame_size of 65536"):
            list(client.list_features(rectangle(1), metadata=BIG_FEATURES))
        chat.send(RouteNote(message="after"))
        assert next(chat).message == "after"
        chat.close_send()
        assert list(chat) == []
    ended = seen.wait_ended(2)
    assert ended[0][1] is True, f"the oversized stream's handler saw no cancel: {ended}"


def test_a_message_over_the_async_clients_limit_resets_only_its_stream(
    server: Server, seen: Seen
) -> None:
    async def main() -> None:
        async with async_client(server, max_frame_size=64 * 1024) as client:
            chat = client.route_chat(metadata={"mode": "echo"})
            await chat.send(RouteNote(message="before"))
            assert (await anext(chat)).message == "before"
            features = client.list_features(rectangle(1), metadata=BIG_FEATURES)
            with pytest.raises(rpcpoll.ResourceExhaustedError, match="max_frame_size of 65536"):
                async for _ in features:
                    pass
            await chat.send(RouteNote(message="after"))
            assert (await anext(chat)).message == "after"
            await chat.close_send()
            assert [note async for note in chat] == []

    run(main())
    ended = seen.wait_ended(2)
    assert ended[0][1] is True, f"the oversized stream's handler saw no cancel: {ended}"
