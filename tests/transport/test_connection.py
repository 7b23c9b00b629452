"""Connections on their own: blocking reads, timeouts, flush, close and detach.

Ports of netpoll's connection_test.go (test names in the docstrings). Each test runs over
loopback TCP, a Unix socket and a socket pair unless it needs one kind; the other end is a plain
blocking socket.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from transport_testutil import (
    FAST,
    IO_TIMEOUT,
    PAIR_KINDS,
    ThreadRunner,
    assert_fired_near,
    connection_pair,
    recv_exactly,
    recv_until_eof,
    set_sndbuf,
    sockopt,
    trickle,
    wait_until,
)

from rpcpoll.transport import (
    ConcurrentAccessError,
    Connection,
    ConnectionClosedError,
    ConnectionEOFError,
    LinkBuffer,
    ReadTimeoutError,
    TransportError,
    WriteTimeoutError,
)

NEWLINE = ord("\n")
MiB = 1024 * 1024

Pair = tuple[Connection, socket.socket]

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


# ---------------------------------------------------------------------------- blocking reads


def test_next_blocks_until_the_rest_of_a_half_packet_arrives(threads: ThreadRunner, pair: Pair):
    """TestConnectionWaitReadHalfPacket."""
    conn, peer = pair
    message = os.urandom(16 * 1024)
    half = len(message) // 2
    peer.sendall(message[:half])
    wait_until(lambda: len(conn.reader()) == half, message="the first half to be buffered")

    call = threads.start(lambda: bytes(conn.next(len(message))))
    assert not call.done.wait(0.05), "next() returned before the whole packet arrived"
    assert len(conn.reader()) == half, "a blocked next() must not consume anything"

    peer.sendall(message[half:])
    assert call.result() == message
    assert len(conn.reader()) == 0


def test_next_returns_exactly_the_requested_bytes_message_after_message(
    threads: ThreadRunner, any_pair: Pair
):
    """TestConnectionRead: 1000 writes of 256 bytes, 1000 next(256) calls."""
    conn, peer = any_pair
    messages = [bytes([i % 256]) * 256 for i in range(1000)]
    sender = threads.start(lambda: [peer.sendall(m) for m in messages])
    for expected in messages:
        got = conn.next(256)
        assert len(got) == 256
        assert bytes(got) == expected
        conn.release()
    sender.result()
    assert len(conn.reader()) == 0


@pytest.mark.parametrize(
    "method",
    ["next", "peek", "skip", "read_binary", "read_string", "read_byte", "slice", "until"],
)
def test_every_reader_method_blocks_until_its_bytes_arrive(
    threads: ThreadRunner, any_pair: Pair, method: str
):
    conn, peer = any_pair
    n = 1 if method == "read_byte" else 300
    data = b"".join(bytes([65 + i % 26]) for i in range(n - 1)) + b"\n"
    readers: dict[str, Any] = {
        "next": lambda: bytes(conn.next(n)),
        "peek": lambda: bytes(conn.peek(n)),
        "skip": lambda: conn.skip(n),
        "read_binary": lambda: conn.read_binary(n),
        "read_string": lambda: conn.read_string(n).encode(),
        "read_byte": lambda: bytes([conn.read_byte()]),
        "slice": lambda: bytes(conn.slice(n)),
        "until": lambda: bytes(conn.until(NEWLINE)),
    }
    if n > 1:
        peer.sendall(data[:-1])
        assert conn.wait_readable(n - 1) == n - 1  # all but the last byte buffered
    call = threads.start(readers[method])
    assert not call.done.wait(0.03), f"{method} returned before its last byte arrived"

    peer.sendall(data[-1:])
    result = call.result()
    if method == "skip":
        assert result is None
    else:
        assert result == data
    left = n if method == "peek" else 0
    assert len(conn.reader()) == left


def test_read_waits_for_one_byte_and_returns_at_most_what_is_buffered(
    threads: ThreadRunner, any_pair: Pair
):
    conn, peer = any_pair
    assert conn.read(0) == b""
    call = threads.start(lambda: conn.read(64))
    assert not call.done.wait(0.03), "read() returned with nothing buffered"
    data = bytes(range(100))
    peer.sendall(data)
    got = call.result()
    assert 1 <= len(got) <= 64
    assert got == data[: len(got)]
    assert conn.wait_readable(len(data) - len(got)) == len(data) - len(got)  # the rest
    assert conn.read(1000) == data[len(got) :]


def test_peeked_view_survives_a_read_until_release(pair: Pair):
    """TestConnectionIOReader: peek(16), then read(64) returns bytes 0..63."""
    conn, peer = pair
    peer.sendall(bytes(range(128)))
    wait_until(lambda: len(conn.reader()) == 128, message="128 bytes buffered")
    peeked = conn.peek(16)
    assert conn.read(64) == bytes(range(64))
    assert bytes(peeked) == bytes(range(16))
    conn.release()
    assert conn.read(64) == bytes(range(64, 128))


def test_a_message_larger_than_the_read_size_arrives_whole_at_every_size(
    threads: ThreadRunner, any_pair: Pair
):
    """TestBookSizeLargerThanMaxSize: messages of 4 MiB, 2 MiB, ... 1 byte, in order."""
    conn, peer = any_pair
    sizes = [4 * MiB >> i for i in range(23)]
    seed = os.urandom(1 << 16)
    messages = [(seed * (size // len(seed) + 1))[:size] for size in sizes]
    sender = threads.start(lambda: [peer.sendall(m) for m in messages])
    for message in messages:
        got = conn.next(len(message))
        assert len(got) == len(message)
        assert got == message
        del got
        conn.release()
    sender.result()


def test_bytes_sent_before_the_peer_closes_stay_readable(threads: ThreadRunner, any_pair: Pair):
    """TestConnectionReadAfterClosed: a blocked next(256), then the peer writes 256 and closes."""
    conn, peer = any_pair
    data = os.urandom(256)
    call = threads.start(lambda: bytes(conn.next(256)))
    peer.sendall(data)
    peer.close()
    assert call.result() == data
    with pytest.raises(ConnectionEOFError) as info:
        conn.next(1)
    assert isinstance(info.value, EOFError)
    assert isinstance(info.value, ConnectionClosedError)
    if conn.direct:  # the reading thread saw the close itself and finished the connection
        assert conn.closed
    assert not conn.is_active()


def test_bytes_buffered_when_the_hangup_is_seen_are_still_readable(pair: Pair):
    conn, peer = pair
    peer.sendall(b"last words")
    peer.close()
    wait_until(lambda: not conn.is_active(), message="the hang-up to be seen")
    assert conn.read_binary(10) == b"last words"
    with pytest.raises(ConnectionEOFError):
        conn.read_byte()


def test_until_returns_each_line_then_eof_with_the_rest_in_partial(
    threads: ThreadRunner, pair: Pair
):
    """TestConnectionUntil: lines of 501 bytes, then 100 bytes without a newline and EOF."""
    conn, peer = pair
    lines = [(b"%06d" % i).ljust(500, b".") + b"\n" for i in range(600)]
    sender = threads.start(lambda: peer.sendall(b"".join(lines)))
    for line in lines:
        got = conn.until(NEWLINE)
        assert len(got) == 501
        assert got == line
        conn.release()
    sender.result()

    peer.sendall(b"x" * 100)
    peer.close()
    with pytest.raises(ConnectionEOFError) as info:
        conn.until(NEWLINE)
    assert info.value.partial == b"x" * 100
    assert len(conn.reader()) == 0


def test_reads_after_close_raise_connection_closed(pair: Pair):
    conn, _peer = pair
    conn.close()
    for read in (lambda: conn.next(1), lambda: conn.peek(1), lambda: conn.read(1)):
        with pytest.raises(ConnectionClosedError):
            read()


def test_close_wakes_a_blocked_reader(threads: ThreadRunner, pair: Pair):
    conn, _peer = pair
    call = threads.start(lambda: conn.next(10))
    assert not call.done.wait(0.03)
    started = time.monotonic()
    conn.close()
    assert isinstance(call.error(), ConnectionClosedError)
    assert call.finished_at - started < 0.1


# ---------------------------------------------------------------------------- timeouts


def _slow_reader(peer: socket.socket, stop: threading.Event, size: int, every: float) -> int:
    """A slow peer: receive up to `size` bytes every `every` seconds until stopped."""
    total = 0
    peer.settimeout(every)
    while not stop.is_set():
        try:
            chunk = peer.recv(size)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
        stop.wait(every)
    return total


@pytest.mark.parametrize("kind", PAIR_KINDS)
@pytest.mark.parametrize("how", ["timeout", "deadline"])
def test_read_timeout_fires_near_the_set_value_with_a_slow_peer(
    threads: ThreadRunner, tmp_path: Path, kind: str, how: str
):
    """TestConnectionTimeout/ReadTimeout and /ReadDeadline."""
    stop = threading.Event()
    with connection_pair(kind, tmp_path) as (conn, peer):
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
                    conn.next(10 * 1024)
                assert time.monotonic() - started < FAST
        finally:
            stop.set()

        # The trickled bytes were kept; clearing the limit lets a read wait for more.
        conn.set_deadline(None)
        conn.set_read_timeout(None)
        have = len(conn.reader())
        peer.sendall(b"t" * 10)
        assert len(conn.next(have + 10)) == have + 10


def test_a_read_deadline_in_the_past_fails_at_once_and_clearing_it_restores_reads(
    any_pair: Pair,
):
    conn, peer = any_pair
    conn.set_read_deadline(time.monotonic())
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        conn.next(1)
    assert time.monotonic() - started < FAST
    conn.set_deadline(None)
    peer.sendall(b"ok")
    assert conn.next(2) == b"ok"


def test_set_read_timeout_clears_the_read_deadline(pair: Pair):
    conn, peer = pair
    conn.set_read_deadline(time.monotonic() - 1)
    conn.set_read_timeout(1.0)
    peer.sendall(b"ok")
    assert conn.next(2) == b"ok"


@pytest.mark.parametrize("kind", PAIR_KINDS)
@pytest.mark.parametrize("how", ["timeout", "deadline"])
def test_write_timeout_fires_near_the_set_value_with_small_buffers_and_a_slow_reader(
    threads: ThreadRunner, tmp_path: Path, kind: str, how: str
):
    """TestConnectionTimeout/WriteTimeout and /WriteDeadline: SO_SNDBUF/SO_RCVBUF 4 KiB."""
    stop = threading.Event()
    with connection_pair(kind, tmp_path, peer_rcvbuf=4096) as (conn, peer):
        set_sndbuf(conn, 4096)
        reader = threads.start(lambda: _slow_reader(peer, stop, 1024, 0.005), name="slow-reader")
        try:
            if how == "timeout":
                conn.set_write_timeout(0.05)
            else:  # a deadline that passed, then cleared: the next flush has no limit
                conn.set_write_deadline(time.monotonic())
                conn.set_deadline(None)
            assert conn.write(b"w" * 1024) == 1024  # fits in the socket buffers

            if how == "deadline":
                conn.set_write_deadline(time.monotonic() + 0.05)
            conn.malloc(MiB)[:] = b"w" * MiB
            started = time.monotonic()
            with pytest.raises(WriteTimeoutError) as info:
                conn.flush()
            assert_fired_near(time.monotonic() - started, 0.05)
            assert isinstance(info.value, TimeoutError)
            assert conn.is_active(), "a write timeout must not close the connection"

            started = time.monotonic()  # the socket is still full: fails again
            with pytest.raises(WriteTimeoutError):
                conn.write(b"!")
            if how == "deadline":
                assert time.monotonic() - started < FAST
            else:
                assert_fired_near(time.monotonic() - started, 0.05)
        finally:
            stop.set()
        conn.close()
        assert reader.result() >= 1024


def test_bytes_queued_by_a_timed_out_flush_keep_draining_and_arrive_in_order(
    threads: ThreadRunner, tmp_path: Path
):
    with connection_pair("tcp", tmp_path, peer_rcvbuf=4096) as (conn, peer):
        set_sndbuf(conn, 4096)
        payload = os.urandom(512 * 1024)
        conn.set_write_timeout(0.02)
        with pytest.raises(WriteTimeoutError):
            conn.write(payload)
        conn.set_write_timeout(None)
        reader = threads.start(lambda: recv_exactly(peer, len(payload) + 4))
        conn.write(b"tail")  # waits until the queued bytes and these are in the kernel
        assert reader.result() == payload + b"tail"


def test_a_flush_retried_after_a_write_timeout_sends_bytes_written_while_the_poller_drains(
    threads: ThreadRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Regression: a flush that starts while the poller is finishing the drain of an earlier
    (timed-out) flush must not return with its own bytes left unsent.

    The poller is held between its last look at the output buffer and clearing the "draining"
    state while the retried flush commits its bytes and starts waiting.
    """
    with connection_pair("tcp", tmp_path, peer_rcvbuf=4096) as (conn, peer):
        set_sndbuf(conn, 4096)
        payload = b"p" * (256 * 1024)
        conn.set_write_timeout(0.02)
        with pytest.raises(WriteTimeoutError):
            conn.write(payload)
        conn.set_write_timeout(None)

        poller = conn._poller
        modify = poller.modify
        about_to_finish, flusher_waiting = threading.Event(), threading.Event()

        def held_modify(fd: int, write: bool) -> None:
            if fd == conn.fileno() and not write and poller.in_poller_thread():
                about_to_finish.set()  # the drain found the buffer empty
                flusher_waiting.wait(IO_TIMEOUT)
            modify(fd, write)

        wait_drained = conn._wait_drained

        def announced_wait(*args: Any) -> None:
            flusher_waiting.set()
            wait_drained(*args)

        monkeypatch.setattr(poller, "modify", held_modify)
        monkeypatch.setattr(conn, "_wait_drained", announced_wait)

        reader = threads.start(lambda: recv_exactly(peer, len(payload) + 4))
        assert about_to_finish.wait(IO_TIMEOUT)
        conn.write(b"tail")
        monkeypatch.undo()
        assert reader.result() == payload + b"tail"


# ---------------------------------------------------------------------------- writes


def test_every_write_is_delivered_in_order(threads: ThreadRunner, pair: Pair):
    """TestConnectionWrite: many write(256) calls each return 256; the peer gets them all."""
    conn, peer = pair
    messages = [bytes([i % 256]) * 256 for i in range(2000)]
    reader = threads.start(lambda: recv_exactly(peer, 256 * len(messages)))
    for message in messages:
        assert conn.write(message) == 256
    assert reader.result() == b"".join(messages)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("how", ["malloc", "write_binary"])
def test_multi_mebibyte_flushes_arrive_intact_at_a_slow_reader(
    threads: ThreadRunner, tmp_path: Path, kind: str, how: str
):
    """TestLargeBufferWrite: 2 MiB flushes against a reader behind 16 KiB socket buffers."""
    blocks = [os.urandom(2 * MiB) for _ in range(3)]
    expected = hashlib.sha256(b"".join(blocks)).hexdigest()
    with connection_pair(kind, tmp_path, peer_rcvbuf=16384) as (conn, peer):
        set_sndbuf(conn, 16384)

        def read_all() -> str:
            digest, left = hashlib.sha256(), 6 * MiB
            while left:
                chunk = peer.recv(min(left, 32768))
                assert chunk, "EOF before every byte arrived"
                digest.update(chunk)
                left -= len(chunk)
            return digest.hexdigest()

        reader = threads.start(read_all)
        for block in blocks:
            if how == "malloc":
                conn.malloc(len(block))[:] = block
            else:
                conn.write_binary(block)  # linked, not copied
            conn.flush()
        assert reader.result(10) == expected


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_close_while_a_flush_is_blocked_returns_and_the_flush_raises_promptly(
    threads: ThreadRunner, tmp_path: Path, kind: str
):
    """TestLargeBufferWrite: Close() while a flush waits for a peer that does not read."""
    with connection_pair(kind, tmp_path, peer_rcvbuf=4096) as (conn, peer):
        set_sndbuf(conn, 4096)
        conn.write_binary(b"x" * 2 * MiB)
        flusher = threads.start(conn.flush, name="flusher")
        assert not flusher.done.wait(0.05), "the flush should wait for the peer"

        started = time.monotonic()
        conn.close()
        assert time.monotonic() - started < 0.1
        assert isinstance(flusher.error(), ConnectionClosedError)
        assert flusher.finished_at - started < 0.1
        received = recv_until_eof(peer)  # the socket is closed once the flush let go of it
        assert len(received) < 2 * MiB
        assert received == b"x" * len(received)


def test_a_second_concurrent_flush_raises_concurrent_access(threads: ThreadRunner, tmp_path: Path):
    with connection_pair("unix", tmp_path, peer_rcvbuf=4096) as (conn, _peer):
        set_sndbuf(conn, 4096)
        conn.write_binary(b"x" * MiB)
        flusher = threads.start(conn.flush, name="flusher")
        assert not flusher.done.wait(0.03)
        with pytest.raises(ConcurrentAccessError):
            conn.flush()
        conn.close()
        assert isinstance(flusher.error(), ConnectionClosedError)


def _writer_calls(target: Any, on_connection: bool) -> dict[str, Any]:
    source = LinkBuffer()
    source.write_binary(b"linked")
    source.flush()
    calls: dict[str, Any] = {
        "malloc": lambda: target.malloc(8),
        "malloc_ack": lambda: target.malloc_ack(0),
        "write_binary": lambda: target.write_binary(b"abc"),
        "write_binary_large": lambda: target.write_binary(bytes(10000)),
        "write_string": lambda: target.write_string("abc"),
        "write_byte": lambda: target.write_byte(7),
        "write_direct": lambda: target.write_direct(b"abc", 0),
        "write_buffer": lambda: target.write_buffer(source),
        "append": lambda: target.append(source),
        "flush": lambda: target.flush(),
    }
    if on_connection:
        calls["write"] = lambda: target.write(b"abc")
    return calls


@pytest.mark.parametrize("target", ["connection", "writer"])
@pytest.mark.parametrize("closed_by", ["self", "peer"])
def test_every_writer_method_raises_connection_closed_after_close(
    pair: Pair, target: str, closed_by: str
):
    """TestWriterAfterClose (on the connection and on conn.writer()), TestServerReadAndClose."""
    conn, peer = pair
    writer = conn if target == "connection" else conn.writer()
    assert conn.write(b"before") == 6
    assert recv_exactly(peer, 6) == b"before"
    if closed_by == "self":
        conn.close()
        conn.close()  # idempotent
    else:
        peer.close()
        wait_until(lambda: not conn.is_active(), message="the hang-up to be seen")

    for name, call in _writer_calls(writer, target == "connection").items():
        with pytest.raises(ConnectionClosedError):
            call()
            pytest.fail(f"{name} did not raise")
    if closed_by == "self":
        assert recv_until_eof(peer) == b"", "a write after close reached the peer"


def test_bytes_written_but_not_flushed_before_close_are_never_sent(pair: Pair):
    conn, peer = pair
    conn.write_binary(b"unflushed")
    conn.close()
    assert recv_until_eof(peer) == b""


# ---------------------------------------------------------------------------- lifecycle


def test_close_callbacks_run_once_last_added_first_and_a_failing_one_is_logged(
    pair: Pair, caplog: pytest.LogCaptureFixture
):
    conn, _ = pair
    order: list[Any] = []
    conn.add_close_callback(lambda c: order.append((1, c)))
    conn.add_close_callback(lambda c: 1 / 0)
    conn.add_close_callback(lambda c: order.append((3, c)))
    conn.close()
    conn.close()
    wait_until(lambda: len(order) == 2, message="the close callbacks")
    assert order == [(3, conn), (1, conn)]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    with pytest.raises(ConnectionClosedError):
        conn.add_close_callback(order.append)


def test_a_dialed_connection_without_handlers_runs_its_callbacks_at_close_not_at_hangup(
    pair: Pair,
):
    """netpoll: with neither OnRequest nor OnConnect, CloseCallbacks run at the user's Close."""
    conn, peer = pair
    ran: list[Connection] = []
    conn.add_close_callback(ran.append)
    peer.close()
    wait_until(lambda: not conn.is_active(), message="the hang-up to be seen")
    assert ran == []
    conn.close()
    assert ran == [conn]


def test_set_on_request_runs_at_once_when_input_is_already_buffered(pair: Pair):
    conn, peer = pair
    peer.sendall(b"hello")
    wait_until(lambda: len(conn.reader()) == 5, message="5 bytes buffered")
    got: list[bytes] = []
    conn.set_on_request(None)  # ignored, as in netpoll
    conn.set_on_request(lambda ctx, c: got.append(bytes(c.next(len(c.reader())))))
    wait_until(lambda: got, message="on_request to run")
    assert got == [b"hello"]


def test_a_dialed_connection_with_on_request_runs_its_close_callbacks_on_peer_close(pair: Pair):
    conn, peer = pair
    ran: list[Connection] = []
    conn.set_on_request(lambda ctx, c: c.skip(len(c.reader())))
    conn.add_close_callback(ran.append)
    peer.sendall(b"bye")
    peer.close()
    wait_until(lambda: ran == [conn], message="the close callback")


def test_detach_returns_a_working_blocking_socket(pair: Pair):
    """TestConnDetach."""
    conn, peer = pair
    conn.write(b"ping")
    assert recv_exactly(peer, 4) == b"ping"
    ran: list[Connection] = []
    conn.add_close_callback(ran.append)

    sock = conn.detach()
    try:
        assert not conn.is_active()
        wait_until(lambda: ran == [conn], message="the close callbacks")
        assert sock.getblocking()
        sock.sendall(b"hello")
        assert recv_exactly(peer, 5) == b"hello"
        peer.sendall(b"world")
        sock.settimeout(IO_TIMEOUT)
        assert recv_exactly(sock, 5) == b"world"
        conn.close()  # later close is harmless and does not touch the socket
        with pytest.raises(ConnectionClosedError):
            conn.write(b"x")
        sock.sendall(b"still")
        assert recv_exactly(peer, 5) == b"still"
    finally:
        sock.close()


def test_is_active_turns_false_after_close_and_after_peer_close(pair: Pair, tmp_path: Path):
    conn, peer = pair
    assert conn.is_active()
    peer.close()
    wait_until(lambda: not conn.is_active(), message="the hang-up to be seen")
    with connection_pair("socketpair", tmp_path) as (other, _):
        assert other.is_active()
        other.close()
        assert not other.is_active()


# ---------------------------------------------------------------------------- socket options


def test_tcp_connections_have_tcp_nodelay_on(tmp_path: Path):
    """TestSetTCPNoDelay."""
    with connection_pair("tcp", tmp_path) as (conn, _):
        assert sockopt(conn, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_set_idle_timeout_sets_tcp_keepalive_in_whole_seconds(tmp_path: Path):
    with connection_pair("tcp", tmp_path) as (conn, _):
        assert sockopt(conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        conn.set_idle_timeout(0.5)  # below one second: netpoll does nothing
        assert sockopt(conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        conn.set_idle_timeout(2.7)
        assert sockopt(conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sockopt(conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
        assert sockopt(conn, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        assert conn.is_active()


def test_close_idle_closes_a_connection_without_traffic(pair: Pair):
    conn, peer = pair
    started = time.monotonic()
    conn.set_idle_timeout(0.1, close_idle=True)
    assert recv_until_eof(peer) == b""
    assert_fired_near(time.monotonic() - started, 0.1)
    assert not conn.is_active()


def test_traffic_postpones_the_idle_close(pair: Pair):
    conn, peer = pair
    conn.set_idle_timeout(0.15, close_idle=True)
    started = time.monotonic()
    for _ in range(6):  # a byte every 50 ms for 300 ms: never idle for 150 ms
        time.sleep(0.05)
        peer.sendall(b".")
    assert conn.is_active()
    last = time.monotonic()
    assert recv_until_eof(peer) == b""
    assert time.monotonic() - started > 0.3
    assert_fired_near(time.monotonic() - last, 0.15)


def test_transport_errors_share_one_root():
    for error in (ConnectionClosedError, ReadTimeoutError, WriteTimeoutError, ConnectionEOFError):
        assert issubclass(error, TransportError)
