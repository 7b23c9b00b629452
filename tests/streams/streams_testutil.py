"""Helpers of the streaming tests: route_guide handlers that can be told what to do, and a
record of what they saw.

The handlers (`ScriptedRouteGuide`, sync, and `AsyncScriptedRouteGuide`) answer as the bundled
route guide does unless the request metadata carries a `mode`:

- ListFeatures: `mode=endless` yields `size`-byte features until stopped (counted in
  `Seen.produced`); `mode=hang` yields one feature, then waits until the caller goes away;
  `mode=fail` yields the rectangle's features then raises RpcError(`code`, `message`);
  `mode=crash` yields them then raises ValueError; `mode=slow` waits for `Seen.release`
  before returning;
- RecordRoute: `mode=stall` reads `count` points, then stops reading until `Seen.release`;
- RouteChat: `mode=echo` answers each note with itself; `mode=hang` echoes the first note,
  then waits for the next one (a cancel ends the wait).

Every stream records how it ended in `Seen.ended`: ("returned" | "cancelled" (CancelledError
inside the handler) | "closed" (GeneratorExit at a yield) | "error: <repr>", whether
`context.cancelled()` was true). Metadata: `x-echo` comes back as reply metadata `x-reply`
(set before the first message) and trailing metadata `x-trail`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import rpcpoll
from rpcpoll.examples.route_guide import GRID, AsyncRouteGuide, RouteGuide, features_in
from rpcpoll.examples.route_guide_rpc import (
    Feature,
    Point,
    Rectangle,
    RouteGuideAsyncClient,
    RouteNote,
    RouteSummary,
)
from rpcpoll.server import Server
from rpcpoll.service import CallContext

WAIT = 10.0  # the longest any test waits for something that should happen at once


def rectangle(count: int) -> Rectangle:
    """A rectangle holding exactly `count` features (a row of them)."""
    return Rectangle(lo=Point(), hi=Point(latitude=GRID * (count - 1)))


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `predicate` (for state no event reports, e.g. inside the runtime) until true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(0.002)


class Seen:
    """What the handlers saw, shared with the test (thread-safe)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ended: list[tuple[str, bool]] = []
        self.started = 0
        self.produced = 0  # features yielded by `endless` streams
        self.metadata: list[dict[str, str]] = []
        self.release = threading.Event()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def start(self, context: CallContext) -> None:
        with self.cond:
            self.started += 1
            self.metadata.append(dict(context.metadata))
            self.cond.notify_all()

    def end(self, how: str, context: CallContext) -> None:
        with self.cond:
            self.ended.append((how, context.cancelled()))
            self.cond.notify_all()

    def produce(self) -> None:
        with self.cond:
            self.produced += 1

    def wait_for(self, predicate: Callable[[Seen], bool], timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"handlers did not get there: ended={self.ended}")

    def wait_ended(self, count: int = 1) -> list[tuple[str, bool]]:
        self.wait_for(lambda seen: len(seen.ended) >= count)
        return list(self.ended)

    def set_release(self) -> None:
        self.release.set()
        with self.cond:
            waiters, self._async_waiters = self._async_waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def released(self) -> None:
        """Until `set_release()` (from any thread)."""
        event = asyncio.Event()
        with self.cond:
            if self.release.is_set():
                return
            self._async_waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


def _mode(context: CallContext) -> str:
    return context.metadata.get("mode", "")


def _fail_error(context: CallContext) -> rpcpoll.RpcError:
    code = int(context.metadata.get("code", str(int(rpcpoll.StatusCode.NOT_FOUND))))
    return rpcpoll.RpcError(code, context.metadata.get("message", "no such feature"))


def _echo_metadata(context: CallContext) -> None:
    echo = context.metadata.get("x-echo")
    if echo is not None:
        context.set_reply_metadata("x-reply", echo)
        context.set_trailing_metadata("x-trail", echo + "!")


def _how(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, rpcpoll.CancelledError):
        return "cancelled"
    if isinstance(exc, GeneratorExit):
        return "closed"
    return f"error: {exc!r}"


class ScriptedRouteGuide(RouteGuide):
    """The sync route guide, told what to do by request metadata (module docs)."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def list_features(self, request: Rectangle, context: CallContext) -> Iterator[Feature]:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "endless":
                feature = Feature(name="x" * int(context.metadata.get("size", "1024")))
                for _ in range(10**7):
                    seen.produce()
                    yield feature
            elif mode == "hang":
                yield Feature(name="first")
                while not context.cancelled():  # a sync handler can only look
                    seen.release.wait(0.005)
            else:
                yield from features_in(request)
                if mode == "fail":
                    raise _fail_error(context)
                if mode == "crash":
                    raise ValueError("secret detail")
                if mode == "slow":
                    seen.release.wait(WAIT)
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)

    def record_route(self, requests: Iterator[Point], context: CallContext) -> RouteSummary:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "stall":
                points = [next(requests) for _ in range(int(context.metadata["count"]))]
                seen.release.wait(WAIT)
                points.extend(requests)
                return RouteSummary(point_count=len(points))
            if mode == "fail":
                raise _fail_error(context)
            return super().record_route(requests, context)
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)

    def route_chat(
        self, requests: Iterator[RouteNote], context: CallContext
    ) -> Iterator[RouteNote]:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "echo":
                yield from requests
            elif mode == "hang":
                yield next(requests)
                next(requests, None)  # blocks until a note, the end, or a cancel
            else:
                yield from super().route_chat(requests, context)
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)


class AsyncScriptedRouteGuide(AsyncRouteGuide):
    """The async route guide, told what to do by request metadata (module docs)."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def list_features(
        self, request: Rectangle, context: CallContext
    ) -> AsyncIterator[Feature]:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "endless":
                feature = Feature(name="x" * int(context.metadata.get("size", "1024")))
                for _ in range(10**7):
                    seen.produce()
                    yield feature
            elif mode == "hang":
                yield Feature(name="first")
                await asyncio.Event().wait()  # until cancelled
            else:
                for feature in features_in(request):
                    yield feature
                if mode == "fail":
                    raise _fail_error(context)
                if mode == "crash":
                    raise ValueError("secret detail")
                if mode == "slow":
                    await seen.released()
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)

    async def record_route(
        self, requests: AsyncIterator[Point], context: CallContext
    ) -> RouteSummary:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "stall":
                points = [await anext(requests) for _ in range(int(context.metadata["count"]))]
                await seen.released()
                points.extend([point async for point in requests])
                return RouteSummary(point_count=len(points))
            if mode == "fail":
                raise _fail_error(context)
            return await super().record_route(requests, context)
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)

    async def route_chat(
        self, requests: AsyncIterator[RouteNote], context: CallContext
    ) -> AsyncIterator[RouteNote]:
        seen, mode = self.seen, _mode(context)
        seen.start(context)
        how = "returned"
        try:
            _echo_metadata(context)
            if mode == "echo":
                async for note in requests:
                    yield note
            elif mode == "hang":
                yield await anext(requests)
                await anext(requests, None)
            else:
                async for note in super().route_chat(requests, context):
                    yield note
        except BaseException as exc:
            how = _how(exc)
            raise
        finally:
            seen.end(how, context)


HANDLERS = {"sync": ScriptedRouteGuide, "async": AsyncScriptedRouteGuide}


def run(coro: Any) -> Any:
    """Run `coro` on a fresh event loop, closed after (async generators included)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def async_client(server: Server, **options: Any) -> RouteGuideAsyncClient:
    options.setdefault("timeout", WAIT)
    return RouteGuideAsyncClient(server.address, **options)
