"""Multiplexed connections: many concurrent calls over a few connections (Kitex's netpollmux).

`MuxTransport(size=N)` keeps a ring of N connections to one address and hands them out round
robin. Each call gets its own sequence id on its connection and is flagged out-of-order, so the
server runs the calls of one connection concurrently and answers as each finishes.

- **Replies** are read by the connection's poller, which matches each to its waiting call by
  sequence id and wakes that thread; the waiting thread decodes it. A reply nobody waits for
  (its call timed out) is dropped.
- **Writes** from many threads are combined: a caller queues its request and, if no other
  thread is writing, encodes every queued request into the connection's output buffer and sends
  them with one `sendmsg` (netpoll's ShardQueue idea; under the GIL one queue suffices). A
  caller that finds another thread writing leaves its request to that thread, which re-checks
  the queue after it lets go of the write lock, so no request is stranded.
- **Timeouts** fail only the call: the connection stays in use and the late reply is dropped.
- **A connection that dies** fails every call waiting on it at once: calls whose request was
  never written with NotSentError (any method may be retried), the others with
  MaybeSentError. The next call on its slot dials a replacement.
- **`crrst`** (the server is shutting down) retires the connection: it gets no new calls and
  closes once its last call is answered. A server refusing the connection (too many
  connections) says so in a control frame: its calls fail as never sent.
- **Bounds.** A connection with `max_calls` calls waiting, or more than `max_unsent` request
  bytes its server has not taken yet, gets no new calls: the next connection of the ring is
  tried, and a call that finds every one full fails at once with RESOURCE_EXHAUSTED (never
  sent). So a server that stops reading costs this client at most `max_unsent` per connection.
- **A reply over `max_frame_size`** fails its call with RESOURCE_EXHAUSTED (a stream's
  message: its stream is reset, an RST telling the server). Its header says how long it is,
  so the reader skips its bytes as they arrive, never buffering them, and reads the frame
  after it: the connection's other calls and streams go on (rpcpoll/aio/mux.py does the
  same). Only a frame whose sequence id is 0 (no call to fail) closes the connection.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    FLAG_OUT_OF_ORDER,
    FLAG_STREAMING,
    FrameReader,
    FrameTooLargeError,
    ProtocolError,
    RequestTemplate,
    append_frame,
    parse_info,
)
from ..protocol.status import (
    DeadlineExceededError,
    InternalError,
    ResourceExhaustedError,
    StatusCode,
)
from ..protocol.stream import (
    DEFAULT_WINDOW,
    StreamReset,
    data_info,
    open_info,
    parse_stream_frame,
)
from ..stream.core import StreamEnd, SyncStreamEnd, deliver_server_frame
from ..transport.connection import Connection, run_inline
from ..transport.errors import TransportError, WriteTimeoutError
from ..transport.tls_connection import TLSConnection
from .longconn import SkippingFrames, dial_within, refusal_of, reply_of, reply_too_large
from .outcome import MaybeSentError, NotSentError, Reply, timeout_ms_until

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["MuxConnection", "MuxTransport"]

log = logging.getLogger("rpcpoll.client")

_MAX_SEQ = 0x7FFFFFFF  # Kitex's seq ids are i32; 0 is reserved for control frames
DEFAULT_MAX_CALLS = 128  # per connection; the server's default max_calls_per_connection too
DEFAULT_MAX_UNSENT = 1024 * 1024
_DATA_INFO = data_info()  # the header every DATA frame carries


class _Call:
    """One call waiting on a MuxConnection: what to write, then what came back."""

    __slots__ = (
        "done",
        "error",
        "info",
        "metadata",
        "payload",
        "reply",
        "seq_id",
        "template",
        "timeout_ms",
        "written",
    )

    def __init__(
        self,
        seq_id: int,
        template: RequestTemplate,
        payload: bytes,
        timeout_ms: int | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        # A lock taken now and released by whoever finishes the call: the cheapest one-shot
        # wake-up CPython has (an Event is a Condition around such a lock).
        self.done = allocate_lock()
        self.done.acquire()
        self.seq_id = seq_id
        self.template = template
        self.payload = payload
        self.timeout_ms = timeout_ms
        self.metadata = metadata
        self.written = False
        self.info = b""
        self.reply: memoryview | None = None
        self.error: Exception | None = None


class _ClientStream:
    """A stream open on a MuxConnection: its end, and how its messages decode."""

    __slots__ = ("decode", "end")

    def __init__(self, end: SyncStreamEnd, decode: Any) -> None:
        self.end = end
        self.decode = decode


class MuxConnection:
    """One multiplexed connection: any number of threads may call at once."""

    def __init__(self, conn: Connection, frames: FrameReader, describe: str) -> None:
        self._conn = conn
        self._describe = describe
        self._pending: dict[int, _Call] = {}
        self._streams: dict[int, _ClientStream] = {}  # open streams, by stream id
        self._queue: deque[_Call | bytes | bytearray] = deque()  # calls, or encoded frames
        self._write_lock = threading.Lock()
        self._seq = itertools.count(1)
        self.retired = False  # no new calls: crrst seen, or its pool let go of it
        self.dead = False
        self.refused: str | None = None  # the server refused the connection, and why
        self._incoming = SkippingFrames(frames, self._on_oversized)
        conn.add_close_callback(self._on_close)
        conn.set_on_request(self._on_request)

    @property
    def usable(self) -> bool:
        """Whether new calls may use this connection."""
        return not (self.dead or self.retired)

    @property
    def pending(self) -> int:
        """Calls waiting for their reply, and open streams."""
        return len(self._pending) + len(self._streams)

    def has_room(self, max_calls: int, max_unsent: int) -> bool:
        """Whether a new call fits: fewer than `max_calls` waiting (streams included), at most
        `max_unsent` bytes queued for a server that is not reading them."""
        return self.pending < max_calls and self._conn.unsent_bytes <= max_unsent

    def retire(self) -> None:
        """Take no new calls; close once the calls and streams in progress are done."""
        self.retired = True
        if not self._pending and not self._streams:
            self._conn.close()

    def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply:
        """One attempt: raises NotSentError, MaybeSentError, DeadlineExceededError or
        InternalError."""
        timeout_ms = timeout_ms_until(deadline)
        pending = self._pending
        seq_id = next(self._seq) & _MAX_SEQ
        while not seq_id or seq_id in pending:  # after a wrap-around: skip ids still waiting
            seq_id = next(self._seq) & _MAX_SEQ
        call = _Call(seq_id, template, payload, timeout_ms, metadata)
        pending[seq_id] = call
        if self.dead:  # closed before our call was registered: nobody will fail it for us
            if pending.pop(seq_id, None) is call:
                raise NotSentError(f"connection to {self._describe} is closed")
        else:
            self._queue.append(call)
            self._write_queued(deadline)
        done = call.done
        if deadline is None:
            done.acquire()
        elif not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            if pending.pop(seq_id, None) is call:  # from now on its reply is dropped
                raise DeadlineExceededError(message=f"deadline exceeded calling {template.method}")
            done.acquire()  # its reply or failure is being delivered right now
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        try:
            reply = reply_of(call.info, call.reply)
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
            seq_id = next(self._seq) & _MAX_SEQ
        return seq_id

    def open_stream(
        self,
        service: str,
        method: str,
        decode: Any,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
        window: int = DEFAULT_WINDOW,
    ) -> SyncStreamEnd:
        """Open a stream (its HEADER is queued at once): the client's end of it, whose
        messages are decoded with `decode(payload)`. Raises NotSentError on a dead connection."""
        seq_id = self._new_id()
        end = SyncStreamEnd(
            seq_id,
            lambda info, payload: self._queue_frame(seq_id, info, payload),
            lambda: self._write_queued(deadline),
            server_side=False,
            deadline=deadline,
            window=window,
            describe=f"{service}/{method} on {self._describe}",
        )
        self._streams[seq_id] = _ClientStream(end, decode)
        end.on_finish = self._stream_finished
        if self.dead:
            self._streams.pop(seq_id, None)
            raise NotSentError(f"connection to {self._describe} is closed")
        info = open_info(method, service, metadata, timeout_ms_until(deadline), window)
        self._queue_frame(seq_id, info, b"")
        self._write_queued(deadline)
        return end

    def _queue_frame(
        self, seq_id: int, info: bytes, payload: bytes | bytearray | memoryview
    ) -> None:
        frame = bytearray()
        append_frame(frame, FLAG_STREAMING, seq_id, info, payload)
        self._queue.append(frame)

    def _stream_finished(self, end: StreamEnd) -> None:
        self._streams.pop(end.id, None)
        if self.retired and not self._pending and not self._streams:
            self._conn.close()

    # ------------------------------------------------------------------ writing

    def _write_queued(self, deadline: float | None) -> None:
        queue = self._queue
        pending = self._pending
        conn = self._conn
        while queue:
            if not self._write_lock.acquire(blocking=False):
                return  # the writer re-checks the queue after letting go: it sends ours too
            try:
                writer = conn.writer()
                while queue:
                    call = queue.popleft()
                    if call.__class__ is bytearray:  # a stream's frame
                        writer.write_binary(call)
                        continue
                    assert isinstance(call, _Call)
                    if pending.get(call.seq_id) is not call:
                        continue  # timed out or failed while queued: never sent
                    call.written = True
                    call.template.write(
                        writer,
                        call.seq_id,
                        call.payload,
                        call.timeout_ms,
                        call.metadata,
                        FLAG_OUT_OF_ORDER,
                    )
                conn.set_write_deadline(deadline)
                conn.flush()
            except WriteTimeoutError:
                pass  # the rest stays queued in the connection and drains; our call times out
            except TransportError as exc:
                log.debug("mux connection to %s failed: %s", self._describe, exc)
                conn.close()  # its close callback fails every pending call
            finally:
                self._write_lock.release()

    # ------------------------------------------------------------------ reading (poller)

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
                    if raw[0] == 0:  # a control frame (Kitex sends crrst this way)
                        self._on_control(raw[2])
                    continue  # a late reply to a call that timed out: dropped
                call.info = raw[2]
                call.reply = raw[3]  # stays valid after release (see LinkBuffer.release)
                call.done.release()
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
            call.error = reply_too_large(exc, self._describe)
            call.done.release()
            return
        stream = self._streams.get(exc.seq_id or 0)
        if stream is not None:
            error = reply_too_large(exc, self._describe, "a message")
            end = stream.end
            with end.locked():
                end.reset(StatusCode.RESOURCE_EXHAUSTED, error.message)
            end.kick()

    def _on_stream_frame(self, seq_id: int, info: bytes, payload: memoryview) -> None:
        """A frame of one of our streams (ProtocolError: the connection closes)."""
        if info == _DATA_INFO:  # most frames: a message, whose header needs no parsing
            stream = self._streams.get(seq_id)
            if stream is None:
                return  # a stream that ended here already
            try:
                message = stream.decode(payload)
            except Exception:
                pass  # the slow path below resets the stream, saying why
            else:
                end = stream.end
                with end.locked():
                    try:
                        end.on_data(message, len(payload))
                        return  # nothing to write: no kick
                    except StreamReset as exc:
                        end.reset(exc.code, exc.message)
                end.kick()
                return
        event = parse_stream_frame(seq_id, info, payload)
        stream = self._streams.get(seq_id)
        if stream is None:
            return  # a stream that ended here already (its late frames are expected)
        end = stream.end
        with end.locked():
            deliver_server_frame(end, event, stream.decode)
        end.kick()

    def _on_control(self, info: bytes) -> None:
        refused = refusal_of(info)
        if refused is not None:
            self.refused = refused  # it closes next: its calls were never read
        try:
            if CONNECTION_RESET_KEY in parse_info(info)[6]:
                self.retire()
        except ProtocolError as exc:
            log.warning("bad control frame from %s: %s", self._describe, exc)

    def _on_close(self, conn: Connection) -> None:
        self.dead = True
        # A TLS session that failed (the server refused our certificate, say) says why.
        failure = conn.tls_failure if isinstance(conn, TLSConnection) else None
        why = f": {failure}" if failure is not None else ""
        self._queue.clear()
        for stream in list(self._streams.values()):
            with stream.end.locked():
                message = f"connection to {self._describe} closed{why}"
                stream.end.on_reset(StatusCode.UNAVAILABLE, message)
        pending = self._pending
        for seq_id in list(pending):
            call = pending.pop(seq_id, None)
            if call is None:
                continue
            if self.refused is not None:
                call.error = NotSentError(
                    f"{self._describe} refused the connection: {self.refused}"
                )
            elif call.written:
                call.error = MaybeSentError(f"connection to {self._describe} closed{why}")
            else:
                call.error = NotSentError(
                    f"connection to {self._describe} closed before sending{why}"
                )
            call.done.release()


class MuxTransport:
    """Calls to one address over a ring of `size` multiplexed connections."""

    def __init__(
        self,
        network: str,
        address: str | tuple[str, int],
        *,
        size: int,
        frames: FrameReader,
        connect_timeout: float | None,
        describe: str,
        max_calls: int = DEFAULT_MAX_CALLS,
        max_unsent: int = DEFAULT_MAX_UNSENT,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("mux needs at least one connection")
        if max_calls < 1 or max_unsent < 0:
            raise ValueError("max_calls must be positive and max_unsent not negative")
        self._max_calls = max_calls
        self._max_unsent = max_unsent
        self._network = network
        self._address = address
        self._frames = frames
        self._connect_timeout = connect_timeout
        self._describe = describe
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._slots: list[MuxConnection | None] = [None] * size
        self._slot_locks = [threading.Lock() for _ in range(size)]
        self._next = itertools.count()
        self._size = size
        self._closed = False

    @property
    def connections(self) -> list[MuxConnection]:
        """The live connections of the ring."""
        return [mux for mux in self._slots if mux is not None and mux.usable]

    def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply:
        """One attempt on the next connection of the ring (dialed if needed) that has room
        for it (see "Bounds" in the module docs)."""
        start = next(self._next)
        for turn in range(self._size):
            index = (start + turn) % self._size
            mux = self._slots[index]
            if mux is None or not mux.usable:
                mux = self._replace(index, deadline)
            if mux.has_room(self._max_calls, self._max_unsent):
                return mux.call(template, payload, deadline, metadata)
        raise ResourceExhaustedError(
            message=f"every connection to {self._describe} is full ({self._max_calls} calls"
            f" waiting, or over {self._max_unsent} bytes its server has not read)"
        )

    def open_stream(
        self,
        service: str,
        method: str,
        decode: Any,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> SyncStreamEnd:
        """Open a stream on the next connection of the ring with room for it (a stream counts
        as a call waiting until it ends)."""
        start = next(self._next)
        for turn in range(self._size):
            index = (start + turn) % self._size
            mux = self._slots[index]
            if mux is None or not mux.usable:
                mux = self._replace(index, deadline)
            if mux.has_room(self._max_calls, self._max_unsent):
                return mux.open_stream(service, method, decode, deadline, metadata)
        raise ResourceExhaustedError(
            message=f"every connection to {self._describe} is full ({self._max_calls} calls"
            f" and streams, or over {self._max_unsent} bytes its server has not read)"
        )

    def warm_up(self, count: int, deadline: float | None = None) -> int:
        """Dial the ring's connections (all of them: `count` is ignored beyond 0); returns
        how many are connected."""
        if count > 0:
            for index in range(self._size):
                mux = self._slots[index]
                if mux is None or not mux.usable:
                    self._replace(index, deadline)
        return len(self.connections)

    def close(self) -> None:
        """No new calls; each connection closes once its calls in progress are answered."""
        self._closed = True
        for index, mux in enumerate(self._slots):
            self._slots[index] = None
            if mux is not None:
                mux.retire()

    def _replace(self, index: int, deadline: float | None) -> MuxConnection:
        # One dial per slot at a time (Kitex singleflights its dials too): the threads that
        # wait here use the connection the first one made.
        lock = self._slot_locks[index]
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not lock.acquire(timeout=timeout):
            raise DeadlineExceededError(message="deadline exceeded waiting for a connection")
        try:
            old = self._slots[index]
            if old is not None and old.usable:
                return old
            if self._closed:
                raise NotSentError("the client is closed")
            conn = dial_within(
                self._network,
                self._address,
                self._connect_timeout,
                deadline,
                direct=False,
                runner=run_inline,
                ssl=self._ssl,
                server_hostname=self._server_hostname,
            )
            mux = self._slots[index] = MuxConnection(conn, self._frames, self._describe)
        finally:
            lock.release()
        if old is not None:
            old.retire()
        return mux
