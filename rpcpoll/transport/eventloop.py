"""EventLoop: serve a listener, netpoll style.

Per connection the callbacks run in this order: `on_prepare(conn) -> ctx` (on the accepting
poller, before the connection receives events), `on_connect(ctx, conn) -> ctx`, then
`on_request(ctx, conn)` whenever bytes are waiting (never two at once for one connection), and
finally the close callbacks. `on_disconnect(ctx, conn)` runs exactly once when the peer closes,
after `on_connect` has returned; it may run while an `on_request` is still draining the bytes
that arrived before the close.

Handlers run on the worker pool unless `run_on_poller=True`, which runs them on the poller
thread: no thread hop (the fastest mode) but a handler must never block, since the poller
cannot receive while it runs. A handler that raises gets its connection closed and the error
logged; the loop and every other connection carry on.

Limits (all off unless given): `max_connections` (a connection beyond it is accepted, sent
`refusal` and closed at once, so its client learns promptly instead of waiting in the backlog),
`max_unsent` / `max_unread` (each connection's backpressure bounds, `Connection.
set_buffer_limits`), `partial_timeout` / `partial_budget` (incomplete messages, `Connection.
set_partial_limits`; the budget is shared by the loop's connections).

TLS: `ssl=` (an `ssl.SSLContext` or a `ServerTLS`) serves TLS connections; each handshakes on
its poller first (rpcpoll/transport/tls_connection.py), on_connect runs after the handshake,
and connections over `max_connections` are closed without the plaintext `refusal`.

Stopping. `stop_accepting()` first stops the kernel from completing new handshakes on a TCP
listener (a drop-all socket filter: a client's SYN goes unanswered, and once the listener is
closed its retry is refused), then accepts and serves what is already in the backlog, then
closes the listener. A client that completed its handshake is therefore served, never reset
with its request unread, and a client arriving later is refused at connect time. `shutdown()`
then closes connections as they become idle; with `goodbye` (bytes the protocol's clients
read as "nothing you send from now on is read"), in two halves, like HTTP/2's GOAWAY: the
goodbye and a FIN first, the close when the peer closes too (or `goodbye_grace` seconds
later). A request already on the wire when the server decides a connection is idle is then
dropped unread and its client told so, instead of meeting a reset that leaves it unsure
whether the request ran (plaintext connections; a TLS one is closed at once).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .budget import PartialBudget
from .connection import Connection, OnRequest, Runner, run_inline
from .errors import ConnectionClosedError
from .net import Listener, convert_listener
from .poll_backend import READABLE
from .poller import Poller, manager
from .tls import ServerTLS, as_server_tls

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["EventLoop"]

log = logging.getLogger("rpcpoll.transport")

OnPrepare = Callable[[Connection], Any]
OnConnect = Callable[[Any, Connection], Any]
OnDisconnect = Callable[[Any, Connection], object]

# After EMFILE/ENFILE the listener is paused for these many seconds, the last one repeating,
# instead of spinning on an accept that keeps failing (netpoll #230).
_ACCEPT_BACKOFF = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPTS_PER_EVENT = 64


class EventLoop:
    """Accepts connections from a listener and drives them with the given callbacks."""

    def __init__(
        self,
        on_request: OnRequest | None,
        *,
        on_prepare: OnPrepare | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        idle_timeout: float | None = None,
        close_idle: bool = False,
        run_on_poller: bool = False,
        runner: Runner | None = None,
        is_busy: Callable[[Any, Connection], bool] | None = None,
        max_connections: int | None = None,
        refusal: bytes = b"",
        goodbye: bytes = b"",
        goodbye_grace: float = 0.5,
        max_unsent: int | None = None,
        max_unread: int | None = None,
        partial_timeout: float | None = None,
        partial_budget: int | None = None,
        poller: Poller | None = None,
        ssl: ServerTLS | SSLContext | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_prepare = on_prepare
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.idle_timeout = idle_timeout
        self.close_idle = close_idle
        self._runner: Runner | None = run_inline if run_on_poller else runner
        # An extra busy check for shutdown: work the loop cannot see, such as calls a server
        # runs on other threads for a connection.
        self._is_busy = is_busy
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self.refusal = refusal
        self.goodbye = goodbye
        self.goodbye_grace = goodbye_grace
        self._farewells: dict[Connection, float] = {}  # said goodbye -> when to close anyway
        self.refused = 0  # connections refused by max_connections (or out of fds)
        self.max_unsent = max_unsent
        self.max_unread = max_unread
        self.partial_timeout = partial_timeout
        self.partial_budget = None if partial_budget is None else PartialBudget(partial_budget)
        # TLS (tls_connection.py): accepted connections handshake on their poller first.
        self.tls: ServerTLS | None = None if ssl is None else as_server_tls(ssl)
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._listener: Listener | None = None
        self._poller: Poller | None = None
        # The poller for the listener and every connection; None: the process's pollers.
        self._fixed_poller = poller
        self._stopped = threading.Event()
        self._closing = False
        self._backoff = 0

    # ------------------------------------------------------------------ public API

    def use_poller(self, poller: Poller, runner: Runner | None = run_inline) -> None:
        """Before `serve`: put the listener and every connection on `poller` (an event loop's
        LoopPoller, say) with handlers run by `runner` (inline: on the poller's thread)."""
        if self._listener is not None:
            raise RuntimeError("use_poller() must come before serve()")
        self._fixed_poller = poller
        self._runner = runner

    def serve(self, listener: Listener | socket.socket) -> None:
        """Accept and serve connections until `shutdown()`; blocks the calling thread."""
        with self._lock:
            if self._listener is not None or self._closing:
                raise RuntimeError("this EventLoop is already serving or was shut down")
            if not isinstance(listener, Listener):
                listener = convert_listener(listener)
            self._listener = listener
            self._poller = self._fixed_poller or manager().pick()
            self._poller.register(listener.fileno(), self._on_accept)
        self._stopped.wait()

    @property
    def address(self) -> Any:
        """The served listener's address (None before `serve`)."""
        return self._listener.address if self._listener is not None else None

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting, close idle connections, wait for busy ones to become idle.

        Returns True once every connection is closed, False if `timeout` passed first (busy
        connections are left open; call again to keep waiting). `serve()` returns either way.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.stop_accepting()
        farewells = self._farewells
        try:
            while True:
                busy = 0
                now = time.monotonic()
                expired = deadline is not None and now >= deadline
                for conn in self.connections():
                    if not conn.is_active():
                        continue  # closing: its callbacks will forget it
                    if conn in farewells:  # waiting for its peer to close
                        if expired or now >= farewells[conn]:
                            conn.close()
                    elif _is_idle(conn) and not (
                        self._is_busy is not None and self._is_busy(conn.context, conn)
                    ):
                        self._say_goodbye(conn, now)
                    else:
                        busy += 1
                if busy == 0 and not self.connections():
                    return True
                if expired:
                    return False
                pause = min(0.1, max(0.005, busy * 0.001))
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
        finally:
            self._stopped.set()

    def _say_goodbye(self, conn: Connection, now: float) -> None:
        """Close an idle connection at shutdown. With `goodbye`, in two halves: send it and
        half-close, then close when the peer does (at most `goodbye_grace` later), so that a
        request the peer wrote before reading it is dropped unread rather than reset, and the
        peer knows it was never read. Without (or where it cannot be sent), close at once."""
        if self.goodbye and conn.say_goodbye(self.goodbye):
            self._farewells[conn] = now + self.goodbye_grace
            try:
                conn.add_close_callback(lambda _conn: self._farewells.pop(conn, None))
            except ConnectionClosedError:  # the peer was quick: it has closed already
                self._farewells.pop(conn, None)
        else:
            conn.close()

    # ------------------------------------------------------------------ accepting

    def stop_accepting(self) -> None:
        """Close the listener (new connections are refused); served ones carry on."""
        with self._lock:
            self._closing = True
            listener, poller = self._listener, self._poller
        if listener is None or poller is None or listener.socket.fileno() < 0:
            return
        _refuse_new_handshakes(listener.socket)
        poller.unregister(listener.fileno())
        done = threading.Event()

        def close_listener() -> None:
            # What completed its handshake before the filter went on is served, not reset.
            self._accept_backlog(listener)
            listener.close()
            done.set()

        if poller.in_poller_thread() or poller.closed:
            close_listener()
            return
        poller.call_soon(close_listener)  # never close an fd the poller may be accepting on
        done.wait(5.0)

    def _on_accept(self, mask: int) -> None:
        listener = self._listener
        if self._closing or listener is None or not mask & READABLE:
            return
        self._accept(listener, _ACCEPTS_PER_EVENT)

    def _accept(self, listener: Listener, limit: int | None) -> None:
        """Accept and serve up to `limit` pending connections (None: all of them)."""
        count = 0
        while limit is None or count < limit:
            count += 1
            try:
                sock = listener.accept()
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    log.error("accept on %r failed: %s", listener, exc)
                return
            if sock is None:
                self._backoff = 0
                return
            self._backoff = 0
            if self.max_connections is not None and len(self._connections) >= self.max_connections:
                self._refuse(sock)
                continue
            try:
                self._serve_connection(sock)
            except Exception:
                log.exception("setting up a connection from %r failed", listener)
                sock.close()

    def _accept_backlog(self, listener: Listener) -> None:
        """Serve every connection still in the accept queue (on the poller, before closing)."""
        if listener.socket.fileno() < 0:
            return
        try:
            self._accept(listener, None)
        except Exception:
            log.exception("accepting the backlog of %r failed", listener)

    def _refuse(self, sock: socket.socket) -> None:
        """A connection over `max_connections`: send the refusal and close it at once."""
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "refusing connections: %d served is the limit (%d refused so far)",
                self.max_connections, self.refused,
            )  # fmt: skip
        try:
            if self.refusal and self.tls is None:  # plaintext would only garble a handshake
                sock.setblocking(False)
                sock.send(self.refusal)
        except OSError:
            pass
        finally:
            sock.close()

    def _pause_accepting(self, exc: OSError) -> None:
        listener, poller = self._listener, self._poller
        assert listener is not None and poller is not None
        if self._closing:
            return
        delay = _ACCEPT_BACKOFF[min(self._backoff, len(_ACCEPT_BACKOFF) - 1)]
        self._backoff += 1
        log.warning("accept on %r: %s; pausing accepts for %.3f s", listener, exc, delay)
        poller.unregister(listener.fileno())

        def resume() -> None:
            if not self._closing and listener.socket.fileno() >= 0:
                poller.register(listener.fileno(), self._on_accept)

        poller.call_later(delay, resume)

    def _serve_connection(self, sock: socket.socket) -> None:
        if self.tls is None:
            conn = Connection(sock, runner=self._runner, poller=self._fixed_poller)
        else:
            conn = self.tls.accept(sock, self._runner, self._fixed_poller)
        conn._server_side = True
        if self.read_timeout:
            conn.set_read_timeout(self.read_timeout)
        if self.write_timeout:
            conn.set_write_timeout(self.write_timeout)
        if self.idle_timeout:
            conn.set_idle_timeout(self.idle_timeout, close_idle=self.close_idle)
        if self.max_unsent is not None or self.max_unread is not None:
            conn.set_buffer_limits(unsent=self.max_unsent, unread=self.max_unread)
        if self.partial_timeout is not None or self.partial_budget is not None:
            conn.set_partial_limits(self.partial_timeout, self.partial_budget)
        # Handlers first, as netpoll does: on_prepare may replace them (set_on_request).
        conn._on_request = self.on_request
        conn._on_disconnect = self.on_disconnect
        if self.on_prepare is not None:
            conn.context = self.on_prepare(conn)
        if not conn.is_active():  # closed by on_prepare
            conn._try_finish()
            return
        with self._lock:
            self._connections.add(conn)
        conn.add_close_callback(self._forget)
        on_connect = self.on_connect
        if on_connect is not None:
            conn._prepare_connect(on_connect)  # no on_request can start before on_connect
        conn._register()
        if on_connect is not None:
            conn._launch_connect()

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)


def _is_idle(conn: Connection) -> bool:
    """No handler running and nothing buffered either way (netpoll's shutdown rule), not even
    a request that has reached the kernel and not yet the poller: closing a socket with unread
    bytes resets it, and its client could not tell whether the request ran."""
    return (
        not conn._processing.locked()
        and not len(conn.reader())
        and not conn._draining
        and not conn.writer().malloc_len()
        and not _kernel_readable(conn)
    )


def _kernel_readable(conn: Connection) -> bool:
    """Whether the socket has bytes (or an EOF) the poller has not received yet."""
    try:
        probe = select.poll()
        probe.register(conn.fileno(), select.POLLIN)
        return bool(probe.poll(0))
    except (OSError, ValueError):
        return False


# A classic BPF program of one instruction, "ret #0": drop every packet. Attached to a TCP
# listener it drops SYNs (and handshake-completing ACKs) while connections already in the
# accept queue are unaffected. Linux only; elsewhere the backlog is still drained first.
_SO_ATTACH_FILTER = 26
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)


def _refuse_new_handshakes(sock: socket.socket) -> None:
    if not sys.platform.startswith("linux") or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return
    import ctypes

    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("HxxxxxxP", 1, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        log.debug("cannot filter new handshakes on %r: %s", sock, exc)
