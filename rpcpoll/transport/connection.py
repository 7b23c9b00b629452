"""Connection: a socket registered with a poller, with netpoll's reader and writer contracts.

Theory of operation
-------------------
Input. The poller owns the writer side of the input LinkBuffer: on each readable event it
books space in the buffer's tail block, `recv_into`s it and commits what arrived. The read size
starts at 8 KiB and doubles while reads fill it; the block size grows to the largest amount
buffered (both capped at 8 MiB), so a large message lands in one block. Readers (handlers, or
any thread) use the buffer directly: while the bytes are there, `next`/`peek`/... are plain
LinkBuffer calls; when they are not, the read waits (only the slow path knows about waiting).

Waiting. A reader publishes how many bytes it needs (`_wait_size`) and then re-checks the
length; the poller commits bytes and then reads `_wait_size`. One of the two always sees the
other, so no wake-up is lost. Wake-ups go through a lock used as a one-slot semaphore (netpoll's
capacity-1 channel): a stale wake-up only causes one extra check.

Output. `flush()` commits the output buffer and sends it with `sendmsg` of its block views.
When the kernel buffer is full, the rest is handed to the poller (EPOLLOUT), which sends it as
the socket drains; a flusher on another thread waits for that (or its write timeout), a flusher
on a poller thread (any poller's) returns at once. `_draining` says who owns the output buffer's
reader side.

Requests. `on_request(ctx, conn)` runs at most once at a time per connection, on the runner
(the worker pool, or the poller thread itself). It is re-run while unread input remains and the
last call consumed some; a call that consumes nothing waits for more bytes (netpoll would spin).

Backpressure. Reading stops (the fd leaves the poller's read set, so the peer's TCP window
closes) while any pause reason holds: `pause_reading()` (the user's), more than `max_unsent`
bytes of output waiting to be sent (until the poller has sent it down to half of that), or
more than `max_unread` bytes of input waiting while a handler runs (until it returns). While
paused by the user or by output, on_request is not called either. Each check is one compare
where the state changes (a flush that fills the socket, a read while a handler runs); the
poller's read interest changes only when a pause starts or ends.

Incomplete messages. When on_request returns without consuming the input it was given, the
input is an incomplete message (half a frame). With `set_partial_limits`, it must be completed
within `timeout` seconds of when it started (the first stall after the handler last consumed
anything), and the bytes it holds are charged to a `PartialBudget` shared by connections; a
connection past the deadline, or whose message would exceed the budget, is closed. Input held
while reading is paused is not an incomplete message.

Closing. `close()` (or a peer hang-up, when the connection has handlers) runs the close
callbacks exactly once, last-added first, after any running handler returns. The last one is
the connection's own finalizer: it posts the release of the buffers and the socket to the poller
thread, so the poller can never `recv` into a freed buffer or a reused fd.
"""

from __future__ import annotations

import enum
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .budget import PartialBudget
from .errors import (
    ConcurrentAccessError,
    ConnectionClosedError,
    ConnectionEOFError,
    ReadTimeoutError,
    WouldBlockOnPollerError,
    WriteTimeoutError,
)
from .identity import PeerIdentity
from .linkbuffer import LinkBuffer
from .poll_backend import ERROR, HANGUP, READABLE, WRITABLE
from .poller import Poller, TimerHandle, manager, on_poller_thread
from .worker_pool import default_pool

__all__ = ["CloseCallback", "Connection", "OnRequest", "Runner", "run_inline"]

log = logging.getLogger("rpcpoll.transport")

OnRequest = Callable[[Any, "Connection"], object]
CloseCallback = Callable[["Connection"], object]
Runner = Callable[[Callable[[], object]], object]

_INITIAL_READ = 8 * 1024
_MAX_READ = 8 * 1024 * 1024
_MAX_IOV = 64
_RETRY_CLOSE = 0.001

# Why reading is paused (bits of Connection._paused).
_PAUSE_USER = 1  # pause_reading()
_PAUSE_OUTPUT = 2  # more than max_unsent bytes wait to be sent
_PAUSE_INPUT = 4  # more than max_unread bytes wait while a handler runs
_PAUSE_TLS = 8  # a TLS handshake step is queued (rpcpoll/transport/tls_connection.py)
_HOLD_HANDLER = _PAUSE_USER | _PAUSE_OUTPUT  # reasons that also stop on_request


class _Closing(enum.IntEnum):
    OPEN = 0
    PEER = 1  # the poller saw the peer's hang-up
    USER = 2  # close() or detach() was called


def _discard_input(_ctx: Any, conn: Connection) -> None:
    """The request handler of a connection that said goodbye: input is dropped unread."""
    reader = conn.reader()
    reader.skip(len(reader))
    reader.release()


def run_inline(task: Callable[[], object]) -> None:
    """A runner that runs the task on the calling thread (the poller, for events)."""
    task()


class _InputBuffer(LinkBuffer):
    """The input LinkBuffer: reads wait for bytes instead of raising `NotEnoughDataError`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn = conn

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionClosedError("connection has been closed")

    def _check_read(self, op: str, n: int) -> bool:
        self._check_open()
        if n <= 0:
            return False
        if len(self) < n:
            self._conn._wait_read(n)
        return True

    def until(self, delim: int) -> memoryview:
        """Consume through the next `delim` byte, waiting for it.

        If the peer closes first, the buffered bytes are consumed and raised as
        `ConnectionEOFError(partial=...)`.
        """
        scanned = 0
        while True:
            index = self.index_byte(delim, scanned)
            if index >= 0:
                return self.next(index + 1)
            scanned = len(self)
            try:
                self._conn._wait_read(scanned + 1)
            except ConnectionEOFError as exc:
                exc.partial = self.read_binary(len(self))
                raise


class _OutputBuffer(LinkBuffer):
    """The output LinkBuffer: `flush()` sends what was written."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn = conn

    def flush(self) -> None:
        self._conn.flush()

    def _check_writable(self) -> None:
        # Writer calls on `conn.writer()` fail like those on the connection itself.
        if self._conn._closing is not _Closing.OPEN:
            raise self._conn._closed_error()
        super()._check_writable()


class Connection:
    """A TCP or Unix stream socket driven by a poller (netpoll's Connection).

    Reader methods wait until their bytes arrive, the read timeout or deadline passes
    (`ReadTimeoutError`) or the peer closes (`ConnectionEOFError`; bytes that arrived before
    the close stay readable). Writer methods append to the output buffer; `flush()` sends it.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        poller: Poller | None = None,
        runner: Runner | None = None,
        network: str | None = None,
        direct: bool = False,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self.network = network or ("unix" if sock.family == socket.AF_UNIX else "tcp")
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._poller = poller or manager().pick()
        self._runner: Runner = runner or default_pool()
        self._input = _InputBuffer(self)
        self._output = _OutputBuffer(self)
        self._book_size = _INITIAL_READ
        self._max_size = _INITIAL_READ

        self._closing = _Closing.OPEN
        self._detaching = False
        self._state_lock = threading.Lock()
        self._read_trigger = _new_trigger()
        self._write_trigger = _new_trigger()
        self._wait_size = 0
        self._flush_lock = threading.Lock()
        self._draining = False
        # Backpressure (module docs): pause reasons, and the bounds that set them. The lock
        # orders changes of what the poller watches (read, write) with the state behind them.
        self._interest_lock = threading.Lock()
        self._paused = 0
        self._max_unsent: int | None = None
        self._max_unread: int | None = None
        # Incomplete messages (module docs).
        self._partial_timeout: float | None = None
        self._partial_budget: PartialBudget | None = None
        self._partial_since = 0.0  # when the current incomplete message started (0: none)
        self._partial_mark = 0  # input bytes consumed at that time
        self._partial_held = 0  # bytes charged to the budget
        self._partial_timer: TimerHandle | None = None

        self._read_timeout: float | None = None
        self._write_timeout: float | None = None
        self._read_deadline: float | None = None
        self._write_deadline: float | None = None
        self._idle_timeout: float | None = None
        self._close_idle = False
        self._idle_timer: TimerHandle | None = None
        self._last_active = 0.0

        self.context: Any = None
        self._on_request: OnRequest | None = None
        self._on_connect: Callable[[Any, Connection], Any] | None = None
        self._on_disconnect: Callable[[Any, Connection], object] | None = None
        self._processing = threading.Lock()
        self._connected = True  # False while on_connect runs
        self._disconnected = False
        self._close_callbacks: list[CloseCallback] = [Connection._finalize]
        self._callbacks_done = False
        self._hangup_handled = False
        self._registered = False  # in the poller's set right now
        self._poller_bound = False  # the poller has seen this fd: release on its thread
        self._server_side = False  # accepted by an EventLoop: a hang-up finishes it
        # A direct connection has no poller: blocking reads receive on the calling thread.
        self._direct = direct
        # One poll object per direction: the reader (POLLIN) and a flusher (POLLOUT) may wait at
        # once, and CPython refuses concurrent poll() calls on one object.
        self._readiness: dict[int, select.poll] = {}
        # Held by the thread receiving on a direct connection (a read's whole wait, or a probe):
        # only one thread writes the input buffer, as with the poller.
        self._receiving = threading.Lock()

        self._local = _address(sock, local=True)
        self._remote = _address(sock, local=False)

    # ------------------------------------------------------------------ setup

    def _register(self) -> None:
        """Start receiving events (after the on_prepare step, as netpoll does)."""
        if self._closing is _Closing.OPEN and not self._registered and not self._direct:
            self._registered = self._poller_bound = True
            self._poller.register(self._fd, self._on_event)
            if self._paused:  # paused before it was watched (in on_prepare, say)
                with self._interest_lock:
                    self._watch_locked()

    # ------------------------------------------------------------------ identity

    @property
    def local_address(self) -> Any:
        return self._local

    @property
    def remote_address(self) -> Any:
        return self._remote

    def fileno(self) -> int:
        return self._fd

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """The peer's verified certificate identity: None on a plaintext connection, and on a
        TLS connection whose peer presented no certificate (see tls_connection.py)."""
        return None

    def __repr__(self) -> str:
        # No I/O here (is_active() probes a direct connection): repr runs inside log calls,
        # some of them in the middle of a receive.
        closing = self._closing
        state = "active" if closing is _Closing.OPEN else closing.name.lower() + "-closed"
        return f"<Connection {self.network} {self._local!r} -> {self._remote!r} {state}>"

    # ------------------------------------------------------------------ reader / writer

    def reader(self) -> LinkBuffer:
        """The input buffer: LinkBuffer reads that wait for bytes (the fast path to use)."""
        return self._input

    def writer(self) -> LinkBuffer:
        """The output buffer: LinkBuffer writes; its `flush()` sends."""
        return self._output

    def next(self, n: int) -> memoryview:
        return self._input.next(n)

    def peek(self, n: int) -> memoryview:
        return self._input.peek(n)

    def skip(self, n: int) -> None:
        self._input.skip(n)

    def until(self, delim: int) -> memoryview:
        return self._input.until(delim)

    def read_string(self, n: int, encoding: str = "utf-8") -> str:
        return self._input.read_string(n, encoding)

    def read_binary(self, n: int) -> bytes:
        return self._input.read_binary(n)

    def read_byte(self) -> int:
        return self._input.read_byte()

    def slice(self, n: int) -> LinkBuffer:
        return self._input.slice(n)

    def release(self) -> None:
        self._input.release()

    def read(self, max_bytes: int) -> bytes:
        """Wait for at least one byte, then consume up to `max_bytes` of what is buffered."""
        if max_bytes <= 0:
            return b""
        inbuf = self._input
        if not len(inbuf):
            inbuf._check_read("read", 1)
        return inbuf.read_binary(min(max_bytes, len(inbuf)))

    def malloc(self, n: int) -> memoryview:
        self._check_writable()
        return self._output.malloc(n)

    def malloc_len(self) -> int:
        return self._output.malloc_len()

    def malloc_ack(self, n: int) -> None:
        self._check_writable()
        self._output.malloc_ack(n)

    def write_binary(self, data: bytes | bytearray | memoryview) -> int:
        self._check_writable()
        return self._output.write_binary(data)

    def write_string(self, text: str, encoding: str = "utf-8") -> int:
        self._check_writable()
        return self._output.write_string(text, encoding)

    def write_byte(self, value: int) -> None:
        self._check_writable()
        self._output.write_byte(value)

    def write_direct(self, data: bytes | bytearray | memoryview, remain_cap: int) -> None:
        self._check_writable()
        self._output.write_direct(data, remain_cap)

    def write_buffer(self, other: LinkBuffer | None) -> None:
        self._check_writable()
        self._output.write_buffer(other)

    append = write_buffer

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """`write_binary` then `flush`: returns len(data) once every byte is sent."""
        n = self.write_binary(data)
        self.flush()
        return n

    def _check_writable(self) -> None:
        if self._closing is not _Closing.OPEN:
            raise self._closed_error()

    def _closed_error(self, when: str = "") -> ConnectionClosedError:
        """The error of a write or flush on a closed connection (error paths only; a TLS
        connection says why its session ended)."""
        return ConnectionClosedError(f"connection has been closed ({when or self._closing.name})")

    # ------------------------------------------------------------------ state and options

    def is_active(self) -> bool:
        """False once either side closed. On a direct connection this asks the socket (one
        `poll` call): a peer's close is only seen by reading. While another thread waits in a
        direct read, it answers from what that read has seen so far."""
        if self._direct and self._closing is _Closing.OPEN:
            self._probe()
        return self._closing is _Closing.OPEN

    @property
    def closed(self) -> bool:
        """Whether this side knows the connection is closed (never does I/O to find out)."""
        return self._closing is not _Closing.OPEN

    @property
    def direct(self) -> bool:
        """Whether the connection does its I/O on the calling thread (no poller)."""
        return self._direct

    def wait_readable(self, n: int) -> int:
        """Wait until at least `n` bytes are buffered, as a read of `n` bytes would (same
        timeouts and errors), without consuming them; returns the number buffered."""
        self._input._check_read("wait_readable", n)
        return len(self._input)

    def set_read_timeout(self, seconds: float | None) -> None:
        """Limit every later blocking read (its whole wait); None or 0: no limit. Clears the
        read deadline."""
        self._read_timeout = seconds or None
        self._read_deadline = None

    def set_write_timeout(self, seconds: float | None) -> None:
        """Limit every later flush's wait for the socket to drain; clears the write deadline."""
        self._write_timeout = seconds or None
        self._write_deadline = None

    def set_read_deadline(self, deadline: float | None) -> None:
        """An absolute `time.monotonic()` time after which reads fail; None clears it."""
        self._read_deadline = deadline

    def set_write_deadline(self, deadline: float | None) -> None:
        self._write_deadline = deadline

    def set_deadline(self, deadline: float | None) -> None:
        self._read_deadline = self._write_deadline = deadline

    def set_idle_timeout(self, seconds: float | None, *, close_idle: bool = False) -> None:
        """TCP keepalive probes after `seconds` idle (netpoll's meaning; whole seconds, >= 1).

        With `close_idle=True` the connection is also closed when nothing was received or
        flushed for `seconds` (an application-level idle timeout; works for Unix sockets too).
        """
        self._idle_timeout = seconds or None
        if seconds and seconds >= 1 and self._sock.family in (socket.AF_INET, socket.AF_INET6):
            whole = int(seconds)
            sock = self._sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, whole)
            if hasattr(socket, "TCP_KEEPINTVL"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, whole)
        self._close_idle = bool(seconds) and close_idle
        if self._close_idle:
            self._last_active = time.monotonic()
            self._poller.call_soon(self._arm_idle_timer)

    # ------------------------------------------------------------------ backpressure

    def pause_reading(self) -> None:
        """Stop reading from the socket (and calling on_request) until `resume_reading()`.

        Bytes already buffered stay buffered; the peer's sends stall once the kernel buffers
        fill. A peer's hang-up or reset is still noticed. Any thread; idempotent. A direct
        connection reads only when asked to, so this only matters once it is polled.
        """
        self._pause(_PAUSE_USER)

    def resume_reading(self) -> None:
        """Undo `pause_reading()` (other pause reasons may still hold); on_request runs again
        if bytes are waiting. Any thread; idempotent."""
        self._resume(_PAUSE_USER)

    @property
    def reading_paused(self) -> bool:
        """Whether reading is paused right now, for any reason."""
        return bool(self._paused)

    @property
    def unsent_bytes(self) -> int:
        """Bytes written to the output buffer and not yet handed to the kernel."""
        out = self._output
        return len(out) + out._pending

    def set_buffer_limits(self, *, unsent: int | None = None, unread: int | None = None) -> None:
        """Backpressure bounds (module docs; None: no bound). With more than `unsent` bytes
        waiting to be sent, reading stops until the poller has sent them down to half of that;
        with more than `unread` bytes received while a handler runs, reading stops until the
        handler returns."""
        if (unsent is not None and unsent < 1) or (unread is not None and unread < 1):
            raise ValueError("buffer limits must be positive (or None)")
        self._max_unsent = unsent
        self._max_unread = unread

    def set_partial_limits(
        self, timeout: float | None = None, budget: PartialBudget | None = None
    ) -> None:
        """Limits of an incomplete message (module docs): it must complete within `timeout`
        seconds, and the bytes it holds are charged to `budget`; else the connection closes."""
        if timeout is not None and timeout <= 0:
            raise ValueError("a partial-message timeout must be positive (or None)")
        self._partial_timeout = timeout
        self._partial_budget = budget

    def _pause(self, reason: int) -> None:
        with self._interest_lock:
            was = self._paused
            if was & reason:
                return
            self._paused = was | reason
            if not was:
                self._watch_locked()

    def _resume(self, reason: int) -> None:
        with self._interest_lock:
            if not self._paused & reason:
                return
            self._paused &= ~reason
            if self._paused:
                return
            self._watch_locked()
        # Bytes may have waited for the pause to end (and a handler stalled meanwhile).
        if self._on_request is not None and len(self._input) and self._closing is _Closing.OPEN:
            self._schedule()

    def _set_draining(self, draining: bool) -> None:
        # Write interest goes on before `_draining` says so and off before it stops saying so:
        # a flusher that sees `_draining` False may send at once (see flush).
        with self._interest_lock:
            if draining:
                self._draining = True
                self._watch_locked()
            else:
                self._watch_locked(write=False)
                self._draining = False

    def _watch_locked(self, write: bool | None = None) -> None:
        """Tell the poller what to watch, from the state (call with _interest_lock held)."""
        if self._registered:
            if write is None:
                write = self._draining
            if self._paused:
                self._poller.modify(self._fd, write, False)
            else:
                self._poller.modify(self._fd, write)

    # ------------------------------------------------------------------ incomplete messages

    def _track_partial(self, held: int) -> None:
        """After the request loop: `held` bytes wait in an incomplete message (0: none)."""
        if held:
            mark = self._input._consumed
            if not self._partial_since or mark != self._partial_mark:
                self._partial_mark = mark  # a new message: its clock starts now
                self._partial_since = time.monotonic()
                if self._partial_timeout is not None and self._partial_timer is None:
                    self._partial_timer = self._poller.call_later(
                        self._partial_timeout, self._check_partial
                    )
        else:
            self._partial_since = 0.0
        budget = self._partial_budget
        if budget is not None and held != self._partial_held:
            if not budget.charge(self._partial_held, held):
                log.warning(
                    "closing %r: its incomplete message of %d bytes would exceed the budget"
                    " of %d bytes for incomplete messages (%d in use)",
                    self, held, budget.limit, budget.used,
                )  # fmt: skip
                self.close()
                return
            self._partial_held = held

    def _check_partial(self) -> None:
        """The partial-message timer (poller thread): close the connection if the message
        that started the clock is still incomplete, else wait for the current one's due time."""
        self._partial_timer = None
        since, timeout = self._partial_since, self._partial_timeout
        if not since or timeout is None or self._closing is not _Closing.OPEN:
            return
        remaining = since + timeout - time.monotonic()
        if remaining <= 0 and self._input._consumed == self._partial_mark:
            log.info(
                "closing %r: a message started %.1f s ago is still incomplete (%d bytes)",
                self, timeout - remaining, len(self._input),
            )  # fmt: skip
            self.close()
            return
        self._partial_timer = self._poller.call_later(max(remaining, 0.001), self._check_partial)

    @property
    def poller(self) -> Poller:
        """The poller that drives this connection."""
        return self._poller

    def set_runner(self, runner: Runner) -> None:
        """Run this connection's request task with `runner` from now on."""
        self._runner = runner

    def set_on_request(self, on_request: OnRequest | None) -> None:
        """Call `on_request(ctx, conn)` when bytes arrive; None is ignored (as in netpoll).

        A direct connection becomes poller-driven from here on.
        """
        if on_request is None:
            return
        self._on_request = on_request
        if self._direct:
            self._direct = False
            self._register()
        if len(self._input):
            self._schedule()

    def add_close_callback(self, callback: CloseCallback) -> None:
        """Run `callback(conn)` once when the connection closes; last added runs first."""
        if self._callbacks_done:
            raise ConnectionClosedError("connection has been closed")
        self._close_callbacks.append(callback)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the connection. Idempotent. Blocked reads and flushes wake with
        `ConnectionClosedError`; close callbacks run after a running handler returns."""
        with self._state_lock:
            if self._closing is _Closing.USER:
                return
            self._closing = _Closing.USER
        self._output._seal_writes("connection has been closed")
        self._wake_waiters()
        if self._direct and not self._detaching:
            # A direct read or flush on another thread sits in poll(2), which close() cannot
            # interrupt; shutting the socket down makes poll(2) return at once (the fd stays
            # open, so it cannot be reused under that thread; _release_resources waits for it).
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._registered:
            # Stop events now: the callbacks may wait for a running handler, and unread bytes
            # would make every level-triggered wait return at once until then.
            self._registered = False
            self._poller.unregister(self._fd)
        self._try_finish()

    def say_goodbye(self, data: bytes) -> bool:
        """The first half of a graceful close (a server stopping), for a connection with no
        request in hand: send `data` (a message saying so), then half-close (FIN); from then
        on, input is discarded unread. The peer reads `data`, knows that nothing it sends from
        now on is read, and closes; this connection closes when the peer's FIN arrives, or
        when the caller calls `close()`. A request that crossed `data` on the wire is dropped
        unread, never half-served, which is what lets a client retry it safely.

        Returns False if a request is being handled or has arrived (nothing is done), or if
        `data` did not all fit in the socket's send buffer at once (a peer not reading): the
        caller then closes the connection as it would have without a goodbye.
        """
        if not self._processing.acquire(blocking=False):
            return False
        said = False
        try:
            if (
                self._closing is _Closing.OPEN
                and not len(self._input)
                and not self._draining
                and not self._output.malloc_len()
            ):
                said = self._send_goodbye(data)
                if said:
                    self._output._seal_writes("the connection said goodbye")
                    self._on_request = _discard_input
        finally:
            self._processing.release()
        # Whoever found the request lock taken meanwhile relied on us (as in `_process`): a
        # hang-up's close callbacks, or bytes to hand to on_request.
        if self._closing is not _Closing.OPEN:
            self._try_finish()
        elif len(self._input):
            self._schedule()
        return said

    def _send_goodbye(self, data: bytes) -> bool:
        """Send `data` in one non-blocking send and shut the write side; False if it did not
        all fit (nothing is shut then)."""
        try:
            if self._sock.send(data) != len(data):
                return False
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def detach(self) -> socket.socket:
        """Stop driving the socket: run the close callbacks but leave the socket open.

        Returns the socket in blocking mode; the caller owns it from now on.
        """
        self._detaching = True
        self.close()
        self._sock.setblocking(True)
        return self._sock

    def _wake_waiters(self) -> None:
        _trigger(self._read_trigger)
        _trigger(self._write_trigger)

    def _try_finish(self) -> None:
        """Run the close callbacks now unless a handler runs; it runs them when it returns.

        After a peer hang-up they wait until on_disconnect has been dealt with.
        """
        closing = self._closing
        if closing is _Closing.OPEN or self._callbacks_done:
            return
        if closing is _Closing.PEER and not self._hangup_handled:
            return
        if self._processing.acquire(blocking=False):  # held forever after: no handler restarts
            self._run_close_callbacks()

    def _run_close_callbacks(self) -> None:
        if self._callbacks_done:
            return
        self._callbacks_done = True
        for callback in reversed(self._close_callbacks):
            try:
                callback(self)
            except Exception:
                log.exception("close callback of %r failed", self)

    def _finalize(self) -> None:
        """The first-registered (so last-run) close callback: release buffers and the fd."""
        self._output._seal_writes("connection has been closed")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._partial_timer is not None:
            self._partial_timer.cancel()
        if self._partial_budget is not None and self._partial_held:
            self._partial_budget.charge(self._partial_held, 0)
            self._partial_held = 0
        if self._registered:
            self._registered = False
            self._poller.unregister(self._fd)
        if self._poller_bound and not self._poller.closed:
            self._poller.call_soon(self._release_resources)
        else:
            self._release_resources()

    def _release_resources(self) -> None:
        # Runs on the poller thread once the fd is out of epoll. A flush (or, on a direct
        # connection, a receive) still in progress on another thread owns the socket until it
        # notices the close: try again shortly.
        if not self._flush_lock.acquire(blocking=False):
            self._poller.call_later(_RETRY_CLOSE, self._release_resources)
            return
        if not self._receiving.acquire(blocking=False):
            self._flush_lock.release()
            self._poller.call_later(_RETRY_CLOSE, self._release_resources)
            return
        try:
            self._input.close()
            self._output.close()
            if not self._detaching:
                self._sock.close()
        finally:
            self._receiving.release()
            self._flush_lock.release()

    # ------------------------------------------------------------------ blocking reads

    def _wait_read(self, n: int) -> None:
        """Wait until `n` bytes are buffered; raise on timeout, close or peer close."""
        inbuf = self._input
        if len(inbuf) >= n:
            return
        if self._direct:  # no poller involved: the calling thread receives
            deadline = self._read_deadline
            if deadline is None and self._read_timeout is not None:
                deadline = time.monotonic() + self._read_timeout
            self._receive_until(n, deadline)
            return
        if on_poller_thread():  # any poller's: waiting there stalls its connections
            if self._closing is _Closing.PEER:
                raise ConnectionEOFError("connection closed by peer (wait read)")
            if self._closing is _Closing.USER:
                raise ConnectionClosedError("connection has been closed (wait read)")
            raise WouldBlockOnPollerError(
                f"a read of {n} bytes with {len(inbuf)} buffered would block a poller thread"
            )
        deadline = self._read_deadline
        if deadline is None and self._read_timeout is not None:
            deadline = time.monotonic() + self._read_timeout
        trigger = self._read_trigger
        self._wait_size = n  # publish first, then check: the poller reads it after committing
        try:
            while len(inbuf) < n:
                closing = self._closing
                if closing is _Closing.PEER:
                    raise ConnectionEOFError("connection closed by peer (wait read)")
                if closing is _Closing.USER:
                    raise ConnectionClosedError("connection has been closed (wait read)")
                if deadline is None:
                    trigger.acquire()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not trigger.acquire(timeout=remaining):
                    if len(inbuf) >= n:
                        break
                    raise ReadTimeoutError(
                        f"connection read timeout: {len(inbuf)} of {n} bytes arrived"
                        f" from {self._remote!r}"
                    )
        finally:
            self._wait_size = 0

    # ------------------------------------------------------------------ direct I/O

    def _poll(self, events: int, timeout_ms: int | None) -> bool:
        """poll(2) this socket for `events` (None: no time limit)."""
        readiness = self._readiness.get(events)
        if readiness is None:
            readiness = self._readiness[events] = select.poll()
            readiness.register(self._fd, events)
        return bool(readiness.poll(timeout_ms))

    def _wait_ready(self, events: int, deadline: float | None) -> bool:
        """Wait on this thread until the socket is ready for `events`; False on timeout."""
        if deadline is None:
            return self._poll(events, None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return self._poll(events, 0)  # one last look
        return self._poll(events, max(1, int(remaining * 1000 + 0.999)))

    def _receive_until(self, n: int, deadline: float | None) -> None:
        """Receive on this thread until `n` bytes are buffered (a direct connection's wait)."""
        inbuf = self._input
        with self._receiving:
            while len(inbuf) < n:
                closing = self._closing
                if closing is _Closing.PEER:
                    raise ConnectionEOFError("connection closed by peer (wait read)")
                if closing is _Closing.USER:
                    raise ConnectionClosedError("connection has been closed (wait read)")
                ready = self._wait_ready(select.POLLIN, deadline)
                # A close() on another thread shuts the socket down, which ends this wait.
                if self._closing is _Closing.USER:
                    raise ConnectionClosedError("connection has been closed (wait read)")
                if not ready:
                    raise ReadTimeoutError(
                        f"connection read timeout: {len(inbuf)} of {n} bytes arrived"
                        f" from {self._remote!r}"
                    )
                self._receive()

    def _receive(self, hangup: bool = True) -> int:
        """One non-blocking `recv_into` straight into the input buffer's tail block (by the
        poller, or by the reading thread of a direct connection). Returns the bytes received
        (0 after a hang-up, which it handles unless `hangup` is false, -1 if none were
        waiting). The caller holds `_receiving`."""
        inbuf = self._input
        book_size = self._book_size
        space = inbuf.book(book_size, self._max_size)
        try:
            n = self._sock.recv_into(space)
        except BlockingIOError:
            n = -1
        except OSError as exc:
            log.debug("recv on %r failed: %s", self, exc)
            n = 0
        finally:
            del space
        if n <= 0:
            inbuf.book_ack(0)
            if n == 0 and hangup:
                self._hangup()
            return n
        length = inbuf.book_ack(n)
        if n == book_size and book_size < _MAX_READ:
            self._book_size = book_size * 2
        if length > self._max_size and self._max_size < _MAX_READ:
            self._max_size = min(_MAX_READ, 1 << (length - 1).bit_length())
        if self._close_idle:
            self._last_active = time.monotonic()
        return n

    def _probe(self) -> None:
        """Notice a peer's close on a direct connection without blocking. Skipped while a
        direct read waits (it will see the close): one thread receives at a time."""
        if not self._receiving.acquire(blocking=False):
            return
        try:
            try:
                readable = self._poll(select.POLLIN, 0)
            except (OSError, ValueError):
                readable = True  # a closed or broken fd: let the read find out
            # Bytes that came before a FIN take one receive each; the FIN shows after them.
            while readable and self._receive() > 0:
                readable = self._poll(select.POLLIN, 0)
        finally:
            self._receiving.release()

    # ------------------------------------------------------------------ flush

    def flush(self) -> None:
        """Send everything written. Returns once the kernel has every byte; on a poller thread,
        returns at once and the connection's poller sends what did not fit.

        Raises `ConnectionClosedError` if the connection is closed (or closes meanwhile),
        `WriteTimeoutError` if the socket does not drain in time (unsent bytes stay queued and
        keep draining; on a direct connection they go first at the next flush),
        `ConcurrentAccessError` if another thread is flushing. A direct connection waits on
        the calling thread, a poller's included.
        """
        if self._closing is not _Closing.OPEN:
            raise self._closed_error("when flush")
        if not self._flush_lock.acquire(blocking=False):
            raise ConcurrentAccessError("concurrent flush on one connection")
        try:
            out = self._output
            LinkBuffer.flush(out)
            if self._close_idle:
                self._last_active = time.monotonic()
            if not len(out):
                return
            if not self._draining and self._send(out):
                return
            deadline = self._write_deadline
            if deadline is None and self._write_timeout is not None:
                deadline = time.monotonic() + self._write_timeout
            if self._direct:  # no poller would send the rest: wait here, on any thread
                self._send_until_drained(out, deadline)
                return
            limit = self._max_unsent
            if limit is not None and len(out) > limit and self._draining:
                self._pause(_PAUSE_OUTPUT)  # resumed by the poller as the socket drains
            if on_poller_thread():
                return  # the poller sends the rest when the socket drains
            while True:
                self._wait_drained(deadline)
                # The poller may have finished an earlier drain without seeing the bytes
                # committed above: send whatever is left (or wait again).
                if not len(out) or self._send(out):
                    return
        finally:
            self._flush_lock.release()

    def _send(self, out: LinkBuffer) -> bool:
        """Send from the output buffer until it is empty (True) or the socket is full, in
        which case the rest is handed to the poller (False)."""
        try:
            if self._pump(out):
                return True
        except OSError as exc:
            self._on_send_error(exc)
            raise ConnectionClosedError(f"connection broken when flush: {exc}") from exc
        if self._direct:
            return False  # the caller waits for writability on its own thread
        self._set_draining(True)
        return False

    def _pump(self, out: LinkBuffer) -> bool:
        """Move the output buffer to the socket until it is empty (True) or the socket is full
        (False); raises OSError if the socket failed. Called by whoever owns the sending side
        (a flusher, or the poller while draining). A TLS connection encrypts here."""
        if not len(out):
            return True
        sendmsg = self._sock.sendmsg
        while True:
            views = out.get_bytes(_MAX_IOV)
            try:
                sent = sendmsg(views)
            except BlockingIOError:
                return False
            finally:
                del views
            if sent:
                out.skip(sent)
                out.release()
            if not len(out):
                return True
            if not sent:
                return False

    def _send_until_drained(self, out: LinkBuffer, deadline: float | None) -> None:
        """A direct connection's wait for a full socket: poll for writability, send, repeat."""
        while True:
            if self._closing is not _Closing.OPEN:
                raise ConnectionClosedError("connection has been closed (when flush)")
            ready = self._wait_ready(select.POLLOUT, deadline)
            if self._closing is not _Closing.OPEN:  # closed during the wait (see _receive_until)
                raise ConnectionClosedError("connection has been closed (when flush)")
            if not ready:
                raise WriteTimeoutError(
                    f"connection write timeout: {len(out)} bytes still queued for {self._remote!r}"
                )
            if self._send(out):
                return

    def _wait_drained(self, deadline: float | None) -> None:
        trigger = self._write_trigger
        while self._draining:
            if self._closing is not _Closing.OPEN:
                raise ConnectionClosedError("connection has been closed (when flush)")
            if deadline is None:
                trigger.acquire()
                continue
            remaining = deadline - time.monotonic()
            if (remaining <= 0 or not trigger.acquire(timeout=remaining)) and self._draining:
                raise WriteTimeoutError(
                    f"connection write timeout: {len(self._output)} bytes still queued"
                    f" for {self._remote!r}"
                )
        if self._closing is not _Closing.OPEN:
            raise ConnectionClosedError("connection has been closed (when flush)")

    def _on_send_error(self, exc: OSError) -> None:
        log.debug("send on %r failed: %s", self, exc)
        self._hangup()

    # ------------------------------------------------------------------ poller side

    def _on_event(self, mask: int) -> None:
        if self._closing is not _Closing.OPEN:
            return  # a stale event: the fd is leaving the poller
        # After a poller hand-off (poller.py) the old loop thread may still be inside this
        # connection's I/O: one thread at a time receives and drains; the other skips the
        # event, which level-triggered epoll reports again.
        if not self._receiving.acquire(blocking=False):
            return
        try:
            received = self._receive(hangup=False) if mask & (READABLE | HANGUP | ERROR) else -1
            if mask & WRITABLE and self._draining:
                self._on_writable()
        finally:
            self._receiving.release()
        if received == 0:
            self._hangup()
        elif received > 0:
            self._on_received()

    def _on_received(self) -> None:
        wait_size = self._wait_size
        if wait_size and len(self._input) >= wait_size:
            _trigger(self._read_trigger)
        if self._on_request is not None:
            self._schedule()
            limit = self._max_unread
            if limit is not None and len(self._input) >= limit and self._processing.locked():
                self._pause(_PAUSE_INPUT)
                # The handler may have returned before it could see the pause: it resumes
                # reading when it leaves, so if it has left, resume here (either may win).
                if not self._processing.locked():
                    self._resume(_PAUSE_INPUT)

    def _on_writable(self) -> None:
        out = self._output
        try:
            drained = self._pump(out)
        except OSError as exc:
            self._draining = False
            self._on_send_error(exc)
            return
        if drained:
            self._set_draining(False)
            _trigger(self._write_trigger)
        if self._paused & _PAUSE_OUTPUT:
            limit = self._max_unsent
            if limit is None or len(out) <= limit // 2:
                self._resume(_PAUSE_OUTPUT)

    def _hangup(self) -> None:
        """The peer closed (or the socket failed): wake waiters, then run the close path."""
        with self._state_lock:
            if self._closing is not _Closing.OPEN:
                return
            self._closing = _Closing.PEER
        self._output._seal_writes("connection closed by peer")
        self._draining = False
        self._wake_waiters()
        if self._registered:
            self._registered = False
            self._poller.unregister(self._fd)
        if self._direct:
            self._handle_hangup()  # no handlers to run: no reason to hop to a worker
        else:
            self._runner(self._handle_hangup)

    def _handle_hangup(self) -> None:
        with self._state_lock:
            notify = self._connected and not self._disconnected
            if notify:
                self._disconnected = True
        if notify:
            self._notify_disconnect()
        self._hangup_handled = True
        # A plain dialed connection (no handlers) runs its callbacks when the user closes it.
        if self._on_request is not None or self._on_connect is not None or self._server_side:
            self._try_finish()

    def _notify_disconnect(self) -> None:
        if self._on_disconnect is None:
            return
        try:
            self._on_disconnect(self.context, self)
        except Exception:
            log.exception("on_disconnect of %r failed", self)

    # ------------------------------------------------------------------ request loop

    def _schedule(self) -> None:
        """Start the request task unless one runs (that one re-checks before it stops)."""
        if self._processing.acquire(blocking=False):
            self._runner(self._process)

    def _prepare_connect(self, on_connect: Callable[[Any, Connection], Any]) -> None:
        """Take the request lock for on_connect before the fd is registered, so no request
        task can start before on_connect has returned."""
        self._on_connect = on_connect
        self._connected = False
        self._processing.acquire()

    def _launch_connect(self) -> None:
        """Run on_connect and then the request loop as one task."""
        self._runner(self._connect_then_process)

    def _connect_then_process(self) -> None:
        try:
            assert self._on_connect is not None
            self.context = self._on_connect(self.context, self)
        except Exception:
            log.exception("on_connect of %r failed; closing it", self)
            self.close()
        with self._state_lock:
            self._connected = True
            notify = self._closing is _Closing.PEER and not self._disconnected
            if notify:
                self._disconnected = True
        if notify:
            self._notify_disconnect()
        self._process()

    def _process(self) -> None:
        """The request loop; entered with `_processing` held, leaves it released (or held
        forever once the close callbacks ran)."""
        inbuf = self._input
        while True:
            committed = inbuf._flushed
            stalled = False
            try:
                while self._closing is not _Closing.USER:
                    on_request = self._on_request
                    if on_request is None or not len(inbuf) or self._paused & _HOLD_HANDLER:
                        break
                    consumed = inbuf._consumed
                    committed = inbuf._flushed
                    on_request(self.context, self)
                    if inbuf._consumed == consumed and inbuf._flushed == committed:
                        stalled = True
                        break  # no progress: wait for more bytes
            except ConnectionClosedError as exc:  # the peer went away mid-request: routine
                log.debug("on_request of %r: %s; closing it", self, exc)
                self.close()
            except Exception:
                log.exception("on_request of %r failed; closing it", self)
                self.close()
            # One check on the common path (everything consumed, no message pending).
            if (self._partial_since or stalled) and (
                self._partial_timeout is not None or self._partial_budget is not None
            ):
                held = stalled and not self._paused & _HOLD_HANDLER
                self._track_partial(len(inbuf) if held else 0)
            closing = self._closing
            if closing is _Closing.USER or (closing is _Closing.PEER and self._hangup_handled):
                self._run_close_callbacks()  # keeps _processing: nothing runs after this
                return
            self._processing.release()
            if self._paused & _PAUSE_INPUT:
                self._resume(_PAUSE_INPUT)  # the handler caught up: read again
            # Double-check (netpoll #304): bytes or a close that arrived while we were leaving
            # found the lock taken and relied on us.
            if self._closing is not _Closing.OPEN:
                self._try_finish()
                return
            if inbuf._flushed == committed or not self._processing.acquire(blocking=False):
                return

    # ------------------------------------------------------------------ idle close

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if not self._close_idle or self._idle_timeout is None or not self.is_active():
            return
        due = self._last_active + self._idle_timeout - time.monotonic()
        self._idle_timer = self._poller.call_later(max(due, 0.0), self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if not self.is_active() or not self._close_idle or self._idle_timeout is None:
            return
        if time.monotonic() - self._last_active >= self._idle_timeout:
            log.debug("closing idle connection %r", self)
            self.close()
        else:
            self._arm_idle_timer()


def _new_trigger() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _trigger(lock: threading.Lock) -> None:
    """Wake one waiter of a one-slot trigger; a no-op if a wake-up is already pending."""
    try:
        lock.release()
    except RuntimeError:
        pass


def _address(sock: socket.socket, local: bool) -> Any:
    try:
        return sock.getsockname() if local else sock.getpeername()
    except OSError:
        return None
