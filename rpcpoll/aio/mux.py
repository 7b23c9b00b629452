"""Async calls multiplexed over a few connections that the event loop itself drives.

An `AsyncMuxTransport` keeps, for one address, a ring of up to `size` connections on the
running loop's LoopPoller (transport/loop_poller.py): replies are read, and requests written,
on the loop's thread, so a call costs no thread hand-off. The ring grows on demand: a new
connection is dialed only when every connection already has half its `max_calls` waiting, so a
task calling one at a time uses one connection, 128 concurrent tasks two (by default), and 1000
use at most `size`.

Per call (`AsyncMuxConnection.call`): a sequence id and a future; the request frame (flagged
out-of-order) goes into the connection's output buffer at once, and one flush per loop round
sends every request written in that round. The reply resolves the future by sequence id.
Deadlines share one loop timer per connection, armed for the earliest one.

- **Cancel.** A call whose task is cancelled, or whose deadline passes, forgets its future (a
  late reply is dropped) and, if its request was sent, sends an RST frame with its sequence id
  so that the server cancels the handler (an async one sees CancelledError). The connection
  stays in use.
- **A connection that dies** fails its waiting calls at once, as the sync mux does: NotSent
  for requests never flushed, MaybeSent for the others; `crrst` retires it.
- **Bounds** as for the sync mux: `max_calls` waiting per connection and `max_unsent` bytes
  the server has not taken; a call that finds every connection full fails with
  RESOURCE_EXHAUSTED, never sent.
- **The loop.** A transport binds to the loop of its first call. Used from another loop once
  that one is closed (a new `asyncio.run`), it starts afresh; from two live loops at once, the
  second gets RuntimeError.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..client.longconn import SkippingFrames, refusal_of, reply_of, reply_too_large
from ..client.outcome import MaybeSentError, NotSentError, Reply, timeout_ms_until
from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    FLAG_OUT_OF_ORDER,
    FLAG_STREAMING,
    FrameReader,
    FrameTooLargeError,
    FrameType,
    ProtocolError,
    RequestTemplate,
    append_frame,
    parse_info,
    stream_info,
)
from ..protocol.status import (
    DeadlineExceededError,
    InternalError,
    ResourceExhaustedError,
    StatusCode,
)
from ..protocol.stream import DEFAULT_WINDOW, open_info, parse_stream_frame
from ..stream.core import AsyncStreamEnd, StreamEnd, deliver_server_frame
from ..transport.connection import Connection, run_inline
from ..transport.errors import DialError, DialRefusedError, DialTimeoutError, TransportError
from ..transport.loop_poller import LoopPoller
from ..transport.net import dial_connection_async

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["AsyncMuxConnection", "AsyncMuxTransport", "loop_poller"]

log = logging.getLogger("rpcpoll.client")

_MAX_SEQ = 0x7FFFFFFF
_RST_INFO = stream_info(FrameType.RST)  # cancels the call with the frame's sequence id


class _PendingCall:
    __slots__ = ("deadline", "future", "sent")

    def __init__(
        self, future: asyncio.Future[tuple[bytes, memoryview]], deadline: float | None
    ) -> None:
        self.future = future
        self.deadline = deadline  # time.monotonic() seconds, or None
        self.sent = False  # flushed to the socket: a failure now is "maybe sent"


class _AsyncClientStream:
    """A stream open on an AsyncMuxConnection: its end, and how its messages decode."""

    __slots__ = ("decode", "end")

    def __init__(self, end: AsyncStreamEnd, decode: Any) -> None:
        self.end = end
        self.decode = decode


class AsyncMuxConnection:
    """One connection many tasks call over at once (on its loop's thread only)."""

    def __init__(
        self, conn: Connection, loop: asyncio.AbstractEventLoop, frames: FrameReader, describe: str
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._describe = describe
        self._pending: dict[int, _PendingCall] = {}
        self._streams: dict[int, _AsyncClientStream] = {}  # open streams, by stream id
        self._unflushed: list[_PendingCall] = []
        self._flush_scheduled = False
        # One timer for every call's deadline (a loop timer per call costs more than the rest
        # of the call's bookkeeping): armed for the earliest deadline it knows of.
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._seq = itertools.count(1)
        self.retired = False
        self.dead = False
        self.refused: str | None = None
        self._incoming = SkippingFrames(frames, self._on_oversized)
        conn.add_close_callback(self._on_close)
        conn.set_on_request(self._on_request)

    @property
    def usable(self) -> bool:
        return not (self.dead or self.retired)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._streams)

    def has_room(self, max_calls: int, max_unsent: int) -> bool:
        return self.pending < max_calls and self._conn.unsent_bytes <= max_unsent

    def close(self) -> None:
        self._conn.close()

    async def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply:
        """One attempt; raises NotSentError, MaybeSentError, DeadlineExceededError or
        InternalError; cancelling the awaiting task cancels the call (module docs)."""
        timeout_ms = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(message="deadline exceeded before the call was sent")
            timeout_ms = max(1, int(remaining * 1000))
        if self.dead:
            raise NotSentError(f"connection to {self._describe} is closed")
        pending = self._pending
        seq_id = self._new_id()
        future: asyncio.Future[tuple[bytes, memoryview]] = self._loop.create_future()
        call = _PendingCall(future, deadline)
        pending[seq_id] = call
        template.write(
            self._conn.writer(), seq_id, payload, timeout_ms, metadata, FLAG_OUT_OF_ORDER
        )
        self._unflushed.append(call)
        if not self._flush_scheduled:
            if len(pending) == 1:
                # Alone: send now (a task calling one at a time saves a loop round per
                # call); with calls in flight, one flush per round sends them all.
                self._flush()
            else:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        if deadline is not None and (self._sweep_timer is None or deadline < self._sweep_at):
            self._arm_sweep(deadline)
        try:
            info, body = await future
        except asyncio.CancelledError:
            self._forget(seq_id, call)
            raise
        try:
            reply = reply_of(info, body)
        except ProtocolError as exc:
            raise InternalError(message=f"protocol error from {self._describe}: {exc}") from exc
        if CONNECTION_RESET_KEY in reply[3]:
            self.retired = True
        if self.retired and not pending and not self._streams:
            self._conn.close()
        return reply

    def _new_id(self) -> int:
        seq_id = next(self._seq) & _MAX_SEQ
        while not seq_id or seq_id in self._pending or seq_id in self._streams:
            seq_id = next(self._seq) & _MAX_SEQ  # after a wrap-around: skip ids in use
        return seq_id

    def open_stream(
        self,
        service: str,
        method: str,
        decode: Any,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
        window: int = DEFAULT_WINDOW,
    ) -> AsyncStreamEnd:
        """Open a stream (its HEADER goes out with this loop iteration's flush): the client's
        end of it. Raises NotSentError on a dead connection."""
        if self.dead:
            raise NotSentError(f"connection to {self._describe} is closed")
        seq_id = self._new_id()
        end = AsyncStreamEnd(
            seq_id,
            lambda info, payload: self._write_frame(seq_id, info, payload),
            self._schedule_flush,
            server_side=False,
            deadline=deadline,
            window=window,
            describe=f"{service}/{method} on {self._describe}",
        )
        self._streams[seq_id] = _AsyncClientStream(end, decode)
        end.on_finish = self._stream_finished
        end.emit(open_info(method, service, metadata, timeout_ms_until(deadline), window), b"")
        return end

    def _write_frame(
        self, seq_id: int, info: bytes, payload: bytes | bytearray | memoryview
    ) -> None:
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, seq_id, info, payload)
        try:
            self._conn.writer().write_binary(frame)
        except TransportError:
            pass  # closed: its close callback resets the stream

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _stream_finished(self, end: StreamEnd) -> None:
        self._streams.pop(end.id, None)
        if self.retired and not self._pending and not self._streams:
            self._conn.close()

    def _forget(self, seq_id: int, call: _PendingCall) -> None:
        """The caller gave up: drop its future (a late reply is dropped) and, if the request
        went out, ask the server to cancel the call."""
        if self._pending.get(seq_id) is call:
            del self._pending[seq_id]
            if call.sent and not self.dead:
                self._send_rst(seq_id)

    def _arm_sweep(self, at: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_at = at
        self._sweep_timer = self._loop.call_later(max(0.0, at - time.monotonic()), self._sweep)

    def _sweep(self) -> None:
        """Fail the calls whose deadline has passed; arm for the earliest of the others.
        Runs once per earliest deadline, not per call: a call that ends costs nothing here."""
        self._sweep_timer = None
        now = time.monotonic()
        earliest: float | None = None
        expired: list[tuple[int, _PendingCall]] = []
        for seq_id, call in self._pending.items():
            deadline = call.deadline
            if deadline is None:
                continue
            if deadline <= now:
                expired.append((seq_id, call))
            elif earliest is None or deadline < earliest:
                earliest = deadline
        for seq_id, call in expired:
            self._expire(seq_id, call)
        if earliest is not None:
            self._arm_sweep(earliest)

    def _expire(self, seq_id: int, call: _PendingCall) -> None:
        if call.future.done():
            return
        self._forget(seq_id, call)
        call.future.set_exception(
            DeadlineExceededError(message=f"deadline exceeded waiting for {self._describe}")
        )

    def _send_rst(self, seq_id: int) -> None:
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, seq_id, _RST_INFO)
        try:
            self._conn.writer().write_binary(frame)
        except TransportError:
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        unflushed, self._unflushed = self._unflushed, []
        try:
            self._conn.flush()  # on the loop's (poller) thread: never waits
        except TransportError as exc:
            log.debug("mux connection to %s failed: %s", self._describe, exc)
            self._conn.close()  # its close callback fails every pending call
            return
        for call in unflushed:
            call.sent = True

    # ------------------------------------------------------------------ reading (the loop)

    def _on_request(self, _context: Any, conn: Connection) -> None:
        reader = conn.reader()
        read = self._incoming.next
        pending = self._pending
        try:
            while True:
                raw = read(reader)
                if raw is None:
                    break
                if raw[1] & FLAG_STREAMING:
                    self._on_stream_frame(raw[0], raw[2], raw[3])
                    continue
                call = pending.pop(raw[0], None)
                if call is None:
                    if raw[0] == 0:
                        self._on_control(raw[2])
                    continue  # a late reply to a call that gave up: dropped
                if not call.future.done():
                    call.future.set_result((raw[2], raw[3]))
            reader.release()
        except ProtocolError as exc:
            log.warning("closing mux connection to %s: %s", self._describe, exc)
            conn.close()

    def _on_oversized(self, exc: FrameTooLargeError) -> None:
        """A frame over this client's max_frame_size: its call fails, or its stream is reset
        (an RST tells the server), with RESOURCE_EXHAUSTED; the reader then skips its bytes
        as they arrive, unbuffered, and the connection's other calls carry on."""
        call = self._pending.pop(exc.seq_id or 0, None)
        if call is not None:
            if not call.future.done():
                call.future.set_exception(reply_too_large(exc, self._describe))
            return
        stream = self._streams.get(exc.seq_id or 0)
        if stream is not None:
            error = reply_too_large(exc, self._describe, "a message")
            stream.end.reset(StatusCode.RESOURCE_EXHAUSTED, error.message)

    def _on_stream_frame(self, seq_id: int, info: bytes, payload: memoryview) -> None:
        """A frame of one of our streams (ProtocolError: the connection closes)."""
        event = parse_stream_frame(seq_id, info, payload)
        stream = self._streams.get(seq_id)
        if stream is None:
            return  # a stream that ended here already (its late frames are expected)
        deliver_server_frame(stream.end, event, stream.decode)

    def _on_control(self, info: bytes) -> None:
        refused = refusal_of(info)
        if refused is not None:
            self.refused = refused
        try:
            if CONNECTION_RESET_KEY in parse_info(info)[6]:
                self.retired = True
                if not self._pending and not self._streams:
                    self._conn.close()
        except ProtocolError as exc:
            log.warning("bad control frame from %s: %s", self._describe, exc)

    def _on_close(self, conn: Connection) -> None:
        if not conn.poller.in_poller_thread():
            try:
                self._loop.call_soon_threadsafe(self._fail_all)
            except RuntimeError:  # the loop is closed: nobody awaits these
                pass
            return
        self._fail_all()

    def _fail_all(self) -> None:
        self.dead = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for stream in list(self._streams.values()):
            stream.end.on_reset(StatusCode.UNAVAILABLE, f"connection to {self._describe} closed")
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.future.done():
                continue
            if self.refused is not None:
                error: Exception = NotSentError(
                    f"{self._describe} refused the connection: {self.refused}"
                )
            elif call.sent:
                error = MaybeSentError(f"connection to {self._describe} closed")
            else:
                error = NotSentError(f"connection to {self._describe} closed before sending")
            call.future.set_exception(error)


_LOOP_POLLERS: dict[int, tuple[asyncio.AbstractEventLoop, LoopPoller, int]] = {}
_LOOP_POLLERS_LOCK = threading.Lock()


def loop_poller(loop: asyncio.AbstractEventLoop) -> LoopPoller:
    """The LoopPoller of `loop` that async transports share (made on first use; it stays
    until `release_loop_poller` is called as often as this was)."""
    with _LOOP_POLLERS_LOCK:
        found = _LOOP_POLLERS.get(id(loop))
        if found is not None and found[0] is loop and not found[1].closed:
            _LOOP_POLLERS[id(loop)] = (loop, found[1], found[2] + 1)
            return found[1]
        poller = LoopPoller(loop, name="rpcpoll-client-loop-poller")
        _LOOP_POLLERS[id(loop)] = (loop, poller, 1)
        return poller


def release_loop_poller(loop: asyncio.AbstractEventLoop) -> None:
    with _LOOP_POLLERS_LOCK:
        found = _LOOP_POLLERS.get(id(loop))
        if found is None or found[0] is not loop:
            return
        if found[2] > 1:
            _LOOP_POLLERS[id(loop)] = (loop, found[1], found[2] - 1)
            return
        del _LOOP_POLLERS[id(loop)]
        poller = found[1]
    poller.close()


class AsyncMuxTransport:
    """Async calls to one address over a ring of at most `size` multiplexed connections."""

    def __init__(
        self,
        network: str,
        address: str | tuple[str, int],
        *,
        size: int,
        frames: FrameReader,
        connect_timeout: float | None,
        describe: str,
        max_calls: int,
        max_unsent: int,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._network = network
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._address = address
        self._size = max(1, size)
        self._frames = frames
        self._connect_timeout = connect_timeout
        self._describe = describe
        self._max_calls = max_calls
        self._max_unsent = max_unsent
        # A connection is added once every one has this many calls waiting: on one loop, a
        # connection's batch of requests costs one sendmsg and one recv whatever its size, so
        # a few full connections beat many part-full ones (bench_aio, 128 tasks: 96k calls/s
        # over 2 connections, 84k over 8).
        self._grow_at = max(1, max_calls // 2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: LoopPoller | None = None
        self._ring: list[AsyncMuxConnection] = []
        self._dialing: asyncio.Future[AsyncMuxConnection] | None = None
        self._closed = False

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._loop is not None:
            if not self._loop.is_closed():
                raise RuntimeError(
                    f"this client is in use on another event loop ({self._describe})"
                )
            self._drop_connections()  # its loop is gone: start afresh on this one
        self._loop = loop
        self._poller = loop_poller(loop)
        return loop

    async def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply:
        if self._closed:
            raise NotSentError(f"the client to {self._describe} is closed")
        connection = self._ready_connection()
        if connection is None:
            connection = await self._connection(deadline)
        return await connection.call(template, payload, deadline, metadata)

    async def open_stream(
        self,
        service: str,
        method: str,
        decode: Any,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> AsyncStreamEnd:
        """Open a stream on the least busy connection (a stream counts as a call waiting)."""
        if self._closed:
            raise NotSentError(f"the client to {self._describe} is closed")
        connection = await self._connection(deadline)
        return connection.open_stream(service, method, decode, deadline, metadata)

    def _least_busy(self) -> tuple[AsyncMuxConnection | None, int]:
        """The least busy usable connection with room, and its load (calls and streams
        waiting). Runs once per call: plain attribute reads, no properties."""
        best: AsyncMuxConnection | None = None
        best_load = self._max_calls
        max_unsent = self._max_unsent
        for connection in self._ring:
            if connection.dead or connection.retired:
                continue
            load = len(connection._pending) + len(connection._streams)
            if load < best_load and connection._conn.unsent_bytes <= max_unsent:
                best, best_load = connection, load
                if not load:
                    break
        return best, best_load

    def _ready_connection(self) -> AsyncMuxConnection | None:
        """The connection for the next call when the ring needs no new one (no await: the
        common case); None when `_connection` must decide."""
        if self._loop is not asyncio.get_running_loop():
            return None
        best, load = self._least_busy()
        if best is not None and (load < self._grow_at or len(self._ring) >= self._size):
            return best
        return None

    async def _connection(self, deadline: float | None) -> AsyncMuxConnection:
        self._bind()
        ready = self._ready_connection()
        if ready is not None:
            return ready
        best, _load = self._least_busy()
        if len([c for c in self._ring if c.usable]) < self._size:
            try:
                return await self._dial(deadline)
            except NotSentError:
                if best is not None:
                    return best  # a connection that works beats one that would not dial
                raise
        if best is not None:
            return best
        raise ResourceExhaustedError(
            message=f"every connection to {self._describe} is full"
            f" ({self._max_calls} calls waiting, or the server is not reading); nothing was sent"
        )

    async def _dial(self, deadline: float | None) -> AsyncMuxConnection:
        """A new connection; concurrent callers share one dial."""
        if self._dialing is not None:
            return await asyncio.shield(self._dialing)
        loop = self._bind()
        self._dialing = loop.create_future()
        timeout = self._connect_timeout
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._dialing = None
                raise DeadlineExceededError(message="deadline exceeded before connecting")
            timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            assert self._poller is not None
            conn = await dial_connection_async(
                self._network, self._address, timeout, self._poller, run_inline,
                ssl=self._ssl, server_hostname=self._server_hostname,
            )  # fmt: skip
        except (DialRefusedError, DialError, DialTimeoutError) as exc:
            error = NotSentError(str(exc))
            self._dialing.set_exception(error)
            self._dialing.exception()  # retrieved: no "never retrieved" warning
            self._dialing = None
            raise error from exc
        connection = AsyncMuxConnection(conn, loop, self._frames, self._describe)
        self._ring = [c for c in self._ring if not c.dead] + [connection]
        self._dialing.set_result(connection)
        self._dialing = None
        if self._closed:
            connection.close()
        return connection

    def warm_up(self, count: int, deadline: float | None = None) -> int:
        return 0  # async connections are dialed by the first calls

    def _drop_connections(self) -> None:
        ring, self._ring = self._ring, []
        for connection in ring:
            connection.close()
        if self._loop is not None:
            release_loop_poller(self._loop)
        self._loop = self._poller = None

    def close(self) -> None:
        """Close the connections (calls waiting on them fail); from any thread."""
        self._closed = True
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or loop.is_closed() or not loop.is_running():
            self._drop_connections()
        else:
            loop.call_soon_threadsafe(self._drop_connections)
