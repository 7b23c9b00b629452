"""Many streams at once: 1000 on one connection beside unary calls, the limits that refuse
streams past them, and nothing left behind (threads, tasks, fds, counters) after many
streams, cancelled ones included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from streams_testutil import WAIT, Seen, async_client, rectangle, run, wait_until

import rpcpoll
from rpcpoll.examples.route_guide_rpc import Point, RouteGuideClient, RouteNote
from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)

STREAMS = 1000


def server_tasks(server: Server) -> int:
    """Tasks running on the server's event loop, besides the one asking."""
    loop = server._aio_loop
    assert loop is not None

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return asyncio.run_coroutine_threadsafe(count(), loop).result(WAIT)


def assert_nothing_left(server: Server) -> None:
    """No stream open, no call counted, on any connection of the server."""
    wait_until(lambda: all(not conn.context.streams.open for conn in server.connections()))
    wait_until(lambda: server._calls == 0)
    if server._aio_loop is not None:
        wait_until(lambda: server_tasks(server) == 0)


def test_a_thousand_streams_and_unary_calls_share_one_connection(
    serve: Callable[..., Server],
) -> None:
    server = serve("async", max_calls_per_connection=4 * STREAMS)

    async def chat(client: Any, i: int) -> list[str]:
        notes = [RouteNote(message=f"{i}.{k}") for k in range(3)]
        return [note.message async for note in client.route_chat(notes, metadata={"mode": "echo"})]

    async def listing(client: Any) -> int:
        return len([f async for f in client.list_features(rectangle(5))])

    async def main() -> None:
        options = {"mux": 1, "max_calls_per_connection": 4 * STREAMS, "timeout": 30.0}
        async with async_client(server, **options) as client:
            chats = [chat(client, i) for i in range(STREAMS // 2)]
            lists = [listing(client) for _ in range(STREAMS // 2)]
            unary = [client.get_feature(Point()) for _ in range(STREAMS)]
            results = await asyncio.gather(*chats, *lists, *unary)
            assert results[: STREAMS // 2] == [
                [f"{i}.{k}" for k in range(3)] for i in range(STREAMS // 2)
            ]
            assert results[STREAMS // 2 : STREAMS] == [5] * (STREAMS // 2)
            assert all(feature.name for feature in results[STREAMS:])
            assert len(server.connections()) == 1

    run(main())
    assert_nothing_left(server)


def test_streams_of_a_sync_client_run_concurrently_over_one_connection(
    serve: Callable[..., Server], handler_kind: str
) -> None:
    server = serve(handler_kind)
    errors: list[BaseException] = []
    with RouteGuideClient(server.address, timeout=WAIT) as client:

        def chat(i: int) -> None:
            try:
                call = client.route_chat(metadata={"mode": "echo"})
                for k in range(20):
                    call.send(RouteNote(message=f"{i}.{k}"))
                    assert next(call).message == f"{i}.{k}"
                call.close_send()
                assert list(call) == []
                assert client.get_feature(Point()).name  # unary calls between streams
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert errors == []
    assert_nothing_left(server)


def test_sync_streams_past_max_calls_are_refused_with_resource_exhausted(
    serve: Callable[..., Server], seen: Seen
) -> None:
    server = serve("sync", max_calls=4)
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        open_calls = [client.route_chat(metadata={"mode": "hang"}) for _ in range(4)]
        for call in open_calls:
            call.send(RouteNote(message="x"))
            next(call)  # each holds a worker thread now
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="server overloaded"):
            list(client.list_features(rectangle(1)))
        open_calls[0].cancel()
        seen.wait_ended()
        wait_until(lambda: server._calls == 3)
        assert len(list(client.list_features(rectangle(2)))) == 2  # room again
        for call in open_calls[1:]:
            call.cancel()
    assert_nothing_left(server)


def test_streams_past_max_calls_per_connection_are_refused(
    serve: Callable[..., Server], handler_kind: str
) -> None:
    server = serve(handler_kind, max_calls_per_connection=3)
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        held = [client.list_features(rectangle(1), metadata={"mode": "hang"}) for _ in range(3)]
        for call in held:
            next(call)
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="3 calls in progress"):
            list(client.list_features(rectangle(1)))
        for call in held:
            call.cancel()
    assert_nothing_left(server)


def test_nothing_is_left_after_many_streams_some_cancelled(
    serve: Callable[..., Server], handler_kind: str, seen: Seen
) -> None:
    server = serve(handler_kind)
    with RouteGuideClient(server.address, timeout=WAIT, mux=2) as client:
        for i in range(60):
            kind = i % 4
            if kind == 0:
                assert len(list(client.list_features(rectangle(3)))) == 3
            elif kind == 1:  # cancelled mid-stream
                with client.list_features(rectangle(1), metadata={"mode": "endless"}) as call:
                    next(call)
            elif kind == 2:  # dropped while the handler waits
                for _ in client.route_chat(iter([RouteNote()]), metadata={"mode": "hang"}):
                    break
            else:
                assert client.record_route(iter([Point()] * 5)).point_count == 5

    async def more() -> None:
        async with async_client(server) as aclient:
            for i in range(40):
                call = aclient.list_features(rectangle(1), metadata={"mode": "hang"})
                await anext(call)
                if i % 2:
                    call.cancel()
                else:
                    task = asyncio.ensure_future(anext(call))
                    await asyncio.sleep(0)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task

    run(more())
    seen.wait_ended(100)
    assert_nothing_left(server)
    assert all(cancelled for how, cancelled in seen.ended if how != "returned")
