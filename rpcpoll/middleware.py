"""Middleware: code that wraps every call of a server or a client, in the spirit of Kitex's
endpoint chain (`Middleware func(next Endpoint) Endpoint`).

A middleware is called with the call's request, its context and `next`, the rest of the chain,
and returns what `next` returns (or raises):

    def log_calls(request, context, next):
        started = time.monotonic()
        try:
            return next(request, context)
        finally:
            print(context.method, time.monotonic() - started)

    Server(address, handler, middleware=[log_calls])
    EchoServiceClient(address, middleware=[log_calls])

- **Order.** The first middleware listed is the outermost: it sees the call first and its
  outcome last. The innermost `next` is the handler (server) or the network call (client).
- **Context.** On a server, `context` is the handler's `CallContext` (service, method,
  metadata as received, deadline, peer, kind, reply metadata). On a client it is a
  `ClientCallContext`: its `metadata` is the dict that will be sent, so a middleware may add
  to it before calling `next`; after `next`, `peer` is the instance the call went to and
  `reply_metadata` what came back.
- **Rejecting a call.** Raise any `RpcError` instead of calling `next` (e.g.
  `UnauthenticatedError` for a missing token): the caller gets that status and message, the
  handler never runs. Any other exception is what a handler raising it would be: INTERNAL for
  the caller, the traceback logged on the server; on a client, the caller sees the exception.
- **Sync and async.** A plain `def` middleware wraps sync calls (sync handlers, sync
  clients); an `async def` one wraps async calls and awaits `next`. A `Middleware` subclass can
  do both (override `__call__` and `call_async`). A server or client refuses, when it starts
  or is made, a middleware that cannot wrap one of its calls.
- **Streams.** For a streaming method, `context.kind` says which (`"server_stream"`,
  `"client_stream"`, `"bidi"`); `request` is the request (server streams) or an iterator (async
  iterator) of requests, and `next` returns the response or an iterator (async iterator) of
  responses. `observe_stream` wraps such an iterator to see each message and its end.

Without middleware, a server or client calls handlers and the network exactly as before:
the chain is built once per method, never per call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar

import msgspec

from .protocol.status import RpcError, StatusCode

__all__ = [
    "AnyMiddleware",
    "ClientCallContext",
    "Endpoint",
    "Middleware",
    "MiddlewareFunction",
    "build_chain",
    "check_middleware",
    "observe_stream",
    "status_of",
]

#: The rest of a chain: `next(request, context)`, returning the response (or awaitable).
Endpoint = Callable[[Any, Any], Any]
#: A middleware as a function: `(request, context, next) -> response` (or `async def`).
MiddlewareFunction = Callable[[Any, Any, Endpoint], Any]


class Middleware:
    """A middleware for sync and async calls alike: override `__call__` (sync calls) and
    `call_async` (async calls); each passes the call on unchanged by default."""

    def __call__(self, request: Any, context: Any, next: Endpoint) -> Any:
        return next(request, context)

    async def call_async(self, request: Any, context: Any, next: Endpoint) -> Any:
        return await next(request, context)


class ClientCallContext(msgspec.Struct, gc=False):
    """A client-side middleware's view of a call (the server side's is `CallContext`).

    `metadata` is sent with the request: add to it before calling `next`. `timeout` is the
    whole call's budget (retries included), None for none. After `next` returns or raises,
    `peer` is the instance the last attempt went to ("" if none was reached),
    `reply_metadata` what the server sent back, and `attempts` how many were made.
    """

    side: ClassVar[str] = "client"

    service: str
    method: str
    metadata: dict[str, str]
    timeout: float | None = None
    kind: str = "unary"
    peer: str = ""
    reply_metadata: dict[str, str] = msgspec.field(default_factory=dict)
    attempts: int = 0
    # The channel's own: the service and method descriptors the call is for.
    _descriptors: Any = None


AnyMiddleware = Middleware | MiddlewareFunction


def check_middleware(middleware: Sequence[AnyMiddleware], *, sync: bool, is_async: bool) -> None:
    """Raise TypeError, naming it, for a middleware that cannot wrap the calls it will see
    (`sync`: there are sync calls; `is_async`: there are async calls)."""
    for item in middleware:
        if isinstance(item, Middleware):
            continue
        if not callable(item):
            raise TypeError(f"middleware must be callable, not {type(item).__name__}")
        coroutine = _is_async_function(item)
        if sync and coroutine:
            raise TypeError(
                f"middleware {_name(item)} is `async def`: it cannot wrap sync calls "
                "(subclass rpcpoll.middleware.Middleware to wrap both)"
            )
        if is_async and not coroutine:
            raise TypeError(
                f"middleware {_name(item)} is a plain function: it cannot wrap async calls "
                "(make it `async def`, or subclass rpcpoll.middleware.Middleware for both)"
            )


def build_chain(
    endpoint: Endpoint, middleware: Sequence[AnyMiddleware], is_async: bool
) -> Endpoint:
    """`endpoint` wrapped in `middleware`, the first outermost (checked with
    `check_middleware` first). Returns `endpoint` itself for no middleware."""
    check_middleware(middleware, sync=not is_async, is_async=is_async)
    for item in reversed(middleware):
        function: Callable[[Any, Any, Endpoint], Any] = item
        if isinstance(item, Middleware):
            function = item.call_async if is_async else item.__call__
        endpoint = _link(function, endpoint)
    return endpoint


def _link(function: MiddlewareFunction, next_endpoint: Endpoint) -> Endpoint:
    def endpoint(request: Any, context: Any) -> Any:
        return function(request, context, next_endpoint)

    return endpoint


def status_of(error: BaseException | None) -> StatusCode:
    """The status a caller sees for a call that raised `error` (None: OK): an RpcError's
    code, CANCELLED for a cancellation, INTERNAL for anything else."""
    if error is None:
        return StatusCode.OK
    if isinstance(error, RpcError):
        try:
            return StatusCode(error.code)
        except ValueError:
            return StatusCode.UNKNOWN
    if type(error).__name__ == "CancelledError":  # asyncio's, without importing asyncio here
        return StatusCode.CANCELLED
    return StatusCode.INTERNAL


def observe_stream(
    stream: Any,
    on_message: Callable[[Any], None] | None = None,
    on_end: Callable[[BaseException | None], None] | None = None,
) -> Any:
    """`stream` (an iterator or async iterator of messages) wrapped so that `on_message` sees
    each message as it passes and `on_end` is called once when the stream ends: with None
    after its last message, with the exception that ended it, or with GeneratorExit when its
    consumer stopped early (closed it). A client's stream call (rpcpoll.stream.calls) is not
    wrapped: it is returned as it is, its observers registered (a client middleware must
    return the call it was given, so that the caller can still send on it and cancel it)."""
    observe = getattr(stream, "observe", None)
    if observe is not None:  # a client's stream call: it reports to its observers itself
        observe(on_message, on_end)
        return stream
    if hasattr(stream, "__anext__"):
        return _observe_async(stream, on_message, on_end)
    return _observe(iter(stream), on_message, on_end)


def _observe(
    stream: Iterator[Any],
    on_message: Callable[[Any], None] | None,
    on_end: Callable[[BaseException | None], None] | None,
) -> Iterator[Any]:
    ended: BaseException | None = None
    try:
        for message in stream:
            if on_message is not None:
                on_message(message)
            yield message
    except BaseException as exc:
        ended = exc
        raise
    finally:
        close = getattr(stream, "close", None)
        if ended is not None and close is not None:
            close()
        if on_end is not None:
            on_end(ended)


async def _observe_async(
    stream: AsyncIterator[Any],
    on_message: Callable[[Any], None] | None,
    on_end: Callable[[BaseException | None], None] | None,
) -> AsyncIterator[Any]:
    ended: BaseException | None = None
    try:
        async for message in stream:
            if on_message is not None:
                on_message(message)
            yield message
    except BaseException as exc:
        ended = exc
        raise
    finally:
        close = getattr(stream, "aclose", None)
        if ended is not None and close is not None:
            await close()
        if on_end is not None:
            on_end(ended)


def _is_async_function(item: Any) -> bool:
    call = item if inspect.isfunction(item) or inspect.ismethod(item) else item.__call__
    return inspect.iscoroutinefunction(call)


def _name(item: Any) -> str:
    return getattr(item, "__qualname__", None) or type(item).__qualname__
