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
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    DEFAULT_MAX_FRAME_SIZE,
    FLAG_OUT_OF_ORDER,
    FrameReader,
    ProtocolError,
)
from ..service import Handler
from ..transport.address import format_address, parse_address
from ..transport.connection import Connection
from ..transport.errors import TransportError
from ..transport.eventloop import EventLoop
from ..transport.linkbuffer import LinkBuffer
from ..transport.net import Listener, convert_listener, create_listener
from ..transport.poller import Poller, manager
from ..transport.worker_pool import WorkerPool, default_pool
from .dispatch import Dispatcher, Route

__all__ = ["Server"]

log = logging.getLogger("rpcpoll.server")

_DRAIN_METADATA = {CONNECTION_RESET_KEY: "1"}
MODES = ("auto", "pool", "poller")
DEFAULT_MODE = "auto"


class _ConnState:
    """Per-connection server state (the EventLoop context of each connection)."""

    __slots__ = ("count_lock", "inflight", "lock", "pooled", "replies")

    def __init__(self) -> None:
        self.pooled = False  # "auto" mode: this connection's calls have moved to the pool
        self.lock = threading.Lock()  # held by whoever writes: the batch loop, or a reply flusher
        self.replies: deque[LinkBuffer] = deque()  # out-of-order replies waiting to be sent
        self.count_lock = threading.Lock()
        self.inflight = 0  # out-of-order calls still running


class Server:
    """Serves registered handlers on one address ("host:port" or "unix:/path").

    Options: `max_frame_size` (bytes, default 4 MiB), `exit_wait` (seconds `shutdown()` waits
    for in-flight calls by default, 5), `idle_timeout` (close connections idle this long,
    default 600 s; None keeps them), `mode` ("auto", "pool" or "poller": where calls run, see
    the module docs; `run_on_poller=True` is mode "poller"), `reuse_port`
    (SO_REUSEPORT, for several processes on one port), `pool` (the WorkerPool for calls),
    `listener` (an already listening socket to serve instead of binding `address`, e.g. one
    inherited from a supervisor; the caller keeps and closes it).
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "127.0.0.1:0",
        *handlers: Handler,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        exit_wait: float = 5.0,
        idle_timeout: float | None = 600.0,
        run_on_poller: bool = False,
        reuse_port: bool = False,
        pool: WorkerPool | None = None,
        listener: socket.socket | None = None,
        mode: str = DEFAULT_MODE,
    ) -> None:
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
        self._frames = FrameReader(max_frame_size)
        self.exit_wait = exit_wait
        self._reuse_port = reuse_port
        self._pool = pool or default_pool()
        self.mode = mode
        self._run_on_poller = mode == "poller"  # out-of-order calls run inline too
        self._auto = mode == "auto"
        self._blocking_routes: set[int] = set()  # ids of routes whose handler blocked
        self._watched: list[Poller] = []
        self._draining = False
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._loop = EventLoop(
            self._on_request,
            on_prepare=self._on_prepare,
            idle_timeout=idle_timeout,
            close_idle=idle_timeout is not None,
            run_on_poller=mode != "pool",
            runner=self._pool if mode == "pool" else None,
            is_busy=self._is_busy,
        )
        for handler in handlers:
            self.register(handler)

    # ------------------------------------------------------------------ lifecycle

    def register(self, handler: Handler) -> None:
        """Serve `handler` (an instance of a generated `SHandler` subclass)."""
        self.dispatcher.register(handler)

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
        if self._given_listener is not None:
            self._listener = convert_listener(self._given_listener)
        else:
            self._listener = create_listener(
                self._network, self._address, reuse_port=self._reuse_port
            )
        self._thread = threading.Thread(
            target=self._loop.serve, args=(self._listener,), name="rpcpoll-server", daemon=True
        )
        if self._auto:  # handlers run on the pollers: watch them for handlers that block
            self._watched = manager().initialize()
            for poller in self._watched:
                poller.watch_stalls()
        self._thread.start()
        log.info("rpcpoll server listening on %s", self.address)

    def serve(self) -> None:
        """Start (if not started) and block until `shutdown()`."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)  # wake up regularly so that signals are handled

    def shutdown(self, timeout: float | None = None) -> bool:
        """Graceful stop: stop accepting, let in-flight calls finish, close connections.

        Replies sent from now on tell clients not to reuse their connection. Waits up to
        `timeout` seconds (default `exit_wait`); returns whether every call finished in time.
        """
        timeout = self.exit_wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._draining = True
        self._loop.stop_accepting()
        # A request may already be on its way over a connection that looks idle: give it a
        # moment to land before idle connections are closed (Kitex waits 100 ms too).
        time.sleep(min(0.1, timeout / 4))
        finished = self._loop.shutdown(max(0.0, deadline - time.monotonic()))
        watched, self._watched = self._watched, []
        for poller in watched:
            poller.unwatch_stalls()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        return finished

    def __enter__(self) -> Server:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ connection work

    def _on_prepare(self, conn: Connection) -> _ConnState:
        return _ConnState()

    def _is_busy(self, state: Any, conn: Connection) -> bool:
        return isinstance(state, _ConnState) and state.inflight > 0

    def _on_request(self, state: _ConnState, conn: Connection) -> None:
        reader, writer = conn.reader(), conn.writer()
        read = self._frames.read_raw
        handle = self.dispatcher.handle_raw
        extra = _DRAIN_METADATA if self._draining else None
        auto = self._auto and not state.pooled
        if auto:
            poller = conn.poller
            cached_route = self.dispatcher.cached_route
            blocking = self._blocking_routes
            touch, still_polling = poller.touch, poller.in_poller_thread
        try:
            with state.lock:
                while True:
                    raw = read(reader)
                    if raw is None:
                        break
                    seq_id, flags, info, payload = raw
                    if flags & FLAG_OUT_OF_ORDER and not self._run_on_poller:
                        with state.count_lock:
                            state.inflight += 1
                        self._pool.submit(partial(self._serve_out_of_order, conn, state, raw))
                    elif auto:
                        # Mode "auto": on this poller thread unless the method is known to
                        # block; the watchdog times each call (poller.py, "Hand-off").
                        route = cached_route(info)
                        if route is not None and id(route) in blocking:
                            poller.hand_off()
                        else:
                            touch()
                        handle(seq_id, flags, info, payload, writer, extra)
                        if not still_polling():  # the loop moved on: this thread is a worker
                            auto = False
                            self._leave_poller(conn, state, route or cached_route(info))
                    else:
                        handle(seq_id, flags, info, payload, writer, extra)
                reader.release()
                self._link_replies(state, writer)
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

    def _leave_poller(self, conn: Connection, state: _ConnState, route: Route | None) -> None:
        """Mode "auto": a call of `route` blocked the poller (the watchdog gave its loop to
        another thread), or was known to block (it gave the loop away itself). This thread goes
        on as a worker for this connection; its later calls run on the worker pool, and so do
        the method's calls on every connection (each gives the loop away first)."""
        if route is not None and id(route) not in self._blocking_routes:
            log.info("%s blocks: its calls run on the worker pool from now on", route.where)
            self._blocking_routes.add(id(route))
        state.pooled = True
        conn.set_runner(self._pool)

    def _serve_out_of_order(
        self, conn: Connection, state: _ConnState, raw: tuple[int, int, bytes, memoryview]
    ) -> None:
        # The call runs without the lock, into its own buffer; the reply is queued and sent
        # by whichever thread holds the connection's lock next (one sendmsg for all queued).
        reply = LinkBuffer()
        try:
            extra = _DRAIN_METADATA if self._draining else None
            self.dispatcher.handle_raw(*raw, reply, extra)
            state.replies.append(reply)
            self._send_replies(conn, state)
        except ProtocolError as exc:
            log.warning("closing %r: %s", conn, exc)
            conn.close()
        except TransportError as exc:
            log.debug("connection %r went away: %s", conn, exc)
        finally:
            with state.count_lock:
                state.inflight -= 1

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
            reply = replies.popleft()
            writer.write_buffer(reply)  # links the reply's blocks: no copy
            reply.close()
