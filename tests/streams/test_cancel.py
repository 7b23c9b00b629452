"""Cancellation both ways, one deadline for the whole stream, and graceful shutdown.

A client that cancels (cancel(), leaving a `with` block, breaking out of a `for` loop, its
asyncio task cancelled) makes the server's handler see it: an async handler gets
CancelledError where it awaits; a sync one finds its next send or receive raising (a generator
is closed at its yield) and `context.cancelled()` true.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest
from streams_testutil import WAIT, Seen, async_client, rectangle, run, wait_until

import rpcpoll
from rpcpoll import StatusCode
from rpcpoll.examples.route_guide_rpc import Point, RouteGuideClient, RouteNote
from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)

# What a handler of a server stream sees when its caller goes away while it waits (async
# `hang`: CancelledError at its await) or while it produces (sync `endless`: its generator is
# closed at the yield whose send raised). Either way context.cancelled() is true.
WAITING = {"sync": ("endless", "closed"), "async": ("hang", "cancelled")}


def ended_cancelled(seen: Seen, how: str) -> None:
    assert seen.wait_ended() == [(how, True)]


def test_cancel_reaches_the_handler(
    sync_client: RouteGuideClient, seen: Seen, handler_kind: str
) -> None:
    mode, how = WAITING[handler_kind]
    call = sync_client.list_features(rectangle(1), metadata={"mode": mode})
    assert next(call).name
    call.cancel()
    ended_cancelled(seen, how)
    with pytest.raises(rpcpoll.CancelledError):
        next(call)
    assert call.code is StatusCode.CANCELLED


def test_leaving_a_with_block_cancels_the_stream(
    sync_client: RouteGuideClient, seen: Seen, handler_kind: str
) -> None:
    mode, how = WAITING[handler_kind]
    with sync_client.list_features(rectangle(1), metadata={"mode": mode}) as call:
        next(call)
    ended_cancelled(seen, how)


def test_breaking_out_of_a_for_loop_cancels_the_stream(
    sync_client: RouteGuideClient, seen: Seen, handler_kind: str
) -> None:
    mode, how = WAITING[handler_kind]
    for _feature in sync_client.list_features(rectangle(1), metadata={"mode": mode}):
        break
    gc.collect()  # the call is dropped at once by refcounting; this only makes sure
    ended_cancelled(seen, how)


def test_breaking_out_of_an_async_for_loop_cancels_the_stream(
    server: Server, seen: Seen, handler_kind: str
) -> None:
    mode, how = WAITING[handler_kind]

    async def main() -> None:
        async with async_client(server) as client:
            async for _feature in client.list_features(rectangle(1), metadata={"mode": mode}):
                break
            gc.collect()
            await asyncio.get_running_loop().run_in_executor(None, seen.wait_ended)

    run(main())
    assert seen.ended == [(how, True)]


def test_a_sync_bidi_handler_waiting_for_a_request_sees_the_cancel(
    sync_client: RouteGuideClient, seen: Seen, handler_kind: str
) -> None:
    call = sync_client.route_chat(metadata={"mode": "hang"})
    call.send(RouteNote(message="one"))
    assert next(call).message == "one"  # the handler now waits for the next note
    call.cancel()
    ended_cancelled(seen, "cancelled")  # sync: the request iterator raised CancelledError
    with pytest.raises(rpcpoll.CancelledError):
        call.send(RouteNote())


def test_cancelling_the_awaiting_task_cancels_the_stream(server: Server, seen: Seen) -> None:
    async def main() -> None:
        async with async_client(server) as client:
            call = client.list_features(rectangle(1), metadata={"mode": "hang"})
            assert (await anext(call)).name == "first"
            task = asyncio.ensure_future(anext(call))  # waits for a second feature
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert call.code is StatusCode.CANCELLED
            await asyncio.get_running_loop().run_in_executor(None, seen.wait_ended)

    run(main())
    assert seen.ended[0][1] is True


def test_cancelling_a_task_in_a_client_stream_cancels_the_handler(
    server: Server, seen: Seen
) -> None:
    async def points() -> Any:
        yield Point()
        await asyncio.Event().wait()  # the upload never ends by itself

    async def main() -> None:
        async with async_client(server) as client:
            task = asyncio.ensure_future(client.record_route(points()))
            while not seen.started:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.get_running_loop().run_in_executor(None, seen.wait_ended)

    run(main())
    how, cancelled = seen.ended[0]
    assert how == "cancelled" and cancelled


def test_async_call_cancel_and_async_with(server: Server, seen: Seen) -> None:
    async def main() -> None:
        async with async_client(server) as client:
            async with client.route_chat(metadata={"mode": "hang"}) as call:
                await call.send(RouteNote(message="x"))
                assert (await anext(call)).message == "x"
            # leaving the block cancelled it
            assert call.code is StatusCode.CANCELLED
            with pytest.raises(rpcpoll.CancelledError):
                await call.send(RouteNote())
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, seen.wait_ended)

            never = client.list_features(rectangle(1))
            never.cancel()  # before it opened: it never does
            with pytest.raises(asyncio.CancelledError):
                await anext(never)

    run(main())
    assert seen.ended == [("cancelled", True)]


# ------------------------------------------------------------------------------- deadlines


def test_one_deadline_covers_the_whole_stream(
    server: Server, seen: Seen, handler_kind: str
) -> None:
    with RouteGuideClient(server.address) as client:
        call = client.list_features(rectangle(1), metadata={"mode": "hang"}, timeout=0.3)
        assert next(call).name == "first"  # in time
        with pytest.raises(rpcpoll.DeadlineExceededError):
            next(call)  # the deadline passes mid-stream
        assert call.code is StatusCode.DEADLINE_EXCEEDED
    ends = seen.wait_ended()
    assert ends[0][1] is True  # the handler was cancelled on the server
    assert ends[0][0] == ("cancelled" if handler_kind == "async" else "returned")


def test_a_deadline_mid_stream_on_an_async_client(server: Server, seen: Seen) -> None:
    async def main() -> None:
        async with async_client(server) as client:
            call = client.route_chat(metadata={"mode": "hang"}, timeout=0.3)
            await call.send(RouteNote(message="x"))
            assert (await anext(call)).message == "x"
            with pytest.raises(rpcpoll.DeadlineExceededError):
                await anext(call)

    run(main())
    assert seen.wait_ended()[0][1] is True


def test_the_server_enforces_the_deadline_without_the_client(server: Server, seen: Seen) -> None:
    """A client that stops reading does not hold the handler past the deadline."""
    with RouteGuideClient(server.address) as client:
        call = client.list_features(rectangle(1), metadata={"mode": "endless"}, timeout=0.3)
        ends = seen.wait_ended()  # never read: the server's deadline ended the handler
        assert ends[0][1] is True
        with pytest.raises(rpcpoll.DeadlineExceededError):
            list(call)


def test_a_stream_that_never_waits_still_ends_at_its_deadline(server: Server, seen: Seen) -> None:
    """A handler that always has credit (its client reads as fast as it sends) is stopped by
    the deadline too: the deadline is checked on every send, not only while waiting."""
    with RouteGuideClient(server.address) as client:
        call = client.list_features(
            rectangle(1), metadata={"mode": "endless", "size": "1"}, timeout=0.3
        )
        with pytest.raises(rpcpoll.DeadlineExceededError):
            for _ in call:
                pass
    assert seen.wait_ended()[0][1] is True


# ------------------------------------------------------------------------------- shutdown


def shutdown_in_thread(server: Server, wait: float) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(server.shutdown(wait)))
    thread.start()
    return thread, result


def test_shutdown_lets_an_open_stream_finish_within_the_exit_wait(
    serve: Callable[..., Server], seen: Seen, handler_kind: str
) -> None:
    server = serve(handler_kind)
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        call = client.list_features(rectangle(3), metadata={"mode": "slow"})
        assert next(call).name
        thread, result = shutdown_in_thread(server, 5.0)
        wait_until(lambda: server._draining)
        with pytest.raises(rpcpoll.UnavailableError, match="shutting down"):
            list(client.list_features(rectangle(1)))  # new streams are refused while it drains
        seen.set_release()
        assert len(list(call)) == 2
        assert call.code is StatusCode.OK
        thread.join(WAIT)
    assert result == [True]


def test_shutdown_resets_a_stream_that_outlives_the_exit_wait_with_unavailable(
    serve: Callable[..., Server], seen: Seen, handler_kind: str
) -> None:
    server = serve(handler_kind)
    mode, _how = WAITING[handler_kind]
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        call = client.list_features(rectangle(1), metadata={"mode": mode})
        assert next(call).name
        thread, result = shutdown_in_thread(server, 0.3)
        with pytest.raises(rpcpoll.UnavailableError):
            for _ in call:
                pass
        assert call.code is StatusCode.UNAVAILABLE
        assert "shut down" in call.details  # the server's RST, not a dropped connection
        thread.join(WAIT)
    assert result == [False]
    assert seen.wait_ended()[0][1] is True  # and its handler was cancelled
