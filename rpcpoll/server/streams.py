"""The server side of streaming rpcs: frames to stream ends, handlers run against them.

A stream opens with the client's HEADER (docs/protocol.md, "Streams"). The server looks up the
streaming method, builds the call's context and a stream end, and runs the handler:

- a sync handler on a worker thread (for the stream's whole life: sync streams each hold a
  thread, and count toward `max_calls` as calls on threads do);
- an async handler (`async def`, or an async generator) as a task on the server's loop.

Requests reach the handler as the request (server streams: the client's one message) or as an
iterator of requests (client streams and bidi; async iterator for async handlers); it answers
with the response, or an iterator (async iterator) of responses. The server's HEADER (with
`context.reply_metadata`) goes before its first message, its TRAILER (status, message and
`context.trailing_metadata`) after the handler ends. A handler raising RpcError ends the stream
with that status; anything else with INTERNAL (logged).

Each connection's open streams are in its state's `streams`; frames of one stream never affect
another stream or the connection's unary calls:

- an RST from the client cancels the handler (async: its task; sync: the next receive or send
  raises CancelledError and `context.cancelled()` turns true); so does the connection closing;
- the deadline (one for the whole stream) resets the stream with DEADLINE_EXCEEDED;
- a frame that breaks a stream rule (data after the client's end, more than one request for a
  server stream, past its credit, an undecodable message, a second HEADER) resets the stream;
- DATA, TRAILER and META for a stream that is not open get an RST, unless it ended moments
  ago (late frames of a stream the server finished are expected and dropped).

Streams do not pause reading when a connection reaches `max_calls_per_connection` (a paused
connection would starve the streams' own frames): a stream over that limit, or over
`max_calls` for a sync handler, is refused at once with RESOURCE_EXHAUSTED; a stream opened
while the server drains, with UNAVAILABLE (another server may take it). A frame over
`max_frame_size` is skipped unread, and its stream reset with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..message import DecodeError
from ..protocol.frame import FLAG_STREAMING, FrameType, append_frame
from ..protocol.status import RpcError, StatusCode
from ..protocol.stream import (
    StreamEvent,
    StreamReset,
    data_info,
    parse_stream_frame,
    response_header_info,
    rst_info,
    trailer_info,
)
from ..service import CallContext
from ..stream.core import AsyncStreamEnd, StreamEnd, SyncStreamEnd
from .dispatch import Route

if TYPE_CHECKING:
    from ..transport.identity import PeerIdentity

__all__ = ["ServerStream", "StreamHost", "StreamTable"]

log = logging.getLogger("rpcpoll.server")

_RECENT = 256  # ended stream ids remembered per connection, to drop their late frames
_DATA_INFO = data_info()  # the header every DATA frame carries


class StreamTable:
    """A connection's open streams, and the ids of those that ended lately."""

    __slots__ = ("_recent_order", "open", "recent")

    def __init__(self) -> None:
        self.open: dict[int, ServerStream] = {}
        self.recent: set[int] = set()
        self._recent_order: deque[int] = deque()

    def ended(self, stream_id: int) -> None:
        self.open.pop(stream_id, None)
        if stream_id not in self.recent:
            self.recent.add(stream_id)
            self._recent_order.append(stream_id)
            if len(self._recent_order) > _RECENT:
                self.recent.discard(self._recent_order.popleft())


class StreamHost:
    """What the stream runtime needs from its server (rpcpoll.server.Server implements it)."""

    def stream_emit(self, conn: Any, state: Any, frame: bytes | bytearray) -> None:
        """Queue `frame` on the connection (thread-safe, in order, never blocking)."""
        raise NotImplementedError

    def stream_kick(self, conn: Any, state: Any) -> None:
        """Get the queued frames written (may block until the kernel takes them)."""
        raise NotImplementedError

    def stream_admit(self, state: Any, on_thread: bool) -> tuple[StatusCode, str] | None:
        """Count a new stream in; None if admitted, else the status that refuses it."""
        raise NotImplementedError

    def stream_release(self, state: Any, on_thread: bool) -> None:
        raise NotImplementedError


class ServerStream:
    """One open stream: its route, context, end, and the handler running it."""

    __slots__ = ("conn", "context", "end", "received", "route", "state", "task", "timer")

    def __init__(
        self, route: Route, context: CallContext, end: StreamEnd, conn: Any, state: Any
    ) -> None:
        self.route = route
        self.context = context
        self.end = end
        self.conn = conn
        self.state = state
        self.received = 0  # request messages received (a server stream takes one)
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def cancel_handler(self) -> None:
        """The caller went away: the handler learns it (module docs)."""
        self.context._cancelled = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()


def on_stream_frame(
    host: StreamHost,
    dispatcher: Any,
    pool: Any,
    loop: asyncio.AbstractEventLoop | None,
    conn: Any,
    state: Any,
    seq_id: int,
    info: bytes,
    payload: memoryview,
    now: float,
    max_entries: int | None,
) -> None:
    """A frame flagged FLAG_STREAMING, on the thread that reads `conn` (a ProtocolError for an
    unparseable one propagates: the connection closes)."""
    event: StreamEvent | None = None
    if info == _DATA_INFO:  # most frames: a message, whose header needs no parsing
        kind = FrameType.DATA
    else:
        event = parse_stream_frame(seq_id, info, payload, max_entries)
        kind = event.kind
    table: StreamTable = state.streams
    stream = table.open.get(seq_id)
    if kind is FrameType.HEADER:
        assert event is not None
        if stream is not None:
            _reset(stream, StatusCode.INVALID_ARGUMENT, f"stream {seq_id} was opened twice")
            return
        _open(host, dispatcher, pool, loop, conn, state, event, now)
        return
    if stream is None:
        if kind is FrameType.RST:
            calls = getattr(state, "calls", None)  # an async unary call's cancel (server/aio.py)
            if calls is not None and seq_id in calls:
                from .aio import cancel_call

                cancel_call(calls[seq_id])
            return
        if seq_id not in table.recent:  # late frames of a stream that just ended: dropped
            message = f"stream {seq_id} is not open"
            _emit(host, conn, state, seq_id, rst_info(StatusCode.INVALID_ARGUMENT, message))
        return
    end = stream.end
    lock = end.locked() if isinstance(end, SyncStreamEnd) else None
    if lock is not None:
        lock.acquire()
    try:
        if kind is FrameType.DATA:
            route = stream.route
            stream.received += 1
            if stream.received > 1 and route.kind == "server_stream":
                raise StreamReset(StatusCode.INVALID_ARGUMENT, "a server stream takes one request")
            try:
                request = route.decode(payload)
            except Exception:
                try:
                    request = route.request_type.from_bytes(payload)
                except DecodeError as exc:
                    raise StreamReset(
                        StatusCode.INVALID_ARGUMENT, f"cannot decode a request: {exc}"
                    ) from None
            end.on_data(request, len(payload))
        elif kind is FrameType.TRAILER:
            end.on_end(None)
        elif kind is FrameType.META:
            assert event is not None
            if event.credit:
                end.on_credit(event.credit)
        elif kind is FrameType.RST:
            assert event is not None
            end.on_reset(StatusCode.CANCELLED, event.message or "the client cancelled the stream")
            stream.cancel_handler()
    except StreamReset as exc:
        end.reset(exc.code, exc.message)
        stream.cancel_handler()
    finally:
        if lock is not None:
            lock.release()
    end.kick()


def on_oversized_frame(
    host: StreamHost,
    conn: Any,
    state: Any,
    seq_id: int,
    info: bytes,
    size: int,
    limit: int,
    max_entries: int | None,
) -> None:
    """A stream frame of `size` bytes, over the server's `limit`, whose body the server skips
    unread: its stream is reset with RESOURCE_EXHAUSTED (a HEADER's stream is refused); the
    connection, its other streams and its unary calls go on."""
    code = StatusCode.RESOURCE_EXHAUSTED
    message = f"a stream frame of {size} bytes exceeds the server's limit of {limit}"
    kind = FrameType.DATA
    if info != _DATA_INFO:
        kind = parse_stream_frame(seq_id, info, memoryview(b""), max_entries).kind
    table: StreamTable = state.streams
    stream = table.open.get(seq_id)
    if stream is None:
        if kind is FrameType.HEADER:
            _refuse(host, conn, state, seq_id, code, message)
        elif seq_id not in table.recent:
            _emit(host, conn, state, seq_id, rst_info(code, message))
        return
    end = stream.end
    lock = end.locked() if isinstance(end, SyncStreamEnd) else None
    if lock is not None:
        lock.acquire()
    try:
        end.reset(code, message)
        stream.cancel_handler()
    finally:
        if lock is not None:
            lock.release()
    end.kick()


def _open(
    host: StreamHost,
    dispatcher: Any,
    pool: Any,
    loop: asyncio.AbstractEventLoop | None,
    conn: Any,
    state: Any,
    event: StreamEvent,
    now: float,
) -> None:
    seq_id = event.stream_id
    route = dispatcher.stream_route(event.service, event.method)
    if route is None:
        name = f"{event.service}/{event.method}"
        why = dispatcher.unary_mismatch(event.service, event.method, True)
        _refuse(
            host, conn, state, seq_id, StatusCode.UNIMPLEMENTED, why or f"unknown method {name}"
        )
        return
    if event.timeout_ms is not None and event.timeout_ms <= 0:
        _refuse(host, conn, state, seq_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        return
    on_thread = not route.is_async
    refused = host.stream_admit(state, on_thread)
    if refused is not None:
        _refuse(host, conn, state, seq_id, *refused)
        return
    deadline = None if event.timeout_ms is None else now + event.timeout_ms * 0.001
    identity: PeerIdentity | None = getattr(state, "identity", None)
    context = CallContext(
        route.service_name, route.method_name, event.metadata, deadline,
        getattr(state, "peer", ""), route.kind, identity,
    )  # fmt: skip
    table: StreamTable = state.streams

    def emit(info: bytes, payload: bytes | bytearray | memoryview) -> None:
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, seq_id, info, payload)
        host.stream_emit(conn, state, frame)

    def kick() -> None:
        host.stream_kick(conn, state)

    options: dict[str, Any] = {
        "server_side": True, "deadline": deadline, "describe": route.where,
    }  # fmt: skip
    end_type = AsyncStreamEnd if route.is_async else SyncStreamEnd
    end: StreamEnd = end_type(seq_id, emit, kick, **options)
    end.on_header(event.metadata, event.window)
    stream = ServerStream(route, context, end, conn, state)
    released = False

    def on_finish(_end: StreamEnd) -> None:
        nonlocal released
        if _end.error is not None:  # reset (RST, deadline, connection gone): not an answer
            context._cancelled = True
        table.ended(seq_id)
        if not released:
            released = True
            host.stream_release(state, on_thread)

    end.on_finish = on_finish
    table.open[seq_id] = stream
    if route.is_async:
        assert loop is not None, "async handlers run on the server's event loop"
        stream.task = loop.create_task(_run_async(stream))
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
            stream.timer = loop.call_later(remaining, _expire, stream)
    else:
        pool.submit(lambda: _run_sync(stream))


def _expire(stream: ServerStream) -> None:
    stream.end.reset(StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded in {stream.route.where}")
    stream.cancel_handler()


def _reset(stream: ServerStream, code: int, message: str) -> None:
    end = stream.end
    if isinstance(end, SyncStreamEnd):
        end.cancel(code, message)
    else:
        end.reset(code, message)
    stream.cancel_handler()


def _refuse(host: StreamHost, conn: Any, state: Any, seq_id: int, code: int, message: str) -> None:
    """End a stream the server will not run: its TRAILER with the status."""
    state.streams.ended(seq_id)
    _emit(host, conn, state, seq_id, trailer_info(int(code), message))


def _emit(host: StreamHost, conn: Any, state: Any, seq_id: int, info: bytes) -> None:
    frame = bytearray()
    append_frame(frame, FLAG_STREAMING, seq_id, info)
    host.stream_emit(conn, state, frame)
    host.stream_kick(conn, state)


# ------------------------------------------------------------------------------- sync handlers


class _Requests:
    """The iterator of requests a sync client-stream or bidi handler reads."""

    __slots__ = ("_end",)

    def __init__(self, end: SyncStreamEnd) -> None:
        self._end = end

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        message = self._end.receive()
        if message is None:
            raise StopIteration
        return message


def _run_sync(stream: ServerStream) -> None:
    """A sync handler's whole stream, on a worker thread."""
    end = stream.end
    assert isinstance(end, SyncStreamEnd)
    route, context = stream.route, stream.context
    result: Any = None
    try:
        if route.kind in ("client_stream", "bidi"):
            request: Any = _Requests(end)
        else:
            request = end.receive()
            if request is None:
                raise RpcError(StatusCode.INVALID_ARGUMENT, "the stream ended without a request")
        result = route.call(request, context)
        if route.kind in ("server_stream", "bidi"):
            for response in result:
                _send_sync(stream, end, response)
        else:
            _send_sync(stream, end, result)
        _finish_sync(stream, end, StatusCode.OK, "")
    except RpcError as exc:
        _finish_sync(stream, end, exc.code, exc.message)
    except Exception as exc:
        log.error("handler for %s failed", route.where, exc_info=exc)
        _finish_sync(stream, end, StatusCode.INTERNAL, f"{route.where} failed on the server")
    finally:
        close = getattr(result, "close", None)
        if close is not None and inspect.isgenerator(result):
            close()  # a generator left early: its finally blocks run now


def _send_sync(stream: ServerStream, end: SyncStreamEnd, response: Any) -> None:
    if response.__class__ is stream.route.response_type:  # the common case, inline
        payload = response.to_bytes()
    else:
        payload = _encode(stream, response)
    if not stream.context._header_sent:
        _header(stream, end)
    end.send(payload)


def _finish_sync(stream: ServerStream, end: SyncStreamEnd, code: int, message: str) -> None:
    if end.error is not None:
        return  # reset: the client has its status already
    _header(stream, end)
    end.end(trailer_info(int(code), message, stream.context._trailing_metadata))


# ------------------------------------------------------------------------------- async handlers


class _AsyncRequests:
    """The async iterator of requests an async client-stream or bidi handler reads."""

    __slots__ = ("_end",)

    def __init__(self, end: AsyncStreamEnd) -> None:
        self._end = end

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        message = await self._end.receive()
        if message is None:
            raise StopAsyncIteration
        return message


async def _run_async(stream: ServerStream) -> None:
    end = stream.end
    assert isinstance(end, AsyncStreamEnd)
    route, context = stream.route, stream.context
    result: Any = None
    try:
        if route.kind in ("client_stream", "bidi"):
            request: Any = _AsyncRequests(end)
        else:
            request = await end.receive()
            if request is None:
                raise RpcError(StatusCode.INVALID_ARGUMENT, "the stream ended without a request")
        result = await route.call(request, context)
        if route.kind in ("server_stream", "bidi"):
            async for response in result:
                await _send_async(stream, end, response)
        else:
            await _send_async(stream, end, result)
        _finish_async(stream, end, StatusCode.OK, "")
    except asyncio.CancelledError:
        # RST, deadline, connection closed (the end is reset already), or the handler
        # cancelled itself: the client is told CANCELLED.
        _finish_async(stream, end, StatusCode.CANCELLED, f"{route.where} was cancelled")
    except RpcError as exc:
        _finish_async(stream, end, exc.code, exc.message)
    except Exception as exc:
        log.error("handler for %s failed", route.where, exc_info=exc)
        _finish_async(stream, end, StatusCode.INTERNAL, f"{route.where} failed on the server")
    finally:
        if stream.timer is not None:
            stream.timer.cancel()
        aclose = getattr(result, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.debug("closing %s's response stream failed", route.where, exc_info=True)


async def _send_async(stream: ServerStream, end: AsyncStreamEnd, response: Any) -> None:
    payload = _encode(stream, response)
    _header(stream, end)
    await end.send(payload)


def _finish_async(stream: ServerStream, end: AsyncStreamEnd, code: int, message: str) -> None:
    if end.error is not None:
        return
    _header(stream, end)
    end.end(trailer_info(int(code), message, stream.context._trailing_metadata))


# ------------------------------------------------------------------------------- both


def _encode(stream: ServerStream, response: Any) -> bytes:
    route = stream.route
    if response.__class__ is not route.response_type and not isinstance(
        response, route.response_type
    ):
        raise TypeError(
            f"{route.where} produced {type(response).__name__}, not {route.response_type.__name__}"
        )
    payload: bytes = response.to_bytes()
    return payload


def _header(stream: ServerStream, end: StreamEnd) -> None:
    """The server's HEADER, before its first message or its TRAILER: once."""
    context = stream.context
    if context._header_sent:
        return
    context._header_sent = True
    end.emit(response_header_info(context._reply_metadata), b"")  # written with what follows


def reset_all(state: Any, code: int, message: str) -> None:
    """Reset every open stream of a connection (a shutdown whose exit wait has passed). A
    connection left with nothing in progress is closed: the server is done with it, and an
    asyncio server's loop stops watching its connections after this."""
    table: StreamTable | None = getattr(state, "streams", None)
    if table is None or not table.open:
        return
    streams = list(table.open.values())
    conn = streams[0].conn
    on_loop: list[ServerStream] = []
    for stream in streams:
        end = stream.end
        if isinstance(end, SyncStreamEnd):
            end.cancel(code, message)
            stream.cancel_handler()
        elif stream.task is not None and not stream.task.get_loop().is_closed():
            on_loop.append(stream)

    def close_if_idle() -> None:
        if getattr(state, "inflight", 0) or getattr(state, "calls", None):
            return
        lock = getattr(state, "lock", None)  # a thread writing now: let it finish first
        if lock is not None and lock.acquire(timeout=1.0):
            lock.release()
        streams[0].end.kick()  # the RSTs it left queued
        conn.close()

    if not on_loop:
        close_if_idle()
        return

    def reset_on_loop() -> None:
        for stream in on_loop:
            _reset(stream, code, message)
        close_if_idle()

    assert on_loop[0].task is not None
    on_loop[0].task.get_loop().call_soon_threadsafe(reset_on_loop)


def on_connection_closed(state: Any) -> None:
    """The connection is gone: every stream's handler is cancelled; nothing can be sent."""
    table: StreamTable | None = getattr(state, "streams", None)
    if table is None:
        return
    for stream in list(table.open.values()):
        end = stream.end
        if isinstance(end, SyncStreamEnd):
            with end.locked():
                end.on_reset(StatusCode.CANCELLED, "the connection closed")
            stream.cancel_handler()
            continue
        task = stream.task
        loop = task.get_loop() if task is not None else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_closed, stream)


def _closed(stream: ServerStream) -> None:
    stream.end.on_reset(StatusCode.CANCELLED, "the connection closed")
    stream.cancel_handler()
