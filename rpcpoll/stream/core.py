"""One end of one stream, between the wire and the application: what client and server share.

A `StreamEnd` holds the stream's `StreamState` (credit and phases, rpcpoll/protocol/stream.py),
the messages received and not yet taken, and how the stream ended. Frames arrive through the
`on_*` methods, called by whatever reads the connection (a poller, or an event loop), in the
order they arrived. The application takes messages with `receive()` and sends with `send()`;
both wait (for a message, for credit) until the stream's deadline. Frames go out in two steps
the owner provides: `emit(info, payload)` queues a frame on the connection (cheap, in order,
never blocking) and `kick()` gets queued frames written (it may block until the kernel takes
them, so a SyncStreamEnd calls it only after letting go of its lock: a thread blocked in a
write must never hold what the connection's reader needs).

`SyncStreamEnd` waits on a condition variable (any thread may read or write the connection);
`AsyncStreamEnd` lives on one event loop, which both delivers frames and runs the application.

What is sent is a payload (bytes); what is received is whatever the owner delivers, usually the
decoded message (rpcpoll/stream/calls.py, rpcpoll/server/streams.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..protocol.frame import FrameType
from ..protocol.status import (
    CancelledError,
    DeadlineExceededError,
    RpcError,
    StatusCode,
)
from ..protocol.stream import (
    DEFAULT_WINDOW,
    Phase,
    StreamEvent,
    StreamReset,
    StreamState,
    credit_info,
    data_info,
    rst_info,
)

__all__ = ["AsyncStreamEnd", "Emit", "StreamEnd", "SyncStreamEnd", "deliver_server_frame"]

#: Queue one frame of this stream on its connection: (header info, payload).
Emit = Callable[[bytes, "bytes | bytearray | memoryview"], None]
#: Get the frames queued on the connection written.
Kick = Callable[[], None]
Payload = Any  # bytes or memoryview
_DATA_INFO = data_info()
_SENDING = (Phase.OPEN, Phase.REMOTE_CLOSED)  # the phases in which DATA may go


class StreamEnd:
    """The transitions of one end of a stream; subclasses add waiting (module docs)."""

    def __init__(
        self,
        stream_id: int,
        emit: Emit,
        kick: Kick,
        *,
        server_side: bool,
        deadline: float | None = None,
        window: int = DEFAULT_WINDOW,
        describe: str = "",
    ) -> None:
        self.id = stream_id
        self.kick = kick
        #: the server's end finishes the stream when it sends its TRAILER, a client's when it
        #: receives it; either finishes on a reset
        self.server_side = server_side
        self.emit = emit
        self.deadline = deadline
        self.describe = describe
        self.state = StreamState(window)
        self.inbox: deque[tuple[Payload, int]] = deque()
        #: why the stream failed (reset by the peer, cancelled, deadline); local calls raise it
        self.error: RpcError | None = None
        #: the peer's end arrived (a TRAILER): no more messages after those in the inbox
        self.remote_done = False
        #: the peer's TRAILER status and message (a server's; None from a client)
        self.status: int | None = None
        self.status_message = ""
        self.header_metadata: Mapping[str, str] | None = None  # the peer's HEADER metadata
        self.trailing_metadata: Mapping[str, str] = {}
        self.on_finish: Callable[[StreamEnd], None] | None = None  # the owner unregisters

    # -- frames in (the connection's reader) -------------------------------------------------

    def on_header(self, metadata: Mapping[str, str], window: int) -> None:
        self.header_metadata = metadata
        if window != DEFAULT_WINDOW:
            self.state.peer_window(window)
            self._wake()

    def on_data(self, message: Any, size: int) -> None:
        """A message (decoded, or its payload), `size` bytes on the wire. Raises StreamReset
        when the peer broke a rule (the owner resets the stream)."""
        self.state.received_data(size)
        self.inbox.append((message, size))
        self._wake()

    def on_end(
        self, status: int | None, message: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        """The peer's TRAILER: its last message has arrived (with its status, from a server)."""
        if self.remote_done:
            raise StreamReset(StatusCode.INVALID_ARGUMENT, "a second end of stream")
        self.state.received_end()
        self.remote_done = True
        self.status = status
        self.status_message = message
        self.trailing_metadata = metadata or {}
        if not self.server_side:  # the server's status: the call is over, whatever we sent
            self.state.phase = Phase.CLOSED
            self._finished()
        self._wake()

    def on_credit(self, credit: int) -> None:
        self.state.granted(credit)
        self._wake()

    def on_reset(self, code: int, message: str) -> None:
        """The peer's RST, or the connection's end: the stream is over, nothing more goes."""
        if self.error is None:
            self.error = RpcError(code, message or f"the stream was reset ({self.describe})")
        self.inbox.clear()
        self.state.phase = Phase.CLOSED
        self._wake()
        self._finished()

    # -- local ends --------------------------------------------------------------------------

    def reset(self, code: int, message: str = "") -> None:
        """End the stream now from this side: RST to the peer, and local calls raise."""
        if self.state.phase is Phase.CLOSED:
            return
        self.error = self.error or _error(code, message or "the stream was cancelled")
        self.inbox.clear()
        self.state.phase = Phase.CLOSED
        self.emit(rst_info(code, message), b"")
        self._wake()
        self._finished()

    def _expired(self) -> RpcError:
        self.reset(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        assert self.error is not None
        return self.error

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def _take(self) -> Payload:
        """The next message (the inbox is not empty), granting credit when it is due."""
        payload, size = self.inbox.popleft()
        grant = self.state.consume(size)
        if grant and not self.remote_done and self.error is None:
            self.emit(credit_info(grant), b"")
        return payload

    def _put(self, payload: bytes | bytearray | memoryview) -> None:
        """Send a message now (credit was checked)."""
        self.state.sent_data(len(payload))
        self.emit(_DATA_INFO, payload)

    def _sent_end(self) -> None:
        self.state.sent_end()
        if self.server_side:  # the server's TRAILER ends the stream
            self.state.phase = Phase.CLOSED
            self._finished()

    def _finished(self) -> None:
        callback, self.on_finish = self.on_finish, None
        if callback is not None:
            callback(self)

    def _wake(self) -> None:
        raise NotImplementedError


def deliver_server_frame(end: StreamEnd, event: StreamEvent, decode: Callable[[Any], Any]) -> None:
    """A client's end takes a frame of its server (`decode` turns DATA into a message); a
    frame that breaks the stream's rules resets it. Both clients' readers call this, the
    sync one holding `end.locked()`."""
    kind = event.kind
    try:
        if kind is FrameType.DATA:
            try:
                message = decode(event.payload)
            except Exception as exc:
                raise StreamReset(
                    StatusCode.INTERNAL, f"cannot decode a message from the server: {exc}"
                ) from None
            end.on_data(message, len(event.payload))
        elif kind is FrameType.HEADER:
            end.on_header(event.metadata, event.window)
        elif kind is FrameType.TRAILER:
            status = StatusCode.OK if event.status is None else event.status
            end.on_end(status, event.message, event.metadata)
        elif kind is FrameType.META:
            if event.credit:
                end.on_credit(event.credit)
        elif kind is FrameType.RST:
            end.on_reset(event.status or StatusCode.CANCELLED, event.message)
    except StreamReset as exc:
        end.reset(exc.code, exc.message)


def _error(code: int, message: str) -> RpcError:
    if code == StatusCode.CANCELLED:
        return CancelledError(message=message)
    if code == StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(message=message)
    return RpcError(code, message)


class SyncStreamEnd(StreamEnd):
    """A stream end whose application side blocks (any thread). The connection's reader
    calls `on_*` holding `locked()`, then `kick()` after letting go of it."""

    def __init__(self, stream_id: int, emit: Emit, kick: Kick, **options: Any) -> None:
        super().__init__(stream_id, emit, kick, **options)
        self._lock = threading.Lock()  # the condition's: taken directly on the fast paths
        self._cv = threading.Condition(self._lock)
        self._waiting = 0  # threads that may be in _wait: only then does a frame notify

    def _wake(self) -> None:
        # Called by the reader with the lock held (see `locked`), or under it here.
        if self._waiting:
            self._waiting = 0  # every waiter is woken: the next frame need not notify
            self._cv.notify_all()

    def _wait(self, timeout: float | None) -> None:
        self._waiting += 1  # (one that times out leaves it counted: one notify too many)
        self._cv.wait(timeout)

    def locked(self) -> threading.Condition:
        """The lock the connection's reader holds while it calls `on_*`."""
        return self._cv

    def receive(self) -> Payload | None:
        """The next message; None after the peer's last one. Raises the stream's error."""
        lock = self._lock
        lock.acquire()
        if self.error is None and self.inbox:  # the common case: a message is waiting
            try:
                payload, size = self.inbox.popleft()
                grant = self.state.consume(size)
                if grant and not self.remote_done:
                    self.emit(credit_info(grant), b"")
                else:
                    grant = 0
            finally:
                lock.release()
            if grant:
                self.kick()
            return payload
        lock.release()
        return self._receive_waiting()

    def _receive_waiting(self) -> Payload | None:
        try:
            with self._cv:
                while True:
                    if self.error is not None:
                        raise self.error
                    if self.inbox:
                        return self._take()
                    if self.remote_done:
                        return None
                    remaining = self._remaining()
                    if remaining is not None and remaining <= 0:
                        raise self._expired()
                    self._wait(remaining)
        finally:
            self.kick()  # a credit grant, or the RST of an expired deadline

    def send(self, payload: bytes | bytearray | memoryview) -> bool:
        """Send a message once there is credit; False (nothing sent) when the peer has ended
        the stream (a client's end after the server's TRAILER). Raises the stream's error
        (reset, cancelled, deadline) or RuntimeError after this side ended."""
        lock = self._lock
        lock.acquire()
        state = self.state
        if (
            state.send_credit > 0
            and self.error is None
            and state.phase in _SENDING
            and (self.server_side or not self.remote_done)
        ):  # the common case, as _send_waiting would do it
            try:
                state.send_credit -= len(payload) or 1
                self.emit(_DATA_INFO, payload)
            finally:
                lock.release()
            self.kick()
            return True
        lock.release()
        return self._send_waiting(payload)

    def _send_waiting(self, payload: bytes | bytearray | memoryview) -> bool:
        try:
            with self._cv:
                while True:
                    if self.error is not None:
                        raise self.error
                    state = self.state
                    if self.remote_done and not self.server_side:
                        return False
                    if state.phase in (Phase.LOCAL_CLOSED, Phase.CLOSED):
                        raise RuntimeError("this side of the stream has ended: nothing can go")
                    if state.send_credit > 0:
                        self._put(payload)
                        return True
                    remaining = self._remaining()
                    if remaining is not None and remaining <= 0:
                        raise self._expired()
                    self._wait(remaining)
        finally:
            self.kick()

    def end(self, info: bytes) -> None:
        """Send this side's end (a TRAILER of `info`), once."""
        with self._cv:
            if self.error is not None or self.state.phase in (Phase.LOCAL_CLOSED, Phase.CLOSED):
                return
            self.emit(info, b"")
            self._sent_end()
        self.kick()

    def cancel(self, code: int = StatusCode.CANCELLED, message: str = "") -> None:
        with self._cv:
            self.reset(code, message)
        self.kick()


class AsyncStreamEnd(StreamEnd):
    """A stream end on one event loop: frames are delivered and the application awaits on
    the same thread, so no lock is needed, and each frame is written as it is emitted."""

    def __init__(self, stream_id: int, emit: Emit, kick: Kick, **options: Any) -> None:
        def emit_now(info: bytes, payload: bytes | bytearray | memoryview) -> None:
            emit(info, payload)
            kick()

        super().__init__(stream_id, emit_now, kick, **options)
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self) -> None:
        """Until the next frame (or reset) of this stream, or the deadline."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        remaining = self._remaining()
        if remaining is None:
            await waiter
            return
        if remaining <= 0:
            raise self._expired()
        timer = loop.call_later(remaining, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()

    async def receive(self) -> Payload | None:
        while True:
            if self.error is not None:
                raise self.error
            if self.inbox:
                return self._take()
            if self.remote_done:
                return None
            await self._changed()

    async def send(self, payload: bytes | bytearray | memoryview) -> bool:
        while True:
            if self.error is not None:
                raise self.error
            state = self.state
            if self.remote_done and not self.server_side:
                return False
            if state.phase in (Phase.LOCAL_CLOSED, Phase.CLOSED):
                raise RuntimeError("this side of the stream has ended: nothing can go")
            if state.send_credit > 0:
                self._put(payload)
                return True
            await self._changed()

    def end(self, info: bytes) -> None:
        if self.error is not None or self.state.phase in (Phase.LOCAL_CLOSED, Phase.CLOSED):
            return
        self.emit(info, b"")
        self._sent_end()

    def cancel(self, code: int = StatusCode.CANCELLED, message: str = "") -> None:
        self.reset(code, message)
