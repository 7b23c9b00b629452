"""Direct connections: no poller; blocking reads and flushes do the I/O on the calling thread.

`dial_connection(..., direct=True)` is what the RPC client uses. Every test runs over loopback
TCP and a Unix socket; the other end is a plain blocking socket. Where a direct connection
behaves differently from a polled one (test_connection.py), the test says so: the main
difference is that nothing receives in the background, so bytes reach the input buffer only
when a read (or `is_active()`) pulls them in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transport_testutil import (
    FAST,
    IO_TIMEOUT,
    Server,
    ThreadRunner,
    assert_fired_near,
    connection_pair,
    recv_exactly,
    recv_until_eof,
    set_sndbuf,
    trickle,
    wait_until,
)

from rpcpoll.transport import (
    Connection,
    ConnectionClosedError,
    ConnectionEOFError,
    ReadTimeoutError,
    WouldBlockOnPollerError,
    WriteTimeoutError,
    dial_connection,
    manager,
)

NEWLINE = ord("\n")
MiB = 1024 * 1024

Pair = tuple[Connection, socket.socket]

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


@pytest.fixture(params=["tcp", "unix"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def direct_pair(kind: str, tmp_path: Path) -> Iterator[Pair]:
    """(direct Connection, peer socket) over loopback TCP or a Unix socket."""
    with connection_pair(kind, tmp_path, direct=True) as made:
        yield made


def registered() -> int:
    """How many fds all pollers watch (listeners and connections)."""
    return sum(poller.registered for poller in manager().pollers())


def poller_round_trip() -> None:
    """Return once every poller has run a loop iteration since the call: any event pending for
    an fd it watches has been handled by then (the wake-up and the events come in one batch)."""
    for poller in manager().pollers():
        done = threading.Event()
        poller.call_soon(done.set)
        assert done.wait(IO_TIMEOUT), "a poller did not run its callbacks"


def kernel_readable(fd: int, timeout: float = IO_TIMEOUT) -> bool:
    """Whether the kernel has something for `fd` to read (bytes or the peer's FIN), asked by
    the test itself: the Connection does no I/O for this."""
    probe = select.poll()
    probe.register(fd, select.POLLIN)
    return bool(probe.poll(int(timeout * 1000)))


class OnPoller:
    """`fn` run on a poller thread; `result()` returns its value or re-raises (like `Call`)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc
            finally:
                self.done.set()

        manager().pollers()[0].call_soon(run)

    def result(self, timeout: float = IO_TIMEOUT) -> Any:
        if self.error(timeout) is not None:
            raise self._error  # type: ignore[misc]
        return self._value

    def error(self, timeout: float = IO_TIMEOUT) -> BaseException | None:
        if not self.done.wait(timeout):
            raise AssertionError(f"the poller did not finish the call within {timeout} s")
        return self._error


def record_calls(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str
) -> list[tuple[int, tuple[Any, ...]]]:
    """Record (thread ident, args) of every call of `target.<name>` (a private I/O step)."""
    calls: list[tuple[int, tuple[Any, ...]]] = []
    original = getattr(target, name)

    def recorded(*args: Any) -> Any:
        calls.append((threading.get_ident(), args))
        return original(*args)

    monkeypatch.setattr(target, name, recorded)
    return calls


# ---------------------------------------------------------------------------- no poller


def test_a_direct_connection_is_not_registered_and_receives_nothing_by_itself(
    kind: str, tmp_path: Path
):
    before = registered()
    with connection_pair(kind, tmp_path) as (polled, _):  # the control: a polled one counts
        assert not polled.direct
        assert registered() == before + 1
    assert registered() == before

    with connection_pair(kind, tmp_path, direct=True) as (conn, peer):
        assert conn.direct
        assert registered() == before
        data = os.urandom(1000)
        peer.sendall(data)
        assert kernel_readable(conn.fileno())
        poller_round_trip()
        assert len(conn.reader()) == 0, "something received for a direct connection"
        assert conn.next(1000) == data  # the read itself receives
        assert registered() == before


def test_next_blocks_until_the_rest_of_a_half_packet_arrives_and_receives_on_its_thread(
    threads: ThreadRunner, direct_pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    """TestConnectionWaitReadHalfPacket, direct."""
    conn, peer = direct_pair
    receives = record_calls(monkeypatch, conn, "_receive")
    message = os.urandom(16 * 1024)
    half = len(message) // 2
    peer.sendall(message[:half])
    assert kernel_readable(conn.fileno())
    assert len(conn.reader()) == 0  # unlike a polled connection: nobody receives yet

    call = threads.start(lambda: bytes(conn.next(len(message))), name="direct-reader")
    # The blocked reader pulls the first half in itself and keeps waiting for the rest.
    wait_until(lambda: len(conn.reader()) == half, message="the reader to receive the first half")
    assert not call.done.wait(0.05), "next() returned before the whole packet arrived"
    assert len(conn.reader()) == half, "a blocked next() must not consume anything"

    peer.sendall(message[half:])
    assert call.result() == message
    assert len(conn.reader()) == 0
    assert {ident for ident, _ in receives} == {call.thread.ident}, "received on another thread"


def test_wait_readable_waits_and_returns_the_buffered_count_without_consuming(
    threads: ThreadRunner, direct_pair: Pair
):
    conn, peer = direct_pair
    data = os.urandom(40)
    peer.sendall(data[:10])
    call = threads.start(lambda: conn.wait_readable(20))
    assert not call.done.wait(0.03), "wait_readable(20) returned with 10 bytes sent"
    peer.sendall(data[10:])
    buffered = call.result()
    assert 20 <= buffered <= 40
    # Nothing receives in the background: the count stays what the wait returned.
    assert len(conn.reader()) == buffered
    assert conn.wait_readable(buffered) == buffered  # enough buffered: no wait, no I/O
    assert conn.wait_readable(0) == buffered
    assert conn.read_binary(20) == data[:20]
    assert conn.wait_readable(20) == 20
    assert conn.read_binary(20) == data[20:]

    conn.set_read_timeout(0.05)
    peer.sendall(b"abc")
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        conn.wait_readable(4)
    assert_fired_near(time.monotonic() - started, 0.05)
    assert conn.read_binary(3) == b"abc"  # the timed-out wait consumed nothing


# ---------------------------------------------------------------------------- peer close


def test_bytes_and_a_close_that_arrived_before_any_read_are_read_then_eof(direct_pair: Pair):
    conn, peer = direct_pair
    peer.sendall(b"last words\nno newline")
    peer.close()
    assert kernel_readable(conn.fileno())
    assert conn.until(NEWLINE) == b"last words\n"
    with pytest.raises(ConnectionEOFError) as info:
        conn.until(NEWLINE)
    assert info.value.partial == b"no newline"
    assert len(conn.reader()) == 0
    with pytest.raises(ConnectionEOFError):
        conn.read(1)


class _NoIO:
    """Stands in for the socket: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"socket.{name} used")


def _no_io(*args: Any) -> Any:
    raise AssertionError("I/O attempted")


def test_is_active_sees_the_peer_close_without_a_read_and_closed_never_does_io(
    direct_pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    conn, peer = direct_pair
    assert conn.is_active()
    assert not conn.closed
    peer.close()
    assert kernel_readable(conn.fileno()), "the peer's FIN did not arrive"

    with monkeypatch.context() as patch:  # `closed` answers from state: it cannot see the FIN
        patch.setattr(conn, "_sock", _NoIO())
        for step in ("_poll", "_probe", "_receive"):
            patch.setattr(conn, step, _no_io)
        for _ in range(3):
            assert not conn.closed
        repr(conn)  # no I/O either (it runs inside log calls)

    assert not conn.is_active()  # one poll(2): the FIN is there, so the probe sees the EOF
    assert conn.closed
    with pytest.raises(ConnectionEOFError):
        conn.next(1)


def test_is_active_buffers_bytes_that_came_before_the_peer_close(direct_pair: Pair):
    """A probe receives what is waiting; bytes ahead of the FIN can take it more than one
    call to reach the close (each probe is one poll and at most one recv)."""
    conn, peer = direct_pair
    peer.sendall(b"x" * 100)
    peer.close()
    assert kernel_readable(conn.fileno())
    wait_until(lambda: not conn.is_active(), message="is_active() to see the peer close")
    assert conn.closed
    assert len(conn.reader()) == 100, "the probe dropped bytes"
    assert conn.read_binary(100) == b"x" * 100
    with pytest.raises(ConnectionEOFError):
        conn.read_byte()


def test_is_active_from_another_thread_while_a_direct_read_waits(
    threads: ThreadRunner, direct_pair: Pair
):
    """Regression: is_active() raised RuntimeError("concurrent poll() invocation") while
    another thread waited in a direct read (one poll object was shared), and its probe could
    receive into the input buffer alongside the reader."""
    conn, peer = direct_pair
    call = threads.start(lambda: bytes(conn.next(5)), name="direct-reader")
    assert not call.done.wait(0.03)
    for _ in range(20):
        assert conn.is_active()
    assert repr(conn).endswith("active>")
    peer.sendall(b"hello")
    assert call.result() == b"hello"

    call = threads.start(lambda: conn.next(5), name="direct-reader")
    assert not call.done.wait(0.03)
    peer.close()
    assert isinstance(call.error(), ConnectionEOFError)
    assert not conn.is_active()


def test_a_peer_reset_during_a_direct_read_with_debug_logging_is_eof(
    threads: ThreadRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Regression: with DEBUG logging, the "recv failed" log line formatted repr(conn), which
    called is_active(), which probed and received again inside the failing receive; the read
    then raised LinkBufferError("book_ack without a matching book") instead of EOF."""
    caplog.set_level(logging.DEBUG, logger="rpcpoll.transport")
    with connection_pair("tcp", tmp_path, direct=True) as (conn, peer):
        conn.set_read_timeout(IO_TIMEOUT)
        call = threads.start(lambda: conn.next(5), name="direct-reader")
        assert not call.done.wait(0.03)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # an RST: the blocked recv fails with ECONNRESET
        assert isinstance(call.error(), ConnectionEOFError)
        assert not conn.is_active()
    assert any("recv on" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("how", ["timeout", "deadline"])
def test_read_timeout_fires_near_the_set_value_and_the_connection_stays_usable(
    threads: ThreadRunner, direct_pair: Pair, how: str
):
    """TestConnectionTimeout/ReadTimeout and /ReadDeadline, direct: the limit covers the whole
    wait, however often bytes arrive during it."""
    conn, peer = direct_pair
    stop = threading.Event()
    peer.sendall(b"r" * 1024)
    conn.set_read_timeout(0.05)
    assert conn.next(1024) == b"r" * 1024  # enough bytes: no timeout

    threads.start(lambda: trickle(peer, stop, b"s" * 100, 0.005), name="trickle")
    try:
        if how == "timeout":
            conn.set_read_timeout(0.05)
        else:
            conn.set_read_deadline(time.monotonic() + 0.05)
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError) as info:
            conn.next(100 * 1024)
        assert_fired_near(time.monotonic() - started, 0.05)
        assert isinstance(info.value, TimeoutError)
        assert conn.is_active(), "a read timeout must not close the connection"

        if how == "deadline":  # once the deadline passed, reads fail at once
            started = time.monotonic()
            with pytest.raises(ReadTimeoutError):
                conn.next(100 * 1024)
            assert time.monotonic() - started < FAST
    finally:
        stop.set()

    # The trickled bytes were kept; clearing the limit lets a later read wait for more.
    conn.set_deadline(None)
    conn.set_read_timeout(None)
    have = len(conn.reader())
    assert have >= 100
    peer.sendall(b"t" * 10)
    got = conn.next(have + 10)  # what is still in the kernel, then the new bytes
    assert len(got) == have + 10
    assert bytes(got).endswith(b"t" * 10)


# ---------------------------------------------------------------------------- flush


def test_a_multi_mebibyte_flush_to_a_slow_reader_completes_on_the_calling_thread(
    threads: ThreadRunner, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """TestLargeBufferWrite, direct: 2 MiB flushes behind 16 KiB socket buffers. Each flush
    returns with every byte in the kernel, having waited for writability on this thread; the
    poller is never asked to watch for writability."""
    blocks = [os.urandom(2 * MiB) for _ in range(3)]
    expected = hashlib.sha256(b"".join(blocks)).hexdigest()
    with connection_pair(kind, tmp_path, peer_rcvbuf=16384, direct=True) as (conn, peer):
        set_sndbuf(conn, 16384)
        modifies = [record_calls(monkeypatch, p, "modify") for p in manager().pollers()]
        sends = record_calls(monkeypatch, conn, "_send")
        waits = record_calls(monkeypatch, conn, "_wait_ready")

        def slow_read_all() -> str:
            digest, left = hashlib.sha256(), 6 * MiB
            while left:
                chunk = peer.recv(min(left, 4096))  # small reads behind small buffers
                assert chunk, "EOF before every byte arrived"
                digest.update(chunk)
                left -= len(chunk)
            return digest.hexdigest()

        reader = threads.start(slow_read_all, name="slow-reader")
        for block in blocks:
            conn.write_binary(block)
            conn.flush()
            assert len(conn.writer()) == 0, "flush returned with bytes unsent"
        assert reader.result(20) == expected
        assert {ident for ident, _ in sends} == {threading.get_ident()}
        assert waits, "the flush never waited for the socket"
        assert {args[0] for _, args in waits} == {select.POLLOUT}
        assert {ident for ident, _ in waits} == {threading.get_ident()}
        assert not any(args[0] == conn.fileno() for calls in modifies for _, args in calls)


@pytest.mark.parametrize("how", ["timeout", "deadline"])
def test_write_timeout_fires_near_the_set_value_against_a_peer_that_never_reads(
    threads: ThreadRunner, kind: str, tmp_path: Path, how: str
):
    """TestConnectionTimeout/WriteTimeout and /WriteDeadline, direct (4 KiB socket buffers).

    Unlike a polled connection, nothing sends the queued bytes in the background after a
    write timeout: the next flush sends them first, in order.
    """
    with connection_pair(kind, tmp_path, peer_rcvbuf=4096, direct=True) as (conn, peer):
        set_sndbuf(conn, 4096)
        if how == "timeout":
            conn.set_write_timeout(0.05)
        else:  # a deadline that passed, then cleared: the next flush has no limit
            conn.set_write_deadline(time.monotonic())
            conn.set_deadline(None)
        assert conn.write(b"a" * 1024) == 1024  # fits in the socket buffers

        if how == "deadline":
            conn.set_write_deadline(time.monotonic() + 0.05)
        conn.malloc(MiB)[:] = b"b" * MiB
        started = time.monotonic()
        with pytest.raises(WriteTimeoutError) as info:
            conn.flush()
        assert_fired_near(time.monotonic() - started, 0.05)
        assert isinstance(info.value, TimeoutError)
        assert conn.is_active(), "a write timeout must not close the connection"
        assert 0 < len(conn.writer()) < MiB

        started = time.monotonic()  # the socket is still full: fails again
        with pytest.raises(WriteTimeoutError):
            conn.write(b"c")
        if how == "deadline":
            assert time.monotonic() - started < FAST
        else:
            assert_fired_near(time.monotonic() - started, 0.05)

        expected = b"a" * 1024 + b"b" * MiB + b"c" + b"tail"
        reader = threads.start(lambda: recv_exactly(peer, len(expected)), name="reader")
        conn.set_write_timeout(None)
        conn.set_deadline(None)
        conn.write(b"tail")  # sends what the timed-out flushes left, then its own bytes
        assert len(conn.writer()) == 0
        assert reader.result() == expected


def test_a_flush_and_a_read_can_wait_at_the_same_time(
    threads: ThreadRunner, kind: str, tmp_path: Path
):
    """Regression: a direct flush waiting for writability while another thread waited in a
    direct read raised RuntimeError("concurrent poll() invocation")."""
    payload = os.urandom(2 * MiB)
    with connection_pair(kind, tmp_path, peer_rcvbuf=4096, direct=True) as (conn, peer):
        set_sndbuf(conn, 4096)
        reply = threads.start(lambda: bytes(conn.next(4)), name="direct-reader")
        assert not reply.done.wait(0.03)

        def peer_reads_then_replies() -> bytes:
            got = recv_exactly(peer, len(payload))
            peer.sendall(b"done")
            return got

        peer_side = threads.start(peer_reads_then_replies, name="peer")
        assert conn.write(payload) == len(payload)
        assert peer_side.result() == payload
        assert reply.result() == b"done"


# ---------------------------------------------------------------------------- close


@pytest.mark.parametrize("limit", ["timeout", "deadline", "none"])
def test_close_wakes_a_blocked_direct_read_at_once(
    threads: ThreadRunner, direct_pair: Pair, limit: str
):
    """close() while another thread waits in a direct read: the reader sits in poll(2), which
    close() cannot interrupt, so close() shuts the socket down, which ends the wait at once
    with ConnectionClosedError, with or without a timeout; the peer sees EOF."""
    conn, peer = direct_pair
    if limit == "timeout":
        conn.set_read_timeout(5.0)
    elif limit == "deadline":
        conn.set_read_deadline(time.monotonic() + 5.0)
    call = threads.start(lambda: conn.next(10), name="direct-reader")
    assert not call.done.wait(0.05)

    closed_at = time.monotonic()
    conn.close()
    assert time.monotonic() - closed_at < FAST
    assert conn.closed
    assert not conn.is_active()
    assert call.done.wait(1.0), "close() did not wake the direct read"
    error = call.error()
    assert type(error) is ConnectionClosedError, f"the read ended with {error!r}"
    assert call.finished_at - closed_at < 0.2
    assert recv_until_eof(peer) == b""  # the peer sees EOF


def test_close_wakes_a_blocked_direct_flush_at_once(
    threads: ThreadRunner, kind: str, tmp_path: Path
):
    """The same for a flush waiting for a peer that does not read: close() ends it at once
    with ConnectionClosedError, well before its write timeout."""
    with connection_pair(kind, tmp_path, peer_rcvbuf=4096, direct=True) as (conn, peer):
        set_sndbuf(conn, 4096)
        conn.set_write_timeout(5.0)
        conn.write_binary(b"x" * 2 * MiB)
        flusher = threads.start(conn.flush, name="flusher")
        assert not flusher.done.wait(0.05), "the flush should wait for the peer"
        closed_at = time.monotonic()
        conn.close()
        assert flusher.done.wait(1.0), "close() did not wake the direct flush"
        assert type(flusher.error()) is ConnectionClosedError
        assert flusher.finished_at - closed_at < 0.2
        received = recv_until_eof(peer)
        assert received == b"x" * len(received)
        assert len(received) < 2 * MiB


def test_reads_and_flushes_after_close_raise_connection_closed(direct_pair: Pair):
    conn, peer = direct_pair
    peer.sendall(b"unread")
    conn.close()
    for call in (lambda: conn.next(1), lambda: conn.read(1), lambda: conn.wait_readable(1)):
        with pytest.raises(ConnectionClosedError):
            call()
    with pytest.raises(ConnectionClosedError):
        conn.write(b"x")
    assert not conn.is_active()


# ---------------------------------------------------------------------------- to the poller


def test_set_on_request_switches_a_direct_connection_to_the_poller(direct_pair: Pair):
    conn, peer = direct_pair
    before = registered()
    peer.sendall(b"early")
    assert conn.wait_readable(5) == 5  # received directly, not consumed

    got: list[bytes] = []
    handler_threads: set[int] = set()

    def echo(ctx: Any, c: Connection) -> None:
        handler_threads.add(threading.get_ident())
        data = c.read_binary(len(c.reader()))
        got.append(data)
        c.write(data)

    ran: list[Connection] = []
    conn.add_close_callback(ran.append)
    conn.set_on_request(echo)
    assert not conn.direct
    assert registered() == before + 1
    # Bytes already buffered go to the handler at once; later ones come through the poller.
    wait_until(lambda: b"".join(got) == b"early", message="the handler to get the early bytes")
    assert recv_exactly(peer, 5) == b"early"
    peer.sendall(b"later")
    wait_until(lambda: b"".join(got) == b"earlylater", message="the handler to get new bytes")
    assert recv_exactly(peer, 5) == b"later"
    assert threading.get_ident() not in handler_threads

    peer.close()  # polled semantics now: a hang-up runs the close callbacks
    wait_until(lambda: ran == [conn], message="the close callbacks after the peer's close")
    assert registered() == before


# ---------------------------------------------------------------------------- any thread


def test_a_direct_read_works_on_a_poller_thread(direct_pair: Pair):
    """A polled connection refuses a blocking read there (WouldBlockOnPollerError); a direct
    one has no poller to stall, so the guard does not apply."""
    conn, peer = direct_pair
    conn.set_read_timeout(IO_TIMEOUT)  # a failure must not hold the poller thread for long
    call = OnPoller(lambda: bytes(conn.next(6)))
    assert not call.done.wait(0.03)
    peer.sendall(b"polled")
    assert call.result() == b"polled"

    peer.sendall(b"line\n")
    assert OnPoller(lambda: bytes(conn.until(NEWLINE))).result() == b"line\n"


def test_a_polled_read_on_a_poller_thread_still_raises(tmp_path: Path):
    """The control for the test above."""
    with connection_pair("unix", tmp_path) as (conn, _peer):
        error = OnPoller(lambda: conn.next(1)).error()
        assert isinstance(error, WouldBlockOnPollerError)


def test_a_direct_flush_on_a_poller_thread_sends_everything_before_returning(
    threads: ThreadRunner, kind: str, tmp_path: Path
):
    """Regression: a direct flush on a poller thread returned as a polled one does ("the
    poller sends the rest"), but no poller watches a direct connection: the bytes that did not
    fit stayed in the output buffer until some later flush."""
    payload = os.urandom(4 * MiB)
    with connection_pair(kind, tmp_path, peer_rcvbuf=16384, direct=True) as (conn, peer):
        set_sndbuf(conn, 16384)
        conn.set_write_timeout(IO_TIMEOUT)  # a failure must not hold the poller thread for long
        reader = threads.start(lambda: recv_exactly(peer, len(payload)), name="reader")

        def flush_on_poller() -> int:
            conn.write_binary(payload)
            conn.flush()
            return len(conn.writer())

        assert OnPoller(flush_on_poller).result() == 0
        assert reader.result() == payload


def test_direct_reads_and_writes_work_on_any_thread(threads: ThreadRunner, direct_pair: Pair):
    conn, peer = direct_pair
    for i in range(4):
        peer.sendall(b"ping%d" % i)

        def exchange(i: int = i) -> bytes:
            got = bytes(conn.next(5))
            conn.write(b"pong%d" % i)
            return got

        assert threads.start(exchange, name=f"thread-{i}").result() == b"ping%d" % i
        assert recv_exactly(peer, 5) == b"pong%d" % i


# ---------------------------------------------------------------------------- with a server


def test_request_reply_round_trips_to_an_event_loop_server(serve: Callable[..., Server], kind: str):
    """The RPC client's pattern: write a request, flush, wait for the reply on this thread."""

    def echo(ctx: Any, conn: Connection) -> None:
        conn.write(conn.next(len(conn.reader())))

    server = serve(echo, network=kind)
    conn = dial_connection(kind, server.address, 2.0, direct=True)
    try:
        conn.set_read_timeout(IO_TIMEOUT)
        for i in range(200):
            request = os.urandom(1 + (i * 997) % 20000)
            conn.write(request)
            assert conn.next(len(request)) == request
            conn.release()
        assert conn.is_active()
    finally:
        conn.close()
