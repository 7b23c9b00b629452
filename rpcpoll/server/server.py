"""The RPC server: an EventLoop whose on_request decodes frames and dispatches calls.

Per read batch, `on_request` decodes every complete frame in the connection's input buffer,
runs each call, writes the replies into the output buffer and flushes once: one `sendmsg` for
the whole batch. Calls arriving in order (a pooled client: one call per connection at a time)
run right there, on the connection's handler thread. Calls flagged out-of-order (a
multiplexing client) each run as their own task on the worker pool, so a slow call does not hold
up the others on the connection; their replies go out as they finish. Replies that finish while
another thread is writing to the connection are queued and sent together by that thread.

Where in-order calls run (`mode`):

- "auto" (the default): on the poller thread, which saves a thread hand-off per batch, until a
  call blocks. The poller's watchdog notices a call that holds the loop for longer than
  `poller.STALL_AFTER` (20 ms) and gives the loop to a new thread; the stalled thread finishes
  the call and goes on as a worker for that connection, whose later calls run on the worker
  pool. The method is remembered as blocking: its calls on other connections give the loop
  away before they start, so a blocking method stalls the poller once, for 20 to 40 ms.
- "pool": every connection's work runs on the worker pool, so a blocked handler holds one
  worker thread and nothing else (Kitex's model).
- "poller" (`run_on_poller=True`): always on the poller thread, out-of-order calls included;
  only for handlers that never block.

(A client that mixes in-order and out-of-order calls on one connection may see an
out-of-order reply wait for an in-order call.)

Limits (rpcpoll/server/limits.py, docs/limits.md). Calls are counted where they reach a worker
thread (out-of-order calls, and every call of a connection served on the pool); a call that
finds `max_calls` counted, or its connection at `max_calls_per_connection`, is answered
RESOURCE_EXHAUSTED at once from a precomputed header, and a connection at its own limit is not
read until one of its calls ends. The batch loop stops decoding once the replies it has
written reach `max_unsent_bytes`; the transport then stops reading the connection until they
drain. Both checks are an int compare per frame.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from ..middleware import Middleware, MiddlewareFunction
from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    DEFAULT_MAX_FRAME_SIZE,
    FIXED_HEADER,
    FIXED_SIZE,
    FLAG_OUT_OF_ORDER,
    FLAG_STREAMING,
    MAGIC,
    FrameReader,
    FrameTooLargeError,
    ProtocolError,
    append_frame,
    check_fixed,
    exception_info,
    refusal_frame,
)
from ..protocol.status import StatusCode
from ..service import AsyncHandler, Handler
from ..transport.address import format_address, parse_address
from ..transport.connection import Connection
from ..transport.errors import TransportError
from ..transport.eventloop import EventLoop
from ..transport.linkbuffer import LinkBuffer
from ..transport.loop_poller import LoopPoller
from ..transport.memory import MemoryReleaser
from ..transport.net import Listener, convert_listener, create_listener
from ..transport.poller import Poller, manager
from ..transport.tls import ServerTLS, as_server_tls
from ..transport.worker_pool import WorkerPool, default_pool
from .aio import AsyncCall, LoopThread, ReplyOrder, cancel_call, new_loop, start_call
from .dispatch import CachedCall, Dispatcher, Route
from .limits import DEFAULT_LIMITS, ServerLimits, fd_capped
from .streams import (
    StreamHost,
    StreamTable,
    on_connection_closed,
    on_oversized_frame,
    on_stream_frame,
    reset_all,
)

if TYPE_CHECKING:
    from ssl import SSLContext

    from ..transport.identity import PeerIdentity

__all__ = ["Server"]

log = logging.getLogger("rpcpoll.server")

_DRAIN_METADATA = {CONNECTION_RESET_KEY: "1"}
MODES = ("auto", "pool", "poller")
DEFAULT_MODE = "auto"


_OVERLOADED = "server overloaded: {} calls in progress"
_CONNECTION_FULL = "connection has {} calls in progress"


class _ConnState:
    """Per-connection server state (the EventLoop context of each connection)."""

    __slots__ = (
        "calls", "flush_soon", "identity", "inflight", "lock", "order", "paused", "peer",
        "pooled", "replies", "skipping", "streams",
    )  # fmt: skip

    def __init__(self, peer: str = "") -> None:
        self.peer = peer  # the client's address, for CallContext.peer
        self.pooled = False  # "auto" mode: this connection's calls have moved to the pool
        self.lock = threading.Lock()  # held by whoever writes: the batch loop, or a reply flusher
        # Replies waiting to be sent: out-of-order ones, and in-order ones whose turn came.
        self.replies: deque[bytes | bytearray] = deque()
        self.inflight = 0  # calls running elsewhere (changed under Server._calls_lock)
        self.paused = False  # reading paused: max_calls_per_connection reached
        # An asyncio server: its in-order replies in order, and its pending async calls.
        self.order = ReplyOrder()
        self.calls: dict[int, AsyncCall] = {}
        self.identity: PeerIdentity | None = None  # the client's verified TLS identity
        self.streams = StreamTable()  # open streams (server/streams.py)
        self.flush_soon = False  # the event loop will send the queued replies (asyncio)
        self.skipping = 0  # bytes still to skip of an oversized stream frame


class Server(StreamHost):
    """Serves registered handlers on one address ("host:port" or "unix:/path").

    Options: `exit_wait` (seconds `shutdown()` waits for in-flight calls by default, 5),
    `mode` ("auto", "pool" or "poller": where calls run, see the module docs;
    `run_on_poller=True` is mode "poller"), `reuse_port` (SO_REUSEPORT, for several processes
    on one port), `pool` (the WorkerPool for calls), `listener` (an already listening socket to
    serve instead of binding `address`, e.g. one inherited from a supervisor; the caller keeps
    and closes it), `release_memory_after` (seconds of quiet after which cached buffers are
    dropped and the allocator trimmed, default 5; None never), `ssl` (serve TLS: an
    `ssl.SSLContext`, or a `rpcpoll.transport.ServerTLS` for reloadable certificates and
    handshake options; docs/tls.md), `middleware` (wraps every call, the first listed
    outermost: rpcpoll/middleware.py), `loop` and `uvloop` (where `async def` handlers run:
    docs/asyncio.md).

    Limits, each a keyword of `ServerLimits` (defaults in rpcpoll/server/limits.py, what a
    client sees in docs/limits.md): `max_connections`, `max_calls`,
    `max_calls_per_connection`, `max_frame_size` (4 MiB), `max_header_size`,
    `max_metadata_entries`, `max_partial_bytes`, `frame_timeout`, `idle_timeout` (600 s; None
    keeps idle connections), `max_unsent_bytes`, `max_unread_bytes`; or all at once as
    `limits=ServerLimits(...)` (keywords given as well override it).
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "127.0.0.1:0",
        *handlers: Handler | AsyncHandler,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        exit_wait: float = 5.0,
        idle_timeout: float | None = DEFAULT_LIMITS.idle_timeout,
        run_on_poller: bool = False,
        reuse_port: bool = False,
        pool: WorkerPool | None = None,
        listener: socket.socket | None = None,
        mode: str = DEFAULT_MODE,
        limits: ServerLimits | None = None,
        release_memory_after: float | None = 5.0,
        loop: asyncio.AbstractEventLoop | None = None,
        uvloop: bool | None = None,
        middleware: Sequence[Middleware | MiddlewareFunction] = (),
        ssl: ServerTLS | SSLContext | None = None,
        **limit_options: Any,
    ) -> None:
        base = limits or DEFAULT_LIMITS
        if max_frame_size != DEFAULT_MAX_FRAME_SIZE:
            limit_options["max_frame_size"] = max_frame_size
        if idle_timeout != DEFAULT_LIMITS.idle_timeout:
            limit_options["idle_timeout"] = idle_timeout
        try:
            self.limits = replace(base, **limit_options)
        except TypeError:
            unknown = sorted(set(limit_options) - {f.name for f in fields(ServerLimits)})
            raise TypeError(f"Server() got unknown options: {', '.join(unknown)}") from None
        limits = self.limits
        if run_on_poller:
            mode = "poller"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if listener is not None:
            network = "unix" if listener.family == socket.AF_UNIX else "tcp"
            address = format_address(network, listener.getsockname())
        self._network, self._address = parse_address(address)
        self._given_listener = listener
        self.dispatcher = Dispatcher()
        self.dispatcher.middleware = tuple(middleware)
        self.dispatcher.set_limits(
            max_header_size=limits.max_header_size,
            max_header_entries=limits.max_header_entries,
            max_frame_size=limits.max_frame_size,
        )
        self._frames = FrameReader(limits.max_frame_size)
        self._max_frame = limits.max_frame_size
        self._calls_lock = threading.Lock()
        self._calls = 0  # calls running on worker threads (module docs, Limits)
        self._max_calls = limits.max_calls
        self._max_conn_calls = limits.max_calls_per_connection
        self._max_unsent = limits.max_unsent_bytes
        code = StatusCode.RESOURCE_EXHAUSTED
        overloaded = _OVERLOADED.format(limits.max_calls)
        full = _CONNECTION_FULL.format(limits.max_calls_per_connection)
        # Load-shedding answers, header computed once: (server full, connection full), each
        # without and with the drain marker.
        drain = _DRAIN_METADATA
        self._shed_info = (
            (exception_info(code, overloaded), exception_info(code, full)),
            (exception_info(code, overloaded, drain), exception_info(code, full, drain)),
        )
        self._release_after = release_memory_after
        self._releaser: MemoryReleaser | None = None
        self.exit_wait = exit_wait
        self._reuse_port = reuse_port
        self._pool = pool or default_pool()
        self.mode = mode
        self._run_on_poller = mode == "poller"  # out-of-order calls run inline too
        self._auto = mode == "auto"
        self._watched: list[Poller] = []
        self._draining = False
        self._stopping_callbacks: list[Callable[[], None]] = []
        # asyncio (server/aio.py): the loop async handlers run on, when there are any.
        self._given_aio_loop = loop
        self._uvloop = uvloop
        self._aio_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: LoopThread | None = None
        self._loop_poller: LoopPoller | None = None
        #: The TLS settings (None: plaintext); `tls.reload()` takes new certificates.
        self.tls = None if ssl is None else _with_plaintext_refusal(as_server_tls(ssl))
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._loop = EventLoop(
            self._on_request,
            on_prepare=self._on_prepare,
            idle_timeout=limits.idle_timeout,
            close_idle=limits.idle_timeout is not None,
            run_on_poller=mode != "pool",
            runner=self._pool if mode == "pool" else None,
            is_busy=self._is_busy,
            max_connections=limits.max_connections,
            refusal=refusal_frame(
                int(code), f"too many connections (the server's limit is {limits.max_connections})"
            ),
            goodbye=refusal_frame(int(StatusCode.UNAVAILABLE), "the server is shutting down"),
            max_unsent=limits.max_unsent_bytes,
            max_unread=limits.max_unread_bytes,
            partial_timeout=limits.frame_timeout,
            partial_budget=limits.max_partial_bytes,
            ssl=self.tls,
        )
        for handler in handlers:
            self.register(handler)

    # ------------------------------------------------------------------ lifecycle

    def register(self, handler: Handler | AsyncHandler) -> None:
        """Serve `handler` (an instance of a generated `SHandler` or `SAsyncHandler` subclass)."""
        self.dispatcher.register(handler)

    def handlers(self) -> list[Handler | AsyncHandler]:
        """The registered handlers, in the order they were registered."""
        return list(self.dispatcher.services.values())

    def add_stopping_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when `shutdown()` begins, before the server stops accepting
        (e.g. to turn health statuses NOT_SERVING). A callback that raises is logged."""
        self._stopping_callbacks.append(callback)

    @property
    def address(self) -> str:
        """Where the server listens, as a target string ("127.0.0.1:40123", "unix:/p")."""
        if self._listener is not None:
            return format_address(self._network, self._listener.address)
        return format_address(self._network, self._address)

    def connections(self) -> list[Connection]:
        """The connections being served right now."""
        return self._loop.connections()

    def start(self) -> None:
        """Listen and serve on a background thread; returns once the server accepts."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if not self.dispatcher.services:
            raise RuntimeError("register at least one handler before starting the server")
        self._loop.max_connections = fd_capped(self.limits.max_connections)
        if self.dispatcher.has_async:
            self._start_asyncio()
        if self._given_listener is not None:
            self._listener = convert_listener(self._given_listener)
        else:
            self._listener = create_listener(
                self._network, self._address, reuse_port=self._reuse_port
            )
        self._thread = threading.Thread(
            target=self._loop.serve, args=(self._listener,), name="rpcpoll-server", daemon=True
        )
        if self._auto and self._aio_loop is None:  # handlers on the pollers: watch for blocking
            self._watched = manager().initialize()
            for poller in self._watched:
                poller.watch_stalls()
        self._thread.start()
        if self._release_after is not None:
            self._releaser = MemoryReleaser(self._release_after, self._pool)
            self._releaser.start()
        if self._aio_loop is not None:
            kind = type(self._aio_loop).__module__.partition(".")[0]
            log.info("rpcpoll server listening on %s (async handlers on %s)", self.address, kind)
        else:
            log.info("rpcpoll server listening on %s (%s mode)", self.address, self.mode)
        log.debug("limits: %s", self.limits.describe())

    def _start_asyncio(self) -> None:
        """Async handlers: serve every connection on a LoopPoller of the event loop they run
        on (the given loop, else one on a thread of the server's); sync handlers run on the
        worker pool (server/aio.py)."""
        loop = self._given_aio_loop
        if loop is None:
            self._loop_thread = LoopThread(new_loop(self._uvloop))
            loop = self._loop_thread.loop
        self._aio_loop = loop
        self._loop_poller = LoopPoller(loop, name="rpcpoll-aio-poller")
        self._loop.use_poller(self._loop_poller)
        self._auto = self._run_on_poller = False
        self.mode = "asyncio"

    def serve(self) -> None:
        """Start (if not started) and block until `shutdown()`."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)  # wake up regularly so that signals are handled

    def shutdown(self, timeout: float | None = None) -> bool:
        """Graceful stop: stop accepting, let in-flight calls finish, close connections.

        The listener closes first (connections that completed their handshake are served:
        transport/eventloop.py, "Stopping"), and only then do replies tell clients not to reuse
        their connection, so a client that obeys at once is refused at connect time instead of
        landing in a backlog that is about to be reset. Idle connections get a goodbye frame
        and a FIN and close when their client does (docs/protocol.md): a request that crossed
        the goodbye is dropped unread, and its client knows it was never read. Waits up to
        `timeout` seconds (default `exit_wait`); returns whether every call finished in time.
        """
        timeout = self.exit_wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        callbacks, self._stopping_callbacks = self._stopping_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a stopping callback failed")
        self._loop.stop_accepting()
        self._draining = True
        if self._releaser is not None:
            self._releaser.stop()
        # A request may already be on its way over a connection that looks idle: give it a
        # moment to land before idle connections are closed (Kitex waits 100 ms too).
        time.sleep(min(0.1, timeout / 4))
        finished = self._loop.shutdown(max(0.0, deadline - time.monotonic()))
        if not finished:  # streams still open after the exit wait: tell their clients why
            for conn in self._loop.connections():
                reset_all(conn.context, StatusCode.UNAVAILABLE, "the server shut down")
        watched, self._watched = self._watched, []
        for poller in watched:
            poller.unwatch_stalls()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._loop_poller is not None:
            self._loop_poller.close()
        if self._loop_thread is not None:
            self._loop_thread.stop()  # cancels what is still running
        return finished

    async def aclose(self, timeout: float | None = None) -> bool:
        """`shutdown()` from async code: the loop keeps running (and draining async calls)
        while it waits on another thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.shutdown, timeout)

    def __enter__(self) -> Server:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ connection work

    def _on_prepare(self, conn: Connection) -> _ConnState:
        network = "unix" if self._network == "unix" else "tcp"
        state = _ConnState(format_address(network, conn.remote_address))
        if self._aio_loop is not None:
            conn.add_close_callback(lambda _conn: self._cancel_calls(state))
        conn.add_close_callback(lambda _conn: on_connection_closed(state))
        return state

    def _cancel_calls(self, state: _ConnState) -> None:
        """The connection closed: its callers are gone, so are their async calls."""
        loop = self._aio_loop
        if not state.calls or loop is None:
            return

        def cancel_all() -> None:
            for call in list(state.calls.values()):
                cancel_call(call)

        if loop.is_closed():
            return
        loop.call_soon_threadsafe(cancel_all)

    def _is_busy(self, state: Any, conn: Connection) -> bool:
        """Whether shutdown must leave the connection open: a call or stream in flight, or a
        reply queued and not yet handed to the connection (a call counts out after its reply
        is queued, so one of them is always seen)."""
        return isinstance(state, _ConnState) and bool(
            state.inflight
            or state.streams.open
            or state.replies
            or state.flush_soon
            or state.lock.locked()  # a flusher holds replies on their way to the socket
        )

    def _on_request(self, state: _ConnState, conn: Connection) -> None:
        reader = conn.reader()
        extra = _DRAIN_METADATA if self._draining else None
        out = bytearray()  # the replies of this batch, sent with one flush
        now = time.monotonic()  # every frame of the batch arrived by now
        if self.tls is not None and state.identity is None:
            state.identity = conn.peer_identity  # known once the handshake is done
        try:
            with state.lock:
                while len(out) <= self._max_unsent:  # else: flush first (backpressure)
                    if state.skipping:  # the rest of an oversized stream frame
                        skipped = min(state.skipping, len(reader))
                        reader.skip(skipped)
                        state.skipping -= skipped
                        if state.skipping:
                            break
                        continue
                    view = reader.readable()
                    used = self._serve_frames(view, state, conn, out, extra, now)
                    if used:
                        reader.skip(used)
                        continue
                    # No whole frame at the start of this block: one that crosses into the
                    # next block (read as one copy), one that has not all arrived, or one
                    # over the size limit.
                    try:
                        pending = self._frames.pending_size(reader)
                    except FrameTooLargeError:
                        started = self._skip_oversized(reader, state, conn)
                        if started is None:
                            raise
                        if started:
                            continue
                        break
                    if len(reader) < pending:
                        break
                    whole = reader.next(pending)
                    self._serve_frames(whole, state, conn, out, extra, now)
                reader.release()
                writer = conn.writer()
                self._link_replies(state, writer)  # first: in-order replies released earlier
                if out:
                    writer.write_binary(out)  # copied if small, else linked: `out` is not reused
                if writer.malloc_len():
                    conn.flush()
            if state.replies:  # queued while we held the lock: nobody else will send them
                self._send_replies(conn, state)
        except ProtocolError as exc:
            log.warning("closing %r: %s", conn, exc)
            conn.close()
        except TransportError as exc:
            log.debug("connection %r went away: %s", conn, exc)
            conn.close()

    def _serve_frames(
        self,
        view: memoryview,
        state: _ConnState,
        conn: Connection,
        out: bytearray,
        extra: dict[str, str] | None,
        now: float,
    ) -> int:
        """Serve the whole frames at the start of `view`; returns the bytes they took.

        The server's hot path. The common frame (an in-order call whose header is in the
        dispatcher's cache, served on this thread) costs one unpack of the fixed header, one
        dict lookup and `Dispatcher.call`; everything else goes to `_serve_other`. Stops early
        once the replies in `out` reach `max_unsent_bytes`.
        """
        by_header, call = self.dispatcher.by_header, self.dispatcher.call
        unpack = FIXED_HEADER.unpack_from
        max_length, max_unsent, max_calls = self._max_frame - 4, self._max_unsent, self._max_calls
        auto = self._auto and not state.pooled
        inline = auto or self._run_on_poller  # in-order calls run on this thread, uncounted
        peer, identity = state.peer, state.identity
        if auto:
            poller = conn.poller
            generation = poller.generation
        size, pos = len(view), 0
        while size - pos >= FIXED_SIZE:
            length, magic, flags, seq_id, words = unpack(view, pos)
            end = pos + 4 + length
            body = pos + FIXED_SIZE + (words << 2)
            if magic != MAGIC or length > max_length or body > end or not words:
                if flags & FLAG_STREAMING and length > max_length:
                    break  # _on_request skips it and resets its stream
                check_fixed(length, magic, words, max_length + 4, seq_id)  # raises what is wrong
            if end > size:
                break
            info = bytes(view[pos + FIXED_SIZE : body])
            payload = view[body:end]
            pos = end
            entry = by_header.get(info)
            if (
                inline
                and entry is not None
                and not flags
                and self._calls < max_calls
                and not entry[0].blocking
            ):
                call(entry, seq_id, 0, payload, out, extra, now, peer, identity)
                if auto:
                    poller.progress += 1  # for the watchdog (poller.py, "Hand-off")
                    if poller.generation != generation:  # the loop moved on: we are a worker
                        self._leave_poller(conn, state, entry[0])
                        auto = inline = False
            else:
                inline = self._serve_other(
                    seq_id, flags, info, payload, entry, state, conn, out, extra, now, inline
                )
                auto = auto and inline
            if len(out) > max_unsent:
                break
        return pos

    def _skip_oversized(self, reader: Any, state: _ConnState, conn: Connection) -> bool | None:
        """The frame at the start of `reader` is over `max_frame_size`. A stream's frame is
        skipped as its bytes arrive, unread and unbuffered, and only its stream is reset
        (True; False while its header has not all arrived); anything else is None: the
        connection closes, as nothing can tell which call it belonged to."""
        length, _magic, flags, seq_id, words = FIXED_HEADER.unpack(reader.peek(FIXED_SIZE))
        body = FIXED_SIZE + (words << 2)  # (the magic was checked before the size)
        if not flags & FLAG_STREAMING or not words or body > self.limits.max_header_size:
            return None
        if len(reader) < body:
            return False
        info = bytes(reader.peek(body)[FIXED_SIZE:])
        on_oversized_frame(
            self, conn, state, seq_id, info, length + 4, self._max_frame,
            self.limits.max_header_entries,
        )  # fmt: skip
        state.skipping = length + 4
        return True

    def _serve_other(
        self,
        seq_id: int,
        flags: int,
        info: bytes,
        payload: memoryview,
        entry: CachedCall | None,
        state: _ConnState,
        conn: Connection,
        out: bytearray,
        extra: dict[str, str] | None,
        now: float,
        inline: bool,
    ) -> bool:
        """Every frame that is not the common case: load shedding, an out-of-order call, a
        header not cached yet, a method known to block (mode "auto"), a call on a worker
        thread (counted). Returns whether in-order calls still run inline on this thread."""
        dispatcher = self.dispatcher
        shed = self._shed_info[extra is not None]
        if flags & FLAG_STREAMING:  # a stream's frame (server/streams.py), on this thread
            on_stream_frame(
                self, dispatcher, self._pool, self._aio_loop, conn, state, seq_id, info,
                payload, now, self.limits.max_header_entries,
            )  # fmt: skip
        elif self._calls >= self._max_calls:  # load shedding: no decoding, no hop
            append_frame(out, flags, seq_id, shed[0])
        elif self._aio_loop is not None:
            self._serve_on_asyncio(
                seq_id, flags, info, payload, entry, state, conn, out, extra, now
            )
        elif flags & FLAG_OUT_OF_ORDER and not self._run_on_poller:
            if self._start_out_of_order(conn, state):
                raw = (seq_id, flags, info, payload)
                self._pool.submit(partial(self._serve_out_of_order, conn, state, raw))
            else:
                append_frame(out, flags, seq_id, shed[1])
        elif inline:
            auto = self._auto and not state.pooled
            if auto:
                poller = conn.poller
                generation = poller.generation
                if entry is not None and entry[0].blocking:
                    poller.hand_off()  # known to block: give the loop away before it starts
            if entry is None:
                dispatcher.serve_raw(
                    seq_id, flags, info, payload, out, extra, now, state.peer, state.identity
                )
            else:
                dispatcher.call(
                    entry, seq_id, flags, payload, out, extra, now, state.peer, state.identity
                )
            if auto:
                poller.progress += 1
                if poller.generation != generation:
                    entry = entry or dispatcher.by_header.get(info)
                    self._leave_poller(conn, state, None if entry is None else entry[0])
                    return False
        else:  # on a worker thread: counted
            with self._calls_lock:
                self._calls += 1
            try:
                if entry is None:
                    dispatcher.serve_raw(
                        seq_id, flags, info, payload, out, extra, now, state.peer, state.identity
                    )
                else:
                    dispatcher.call(
                        entry, seq_id, flags, payload, out, extra, now, state.peer, state.identity
                    )
            finally:
                with self._calls_lock:
                    self._calls -= 1
        return inline

    def _serve_on_asyncio(
        self,
        seq_id: int,
        flags: int,
        info: bytes,
        payload: memoryview,
        entry: CachedCall | None,
        state: _ConnState,
        conn: Connection,
        out: bytearray,
        extra: dict[str, str] | None,
        now: float,
    ) -> None:
        """A frame of an asyncio server (server/aio.py), on the event loop's thread: async
        calls start here, sync ones go to the worker pool; in-order replies keep their order."""
        oneway = False
        if entry is None:
            resolved = self.dispatcher.resolve(seq_id, flags, info, out, extra)
            if resolved is None:
                return
            entry, oneway = resolved
        ordered = not flags & FLAG_OUT_OF_ORDER and not oneway
        order = state.order
        if not entry[0].is_async:  # a sync handler: never on the loop
            slot = order.take() if ordered else None
            self._count_call(conn, state, +1)
            self._pool.submit(
                partial(
                    self._serve_on_pool, conn, state, entry, seq_id, flags, payload, extra,
                    now, oneway, slot,
                )
            )  # fmt: skip
            return
        assert self._aio_loop is not None
        slot = order.take() if ordered and order else None
        start_call(
            self.dispatcher, self._aio_loop, entry, seq_id, flags, payload, extra, now,
            state.peer, state.identity, out, slot, oneway, (conn, state),
            self._on_async_pending, self._on_async_done,
        )  # fmt: skip

    def _on_async_pending(self, call: AsyncCall) -> None:
        """An async call suspended: it has a reply slot if in order, and counts as in flight."""
        conn, state = call.owner
        if call.slot is None and not call.flags & FLAG_OUT_OF_ORDER and not call.oneway:
            call.slot = state.order.take()  # none was pending: this one is next in line
        state.calls[call.seq_id] = call
        self._count_call(conn, state, +1, on_thread=False)

    def _on_async_done(self, call: AsyncCall, reply: bytearray | None) -> None:
        # Queued before it counts out (shutdown closes a connection with neither); it goes
        # out in the loop's next round, after the count.
        conn, state = call.owner
        self._queue_reply(conn, state, call.slot, reply, on_loop=True)
        if state.calls.pop(call.seq_id, None) is not None:
            self._count_call(conn, state, -1, on_thread=False)

    def _serve_on_pool(
        self,
        conn: Connection,
        state: _ConnState,
        entry: CachedCall,
        seq_id: int,
        flags: int,
        payload: memoryview,
        extra: dict[str, str] | None,
        now: float,
        oneway: bool,
        slot: list[Any] | None,
    ) -> None:
        """A sync handler's call of an asyncio server, on a worker thread."""
        reply = bytearray()
        try:
            self.dispatcher.call(
                entry,
                seq_id,
                flags,
                payload,
                reply,
                extra,
                now,
                state.peer,
                state.identity,
                oneway,
            )
        except BaseException:
            self._count_call(conn, state, -1)
            raise
        # Queued, counted out, then sent: shutdown never finds the call in neither state (it
        # would close the connection), and its client never sees the reply while it counts.
        self._enqueue_reply(state, slot, reply)
        self._count_call(conn, state, -1)
        try:
            self._flush_replies(conn, state)
        except ProtocolError as exc:
            log.warning("closing %r: %s", conn, exc)
            conn.close()
        except TransportError as exc:
            log.debug("connection %r went away: %s", conn, exc)

    def _queue_reply(
        self,
        conn: Connection,
        state: _ConnState,
        slot: list[Any] | None,
        reply: bytes | bytearray | None,
        on_loop: bool = False,
    ) -> None:
        """Queue a reply that came after its batch (in its turn, for an in-order call) and
        send what is queued unless another thread is sending. On the event loop (`on_loop`),
        the send waits for the loop's next round: every call that ends in this round joins
        one `sendmsg` (each would otherwise make its own)."""
        self._enqueue_reply(state, slot, reply)
        self._flush_replies(conn, state, on_loop)

    @staticmethod
    def _enqueue_reply(
        state: _ConnState, slot: list[Any] | None, reply: bytes | bytearray | None
    ) -> None:
        """Queue a reply (an in-order one with those its turn releases); nothing is sent."""
        if slot is not None:
            state.replies.extend(state.order.complete(slot, reply))
        elif reply:
            state.replies.append(reply)

    def _flush_replies(self, conn: Connection, state: _ConnState, on_loop: bool = False) -> None:
        """Send the queued replies now, or (`on_loop`) in the event loop's next round."""
        if not state.replies:
            return
        if on_loop:
            if not state.flush_soon:
                state.flush_soon = True
                assert self._aio_loop is not None
                self._aio_loop.call_soon(self._flush_soon, conn, state)
        elif conn.is_active():
            self._send_replies(conn, state)

    def _flush_soon(self, conn: Connection, state: _ConnState) -> None:
        state.flush_soon = False
        if state.replies and conn.is_active():
            try:
                self._send_replies(conn, state)
            except TransportError as exc:
                log.debug("connection %r went away: %s", conn, exc)

    def _count_call(
        self, conn: Connection, state: _ConnState, step: int, on_thread: bool = True
    ) -> None:
        """A call of an asyncio server starts (+1) or ends (-1). Each counts toward its
        connection's limit (reading pauses at max_calls_per_connection); a call that takes a
        worker thread (`on_thread`) counts toward max_calls too, an async one does not."""
        limit = self._max_conn_calls
        with self._calls_lock:
            state.inflight += step
            if on_thread:
                self._calls += step
            pause = step > 0 and state.inflight >= limit and not state.paused
            resume = step < 0 and state.paused and state.inflight < limit
            if pause or resume:
                state.paused = pause
        if pause or resume:
            _apply_paused(conn, state)

    # ------------------------------------------------------------------ streams (StreamHost)

    def stream_emit(self, conn: Any, state: Any, frame: bytes | bytearray) -> None:
        state.replies.append(frame)

    def stream_kick(self, conn: Any, state: Any) -> None:
        if state.replies and conn.is_active():
            try:
                self._send_replies(conn, state)
            except TransportError as exc:  # gone: its close callback resets its streams
                log.debug("connection %r went away: %s", conn, exc)

    def stream_admit(self, state: Any, on_thread: bool) -> tuple[StatusCode, str] | None:
        if self._draining:
            return StatusCode.UNAVAILABLE, "the server is shutting down"
        if len(state.streams.open) >= self._max_conn_calls:
            return StatusCode.RESOURCE_EXHAUSTED, _CONNECTION_FULL.format(self._max_conn_calls)
        if on_thread:
            with self._calls_lock:
                if self._calls >= self._max_calls:
                    return StatusCode.RESOURCE_EXHAUSTED, _OVERLOADED.format(self._max_calls)
                self._calls += 1
        return None

    def stream_release(self, state: Any, on_thread: bool) -> None:
        if on_thread:
            with self._calls_lock:
                self._calls -= 1

    def _leave_poller(self, conn: Connection, state: _ConnState, route: Route | None) -> None:
        """Mode "auto": a call of `route` blocked the poller (the watchdog gave its loop to
        another thread), or was known to block (it gave the loop away itself). This thread goes
        on as a worker for this connection; its later calls run on the worker pool, and so do
        the method's calls on every connection (each gives the loop away first)."""
        if route is not None and not route.blocking:
            log.info("%s blocks: its calls run on the worker pool from now on", route.where)
            route.blocking = True
        state.pooled = True
        conn.set_runner(self._pool)

    def _start_out_of_order(self, conn: Connection, state: _ConnState) -> bool:
        """Count an out-of-order call in, unless its connection is at its limit (False). A
        connection reaching its limit is not read until one of its calls ends."""
        limit = self._max_conn_calls
        with self._calls_lock:
            if state.inflight >= limit:
                return False
            state.inflight += 1
            self._calls += 1
            pause = state.inflight >= limit and not state.paused
            if pause:
                state.paused = True
        if pause:
            _apply_paused(conn, state)
        return True

    def _end_out_of_order(self, conn: Connection, state: _ConnState) -> None:
        with self._calls_lock:
            state.inflight -= 1
            self._calls -= 1
            resume = state.paused and state.inflight < self._max_conn_calls
            if resume:
                state.paused = False
        if resume:
            _apply_paused(conn, state)

    def _serve_out_of_order(
        self, conn: Connection, state: _ConnState, raw: tuple[int, int, bytes, memoryview]
    ) -> None:
        # The call runs without the lock, into its own buffer; the reply is queued and sent
        # by whichever thread holds the connection's lock next (one sendmsg for all queued).
        # It is counted out before its reply goes: a client that answers a reply with its next
        # call must never find this one still counted.
        reply = bytearray()
        counted = True
        try:
            extra = _DRAIN_METADATA if self._draining else None
            seq_id, flags, info, payload = raw
            entry = self.dispatcher.by_header.get(info)
            now = time.monotonic()
            if entry is None:
                self.dispatcher.serve_raw(
                    seq_id, flags, info, payload, reply, extra, now, state.peer, state.identity
                )
            else:
                self.dispatcher.call(
                    entry, seq_id, flags, payload, reply, extra, now, state.peer, state.identity
                )
            state.replies.append(reply)  # queued, counted out, sent: see _serve_on_pool
            counted = False
            self._end_out_of_order(conn, state)
            self._send_replies(conn, state)
        except ProtocolError as exc:
            log.warning("closing %r: %s", conn, exc)
            conn.close()
        except TransportError as exc:
            log.debug("connection %r went away: %s", conn, exc)
        finally:
            if counted:
                self._end_out_of_order(conn, state)

    def _send_replies(self, conn: Connection, state: _ConnState) -> None:
        """Send the queued out-of-order replies, unless another thread holds the lock: that
        thread looks at the queue again after letting go of it, so no reply is stranded."""
        replies = state.replies
        while replies:
            if not state.lock.acquire(blocking=False):
                return
            try:
                writer = conn.writer()
                self._link_replies(state, writer)
                conn.flush()
            except TransportError:
                replies.clear()  # the connection is gone: so are its callers
                raise
            finally:
                state.lock.release()

    @staticmethod
    def _link_replies(state: _ConnState, writer: LinkBuffer) -> None:
        replies = state.replies
        while replies:
            writer.write_binary(replies.popleft())  # copied if small, else linked


def _apply_paused(conn: Connection, state: _ConnState) -> None:
    """Make the connection's reading follow `state.paused` (decided under the calls lock).

    The call that decided may lose the race to apply: a pause decided just before a resume
    could reach the connection after it, and leave reading paused for good with no call left
    to resume it (a client with max_calls_per_connection calls in flight then hangs). So each
    decider applies the latest decision and applies again if it changed meanwhile: whoever
    applies last has applied the final one.
    """
    while True:
        paused = state.paused
        if paused:
            conn.pause_reading()
        else:
            conn.resume_reading()
        if state.paused is paused:
            return


def _with_plaintext_refusal(tls: ServerTLS) -> ServerTLS:
    """A plaintext client is told, in a frame it can read, why it is refused."""
    if not tls.plaintext_reply:
        tls.plaintext_reply = refusal_frame(
            int(StatusCode.UNAVAILABLE), "this server requires TLS (connect with tls=True or ssl=)"
        )
    return tls
