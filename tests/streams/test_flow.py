"""Credit: a slow reader bounds its sender's memory, both ways (docs/protocol.md, "Streams").

What is measured: how far a sender gets ahead of its reader. The sender may send while its
credit is positive and each message uses up its size, so it is at most a window (1 MiB) plus one
message ahead; the receiver grants credit back as its application consumes. The tests watch
the producer block (its credit at zero), count what it produced, and check the bytes queued on
the server and in the client's inbox, across several windows' worth of messages.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from streams_testutil import WAIT, Seen, async_client, rectangle, run, wait_until

from rpcpoll.examples.route_guide_rpc import Feature, Point, RouteGuideClient
from rpcpoll.protocol.frame import FLAG_STREAMING, append_frame
from rpcpoll.protocol.stream import DEFAULT_WINDOW, data_info
from rpcpoll.server import Server
from rpcpoll.server.streams import ServerStream

pytestmark = pytest.mark.timeout(60)

SIZE = 1024
PAYLOAD = len(Feature(name="x" * SIZE).to_bytes())
AHEAD = DEFAULT_WINDOW // PAYLOAD + 3  # a window, the one message over it, the one blocked


def _data_frame_size(payload: bytes) -> int:
    frame = bytearray()
    append_frame(frame, FLAG_STREAMING, 1, data_info(), payload)
    return len(frame)


# Credit counts payload bytes; the server queues whole frames (header included).
FRAME = _data_frame_size(Feature(name="x" * SIZE).to_bytes())


def server_stream(server: Server) -> tuple[Any, ServerStream]:
    """The server's one open stream, with its connection's state."""
    for conn in server.connections():
        state = conn.context
        if state.streams.open:
            (stream,) = state.streams.open.values()
            return state, stream
    raise AssertionError("no open stream on the server")


def queued_bytes(state: Any, stream: ServerStream) -> int:
    """What the server holds for the connection and has not written to the socket."""
    return sum(len(frame) for frame in state.replies) + stream.conn.unsent_bytes


def test_a_slow_reader_bounds_what_the_server_queues(server: Server, seen: Seen) -> None:
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        call = client.list_features(rectangle(1), metadata={"mode": "endless"})
        wait_until(lambda: seen.started == 1)
        state, stream = server_stream(server)
        consumed = 0
        peak_ahead = peak_queued = peak_inbox = 0
        for _ in range(6):  # 6 x 700 messages: four windows' worth
            wait_until(lambda: stream.end.state.send_credit <= 0)  # the producer is blocked
            with seen.cond:
                ahead = seen.produced - consumed
            peak_ahead = max(peak_ahead, ahead)
            peak_queued = max(peak_queued, queued_bytes(state, stream))
            peak_inbox = max(peak_inbox, len(call._end.inbox))
            for _ in range(700):
                assert len(next(call).name) == SIZE
            consumed += 700
        call.cancel()
    assert consumed > 4 * AHEAD  # many windows went through...
    assert AHEAD - 10 <= peak_ahead <= AHEAD  # ...but the producer never got further ahead
    # At worst the client's reader has taken nothing off the socket yet: every message the
    # producer is ahead sits on the server, as a frame.
    assert peak_queued <= AHEAD * FRAME
    assert peak_inbox <= AHEAD
    seen.wait_ended()


def test_a_slow_async_reader_bounds_the_producer(server: Server, seen: Seen) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with async_client(server) as client:
            call = client.list_features(rectangle(1), metadata={"mode": "endless"})
            consumed = 0
            assert await anext(call)
            consumed += 1
            _state, stream = server_stream(server)
            for _ in range(3):
                await loop.run_in_executor(
                    None, wait_until, lambda: stream.end.state.send_credit <= 0
                )
                with seen.cond:
                    assert seen.produced - consumed <= AHEAD
                for _ in range(700):
                    await anext(call)
                consumed += 700
            call.cancel()

    run(main())
    seen.wait_ended()


def counted(points: int, pulled: list[int]) -> Iterator[Point]:
    point = Point(latitude=123_456_789, longitude=-123_456_789)
    for _ in range(points):
        pulled[0] += 1
        yield point


POINT = len(Point(latitude=123_456_789, longitude=-123_456_789).to_bytes())
POINTS_AHEAD = DEFAULT_WINDOW // POINT + 3


def test_a_handler_that_stops_reading_blocks_the_uploading_client(
    server: Server, seen: Seen
) -> None:
    total = POINTS_AHEAD + 20_000
    pulled = [0]
    result: list[Any] = []
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        uploader = threading.Thread(
            target=lambda: result.append(
                client.record_route(
                    counted(total, pulled), metadata={"mode": "stall", "count": "10"}
                )
            )
        )
        uploader.start()
        wait_until(lambda: seen.started == 1)
        _state, stream = server_stream(server)
        # The handler took 10 points; the client sent until the server's window was full.
        wait_until(lambda: stream.end.state.received >= DEFAULT_WINDOW)
        assert pulled[0] <= POINTS_AHEAD + 10  # blocked in send, not buffering
        assert uploader.is_alive()
        assert len(stream.end.inbox) <= POINTS_AHEAD
        seen.set_release()
        uploader.join(WAIT)
    assert result[0].point_count == total


def test_an_async_upload_waits_for_credit(serve: Any, seen: Seen) -> None:
    server = serve("sync")
    total = POINTS_AHEAD + 5_000
    pulled = [0]

    async def main() -> Any:
        async with async_client(server) as client:
            upload = asyncio.ensure_future(
                client.record_route(
                    counted(total, pulled), metadata={"mode": "stall", "count": "1"}
                )
            )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, wait_until, lambda: seen.started == 1)
            _state, stream = server_stream(server)
            while stream.end.state.received < DEFAULT_WINDOW:
                await asyncio.sleep(0.005)
            assert pulled[0] <= POINTS_AHEAD + 1
            assert not upload.done()
            seen.set_release()
            return await upload

    assert run(main()).point_count == total
