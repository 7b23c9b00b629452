"""Helpers shared by the transport tests (conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testutil import wait_until

from rpcpoll.transport import Connection, EventLoop, Listener, dial_connection

IO_TIMEOUT = 5.0  # timeout of blocking test-side socket calls; a hang fails instead of stalling


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes from a blocking socket (fails on EOF or the socket's timeout)."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF with {n} bytes still expected")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------- servers


class Server:
    """An EventLoop serving a listener on its own thread."""

    def __init__(self, loop: EventLoop, listener: Listener, network: str) -> None:
        self.loop = loop
        self.listener = listener
        self.network = network
        self.address: Any = listener.address
        self.thread = threading.Thread(target=loop.serve, args=(listener,), name="test-serve")
        self.thread.start()
        wait_until(lambda: loop.address is not None, message="the EventLoop to start serving")

    def stop(self) -> None:
        """Shut down; connections still busy after a while are closed by force."""
        loop = self.loop
        if not loop.shutdown(2.0):
            for conn in loop.connections():
                conn.close()
            loop.shutdown(2.0)
        self.thread.join(IO_TIMEOUT)
        assert not self.thread.is_alive(), "EventLoop.serve did not return after shutdown"


# ---------------------------------------------------------------------------- clients


class Clients:
    """Dials Connections and plain sockets, and closes them all at the end of the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections: list[Connection] = []
        self.sockets: list[socket.socket] = []

    def dial(self, server: Server | tuple[str, Any], timeout: float = 2.0) -> Connection:
        network, address = (
            (server.network, server.address) if isinstance(server, Server) else server
        )
        conn = dial_connection(network, address, timeout)
        conn.set_read_timeout(IO_TIMEOUT)  # a reply that never comes fails the test quickly
        with self._lock:
            self.connections.append(conn)
        return conn

    def raw(self, server: Server) -> socket.socket:
        """A plain blocking client socket (with a timeout) connected to the server."""
        family = socket.AF_UNIX if server.network == "unix" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        with self._lock:
            self.sockets.append(sock)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(server.address)
        return sock

    def close_all(self) -> None:
        for conn in self.connections:
            conn.close()
        for sock in self.sockets:
            sock.close()


# ---------------------------------------------------------------------------- pairs

PAIR_KINDS = ["tcp", "unix", "socketpair"]


def wrap_socket(sock: socket.socket) -> Connection:
    """netpoll's NewFDConnection: a Connection registered with a poller.

    rpcpoll has no public call for this (dial_connection does it for dialed sockets), so this
    test helper uses the same private `_register` step as the dialer.
    """
    conn = Connection(sock)
    conn._register()
    return conn


@contextlib.contextmanager
def connection_pair(
    kind: str, tmp_path: Path, *, peer_rcvbuf: int | None = None, direct: bool = False
) -> Iterator[tuple[Connection, socket.socket]]:
    """A Connection and the plain blocking socket at the other end, over `kind`.

    `direct=True` gives a direct connection (no poller; dialed with `direct=True`).
    """
    conn: Connection | None = None
    peer: socket.socket | None = None
    listening: socket.socket | None = None
    try:
        if kind == "socketpair":
            mine, peer = socket.socketpair()
            if peer_rcvbuf:
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, peer_rcvbuf)
            conn = Connection(mine, direct=True) if direct else wrap_socket(mine)
        else:
            if kind == "unix":
                listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                address: Any = str(tmp_path / "pair.sock")
            else:
                listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                address = ("127.0.0.1", 0)
            if peer_rcvbuf:  # set before listen so the accepted socket starts with it
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, peer_rcvbuf)
            listening.bind(address)
            listening.listen(1)
            listening.settimeout(IO_TIMEOUT)
            conn = dial_connection(kind, listening.getsockname(), 2.0, direct=direct)
            peer, _ = listening.accept()
            listening.close()
            if kind == "unix":
                os.unlink(address)
        peer.settimeout(IO_TIMEOUT)
        yield conn, peer
    finally:
        if conn is not None:
            conn.close()
        if peer is not None:
            peer.close()
        if listening is not None:
            listening.close()


def set_sndbuf(conn: Connection, size: int) -> None:
    """Shrink the kernel send buffer of a Connection's socket (through a duplicate fd)."""
    dup = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    finally:
        dup.close()


def sockopt(conn: Connection, level: int, option: int) -> int:
    dup = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return dup.getsockopt(level, option)
    finally:
        dup.close()


class ThreadRunner:
    """Starts test threads and joins them at the end; exceptions are re-raised by `result`."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def start(self, fn: Callable[[], Any], name: str = "test-thread") -> Call:
        call = Call(fn, name)
        self.threads.append(call.thread)
        return call

    def join_all(self) -> None:
        for thread in self.threads:
            thread.join(IO_TIMEOUT)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"test threads still running: {alive}"


class Call:
    """A function running on a thread; `result(timeout)` returns its value or re-raises."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.finished_at = 0.0

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc
            finally:
                self.finished_at = time.monotonic()
                self.done.set()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def result(self, timeout: float = IO_TIMEOUT) -> Any:
        if not self.done.wait(timeout):
            raise AssertionError(f"{self.thread.name} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def error(self, timeout: float = IO_TIMEOUT) -> BaseException | None:
        if not self.done.wait(timeout):
            raise AssertionError(f"{self.thread.name} did not finish within {timeout} s")
        return self._error


# Timing checks: a timeout must fire no earlier than 5 ms before and no later than 60 ms after
# the set value (measured with time.monotonic); a call after a passed deadline within 20 ms.
EARLY, LATE, FAST = 0.005, 0.060, 0.020


def assert_fired_near(elapsed: float, expected: float) -> None:
    assert expected - EARLY <= elapsed <= expected + LATE, (
        f"fired after {elapsed * 1000:.1f} ms, expected {expected * 1000:.0f} ms"
    )


def trickle(peer: socket.socket, stop: threading.Event, chunk: bytes, every: float) -> None:
    """A slow peer: send `chunk` every `every` seconds until stopped."""
    while not stop.wait(every):
        try:
            peer.sendall(chunk)
        except OSError:
            return
