"""What a client holds while a stream runs: typed calls over a stream end (stream/core.py).

Sync:

- `ServerStreamCall`: an iterator of responses (`for feature in client.list_features(r)`);
- `BidiStreamCall`: the same, plus `send(request)` and `close_send()`;
- client streams are a function, `run_client_stream`: send every request, then the response.

Async: `AsyncServerStreamCall` and `AsyncBidiStreamCall` (async iterators; `await send(...)`,
`await close_send()`, `async with`), `run_client_stream_async`. An async call opens its stream
when first used (iterated, sent on, or entered), so a client method can return it without
awaiting anything.

Every call has `cancel()` (an RST to the server, whose handler is cancelled), `code` and
`details` once it ended, `initial_metadata()` (the server's HEADER metadata) and
`trailing_metadata()` (its TRAILER's). A stream that ends with a status other than OK raises
that RpcError where the application next touches it (iteration, send, the response). Leaving
a `with` block (or `async with`) before the end cancels the stream, and so does dropping a
call that has not ended (a `for` or `async for` loop left early).

`observe(on_message, on_end)` lets a middleware see each response and the end without
wrapping the call (rpcpoll.middleware.observe_stream uses it): a client middleware returns the
call it was given.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, Generic, TypeVar

from ..protocol.status import InternalError, RpcError, StatusCode, error_class
from ..protocol.stream import trailer_info
from .core import AsyncStreamEnd, StreamEnd, SyncStreamEnd

__all__ = [
    "AsyncBidiStreamCall",
    "AsyncServerStreamCall",
    "BidiStreamCall",
    "ServerStreamCall",
    "StreamCall",
    "run_client_stream",
    "run_client_stream_async",
    "start_sending",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
OnMessage = Callable[[Any], None]
OnEnd = Callable[["BaseException | None"], None]
_HALF_CLOSE = trailer_info()  # the client's end of its side: no status


def _final_error(end: StreamEnd) -> RpcError | None:
    """The error the stream ended with, or None (OK, or not ended yet)."""
    if end.error is not None:
        return end.error
    status = end.status
    if status is None or status == StatusCode.OK:
        return None
    return error_class(status)(message=end.status_message)


def _status(code: int) -> StatusCode:
    try:
        return StatusCode(code)
    except ValueError:
        return StatusCode.UNKNOWN


class StreamCall:
    """What sync and async calls share: status, metadata, observers."""

    _end: StreamEnd | None

    def __init__(self, end: StreamEnd | None, encode: Callable[[Any], bytes]) -> None:
        self._end = end
        self._encode = encode
        self._observers: list[tuple[OnMessage | None, OnEnd | None]] = []
        self._ended = False

    @property
    def code(self) -> StatusCode | None:
        """The stream's status once it ended (None while it runs)."""
        end = self._end
        if end is None:
            return None
        if end.error is not None:
            return _status(end.error.code)
        return None if end.status is None else _status(end.status)

    @property
    def details(self) -> str:
        """The status message once the stream ended ("" while it runs, or for OK)."""
        end = self._end
        if end is None:
            return ""
        return end.error.message if end.error is not None else end.status_message

    def initial_metadata(self) -> Mapping[str, str]:
        """The server's HEADER metadata ({} until it arrived)."""
        end = self._end
        return {} if end is None or end.header_metadata is None else end.header_metadata

    def trailing_metadata(self) -> Mapping[str, str]:
        """The server's TRAILER metadata ({} until the stream ended)."""
        return {} if self._end is None else self._end.trailing_metadata

    def done(self) -> bool:
        """Whether the stream has ended (status known, or reset)."""
        return self.code is not None

    def observe(self, on_message: OnMessage | None = None, on_end: OnEnd | None = None) -> None:
        """Call `on_message(response)` for each response the application takes, and
        `on_end(error)` once when the stream ends for it (None for OK; the RpcError else)."""
        self._observers.append((on_message, on_end))

    def _seen(self, message: Any) -> None:
        for on_message, _ in self._observers:
            if on_message is not None:
                on_message(message)

    def _over(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        for _, on_end in self._observers:
            if on_end is not None:
                on_end(error)


# ------------------------------------------------------------------------------- sync


class ServerStreamCall(StreamCall, Generic[Resp]):
    """The responses of a server stream, as an iterator."""

    _end: SyncStreamEnd

    def __init__(self, end: SyncStreamEnd, encode: Callable[[Any], bytes]) -> None:
        super().__init__(end, encode)

    def __iter__(self) -> Iterator[Resp]:
        return self

    def __next__(self) -> Resp:
        try:
            message = self._end.receive()
        except RpcError as exc:
            self._over(exc)
            raise
        if message is None:
            error = _final_error(self._end)
            self._over(error)
            if error is not None:
                raise error
            raise StopIteration
        if self._observers:
            self._seen(message)
        result: Resp = message
        return result

    def cancel(self) -> None:
        """End the stream now: the server's handler is cancelled; iterating raises
        CancelledError."""
        self._end.cancel(StatusCode.CANCELLED, "the client cancelled the stream")

    def __enter__(self) -> ServerStreamCall[Resp]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.done():
            self.cancel()

    def __del__(self) -> None:
        end = getattr(self, "_end", None)
        if end is not None and end.error is None and end.status is None:
            try:
                end.cancel(StatusCode.CANCELLED, "the client dropped the stream")
            except Exception:
                pass


class BidiStreamCall(ServerStreamCall[Resp], Generic[Req, Resp]):
    """A bidirectional stream: `send` requests, `close_send` when done, iterate responses.

    `send` blocks while the server grants no credit (it is not reading). One thread may send
    while another iterates.
    """

    def send(self, request: Req) -> None:
        """Send one request. Raises the stream's error once it failed (or RuntimeError if the
        server ended it with OK), RuntimeError after `close_send`."""
        if not self._end.send(self._encode(request)):
            raise _final_error(self._end) or RuntimeError(
                "the server has ended the stream: nothing more can be sent"
            )

    def close_send(self) -> None:
        """No more requests (the server's iterator of requests ends)."""
        self._end.end(_HALF_CLOSE)

    def send_all(self, requests: Iterable[Req]) -> None:
        """Send every request, then `close_send()`."""
        for request in requests:
            self.send(request)
        self.close_send()

    def __enter__(self) -> BidiStreamCall[Req, Resp]:
        return self


def start_sending(call: BidiStreamCall[Any, Any], requests: Iterable[Any]) -> threading.Thread:
    """Send `requests` from a thread of their own (a bidi call given its requests up front);
    a failure of the requests' iterator cancels the stream, which the reader then sees."""

    def run() -> None:
        try:
            call.send_all(requests)
        except RpcError:
            pass  # the stream failed: the reader raises it
        except RuntimeError:
            pass  # the server ended the stream: the reader sees how
        except Exception as exc:
            call._end.cancel(StatusCode.CANCELLED, f"the requests failed: {exc!r}")

    thread = threading.Thread(target=run, name="rpcpoll-stream-sender", daemon=True)
    thread.start()
    return thread


def run_client_stream(
    end: SyncStreamEnd, encode: Callable[[Any], bytes], requests: Iterable[Any]
) -> Any:
    """A client stream: every request, the half-close, then the one response. A server that
    answers before reading every request ends the sending."""
    try:
        for request in requests:
            if not end.send(encode(request)):
                break  # the server has answered (or failed): read what it said
        else:
            end.end(_HALF_CLOSE)
        return _one_response(end, end.receive())
    except BaseException:
        end.cancel(StatusCode.CANCELLED, "the client stopped the stream")
        raise


def _one_response(end: StreamEnd, message: Any) -> Any:
    error = _final_error(end)
    if error is not None:
        raise error
    if message is None:
        raise InternalError(message="the server ended the stream without a response")
    return message


# ------------------------------------------------------------------------------- async


Opener = Callable[[], Awaitable["_AsyncCall"]]


class _AsyncCall(StreamCall):
    """An async call whose stream opens when it is first used: `opener()` opens it and
    returns the opened call (through the client's middleware, if any)."""

    _end: AsyncStreamEnd | None

    def __init__(self, opener: Opener | None, encode: Callable[[Any], bytes]) -> None:
        super().__init__(None, encode)
        self._opener = opener
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where it opened

    @classmethod
    def opened(cls, end: AsyncStreamEnd, encode: Callable[[Any], bytes]) -> Any:
        """A call over a stream already open."""
        call = cls(None, encode)
        call._end = end
        return call

    async def _opened(self) -> AsyncStreamEnd:
        if self._end is None:
            opener, self._opener = self._opener, None
            if opener is None:
                raise asyncio.CancelledError("the stream was cancelled before it opened")
            inner = await opener()
            if not isinstance(inner, _AsyncCall) or inner._end is None:
                raise TypeError(
                    f"a client middleware returned {type(inner).__name__} for a stream: it"
                    " must return the call it was given (see rpcpoll.middleware)"
                )
            self._end, self._sender = inner._end, inner._sender
            self._loop = asyncio.get_running_loop()
            self._observers[:0] = inner._observers  # what the middleware asked to observe
        return self._end

    def cancel(self) -> None:
        """End the stream now (an RST; a stream not open yet never opens)."""
        if self._end is not None:
            self._end.cancel(StatusCode.CANCELLED, "the client cancelled the stream")
        else:
            self._opener = None
        if self._sender is not None:
            self._sender.cancel()

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.done():
            self.cancel()

    def __del__(self) -> None:
        # Dropped before its end (an `async for` left early): cancel it on its loop, whatever
        # thread the garbage collector runs on.
        end, loop = getattr(self, "_end", None), getattr(self, "_loop", None)
        if end is None or loop is None or end.error is not None or end.status is not None:
            return
        try:
            loop.call_soon_threadsafe(end.cancel, StatusCode.CANCELLED, "the client dropped it")
            if self._sender is not None:
                loop.call_soon_threadsafe(self._sender.cancel)
        except RuntimeError:
            pass  # its loop is closed: so is its connection


class AsyncServerStreamCall(_AsyncCall, Generic[Resp]):
    """The responses of a server stream, as an async iterator."""

    def __aiter__(self) -> AsyncIterator[Resp]:
        return self

    async def __anext__(self) -> Resp:
        end = await self._opened()
        try:
            message = await end.receive()
        except RpcError as exc:
            self._over(exc)
            raise
        except BaseException:  # the task was cancelled: so is the stream
            end.cancel(StatusCode.CANCELLED, "the client cancelled the stream")
            raise
        if message is None:
            error = _final_error(end)
            self._over(error)
            if error is not None:
                raise error
            raise StopAsyncIteration
        if self._observers:
            self._seen(message)
        result: Resp = message
        return result

    async def __aenter__(self) -> AsyncServerStreamCall[Resp]:
        await self._opened()
        return self


class AsyncBidiStreamCall(AsyncServerStreamCall[Resp], Generic[Req, Resp]):
    """A bidirectional stream, async: `await send(...)`, `await close_send()`, `async for`."""

    async def send(self, request: Req) -> None:
        end = await self._opened()
        if not await end.send(self._encode(request)):
            raise _final_error(end) or RuntimeError(
                "the server has ended the stream: nothing more can be sent"
            )

    async def close_send(self) -> None:
        end = await self._opened()
        end.end(_HALF_CLOSE)

    async def send_all(self, requests: Iterable[Req] | AsyncIterable[Req]) -> None:
        """Send every request (from an iterable or an async iterable), then `close_send()`."""
        if isinstance(requests, AsyncIterable):
            async for request in requests:
                await self.send(request)
        else:
            for request in requests:
                await self.send(request)
        await self.close_send()

    def start_sending(self, requests: Iterable[Req] | AsyncIterable[Req]) -> None:
        """Send `requests` from a task of their own (a bidi call given its requests up
        front); a failure of the requests' iterator cancels the stream."""

        async def run() -> None:
            try:
                await self.send_all(requests)
            except (RpcError, RuntimeError):
                pass  # the stream failed or ended: the reader sees how
            except Exception as exc:
                if self._end is not None:
                    self._end.cancel(StatusCode.CANCELLED, f"the requests failed: {exc!r}")

        self._sender = asyncio.get_running_loop().create_task(run())

    async def __aenter__(self) -> AsyncBidiStreamCall[Req, Resp]:
        await self._opened()
        return self


async def run_client_stream_async(
    end: AsyncStreamEnd,
    encode: Callable[[Any], bytes],
    requests: Iterable[Any] | AsyncIterable[Any],
) -> Any:
    """`run_client_stream`, awaited; requests from an iterable or an async iterable."""
    try:
        sent_all = True
        if isinstance(requests, AsyncIterable):
            async for request in requests:
                if not await end.send(encode(request)):
                    sent_all = False
                    break
        else:
            for request in requests:
                if not await end.send(encode(request)):
                    sent_all = False
                    break
        if sent_all:
            end.end(_HALF_CLOSE)
        return _one_response(end, await end.receive())
    except BaseException:
        end.cancel(StatusCode.CANCELLED, "the client stopped the stream")
        raise
