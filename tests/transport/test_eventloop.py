"""The server EventLoop: callback order, shutdown, handler failures, accept back-off.

Ports of netpoll's netpoll_unix_test.go and the server tests of connection_test.go.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from transport_testutil import (
    IO_TIMEOUT,
    Clients,
    Server,
    ThreadRunner,
    recv_exactly,
    recv_until_eof,
    sockopt,
    wait_until,
)

from rpcpoll.transport import (
    Connection,
    ConnectionClosedError,
    ConnectionEOFError,
    DialRefusedError,
    EventLoop,
    Listener,
    ReadTimeoutError,
    WouldBlockOnPollerError,
    dial_connection,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


def echo(ctx: Any, conn: Connection) -> None:
    conn.write(conn.next(len(conn.reader())))


def check_echo(conn: Connection, data: bytes) -> None:
    conn.write(data)
    assert conn.read_binary(len(data)) == data


class Recorder:
    """Thread-safe per-connection event log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[Connection, list[Any]] = defaultdict(list)

    def __call__(self, conn: Connection, event: Any) -> None:
        with self.lock:
            self.events[conn].append(event)

    def snapshot(self) -> dict[Connection, list[Any]]:
        with self.lock:
            return {conn: list(events) for conn, events in self.events.items()}

    def count(self, event: Any) -> int:
        with self.lock:
            return sum(events.count(event) for events in self.events.values())


# ---------------------------------------------------------------------------- callback order


def test_callbacks_run_once_in_order_and_on_connect_sees_the_prepare_context(
    serve: Any, clients: Clients
):
    """TestConnectionServerClose: 10 ping/pong exchanges; the server closes in on_request."""
    server_log, client_log = Recorder(), Recorder()

    def on_prepare(conn: Connection) -> Any:
        server_log(conn, "prepare")
        conn.add_close_callback(lambda c: server_log(c, "close"))
        return {"prepared": id(conn)}

    def on_connect(ctx: Any, conn: Connection) -> Any:
        server_log(conn, ("connect", ctx == {"prepared": id(conn)}))
        conn.write(b"ping")
        return {**ctx, "connected": True}

    def on_request(ctx: Any, conn: Connection) -> None:
        server_log(conn, ("request", ctx.get("connected"), conn.read_binary(4)))
        conn.close()

    def on_disconnect(ctx: Any, conn: Connection) -> None:
        server_log(conn, "disconnect")

    def client_on_request(ctx: Any, conn: Connection) -> None:
        client_log(conn, ("request", conn.read_binary(4)))
        conn.write(b"pong")
        try:
            conn.next(1)
        except ConnectionEOFError:
            client_log(conn, "eof")

    server = serve(on_request, on_prepare=on_prepare, on_connect=on_connect,
                   on_disconnect=on_disconnect)  # fmt: skip
    for _ in range(10):
        conn = clients.dial(server)
        conn.set_on_request(client_on_request)
        conn.add_close_callback(lambda c: client_log(c, "close"))

    wait_until(lambda: server_log.count("close") == 10, message="10 server close callbacks")
    wait_until(lambda: client_log.count("close") == 10, message="10 client close callbacks")
    server_events = server_log.snapshot()
    assert len(server_events) == 10
    for events in server_events.values():
        assert events == ["prepare", ("connect", True), ("request", True, b"pong"), "close"]
    client_events = client_log.snapshot()
    assert len(client_events) == 10
    for events in client_events.values():
        assert events == [("request", b"ping"), "eof", "close"]
    wait_until(lambda: not server.loop.connections(), message="the server to forget them")


def test_on_disconnect_runs_once_per_peer_close_while_on_request_still_drains(
    serve: Any, clients: Clients
):
    """TestOnDisconnect: 100 clients send "ping" and close. on_disconnect "cancels" the
    context that on_connect made, while on_request (still running) waits for that."""
    log = Recorder()

    def on_connect(ctx: Any, conn: Connection) -> Any:
        log(conn, "connect")
        conn.add_close_callback(lambda c: log(c, "close"))
        return {"cancelled": threading.Event()}

    def on_request(ctx: Any, conn: Connection) -> None:
        data = conn.read_binary(4)
        log(conn, ("request", data, ctx["cancelled"].wait(IO_TIMEOUT)))

    def on_disconnect(ctx: Any, conn: Connection) -> None:
        log(conn, "disconnect")
        ctx["cancelled"].set()

    server = serve(on_request, on_connect=on_connect, on_disconnect=on_disconnect)
    for _ in range(100):
        sock = clients.raw(server)
        sock.sendall(b"ping")
        sock.close()

    wait_until(lambda: log.count("close") == 100, timeout=10, message="100 close callbacks")
    events = log.snapshot()
    assert len(events) == 100
    for conn_events in events.values():
        assert conn_events[0] == "connect"
        assert conn_events.count("disconnect") == 1
        assert conn_events.count(("request", b"ping", True)) == 1
        assert conn_events[-1] == "close"
        assert len(conn_events) == 4


def test_on_disconnect_waits_for_on_connect_when_the_client_closes_during_it(
    serve: Any, clients: Clients
):
    """TestOnDisconnectWhenOnConnect: prepare -> connect -> disconnect, each exactly once, and
    on_disconnect sees the context on_connect returned."""
    steps: list[Any] = []
    entered_connect = threading.Event()

    def on_prepare(conn: Connection) -> Any:
        steps.append("prepare")
        conn.add_close_callback(lambda c: steps.append("close"))
        return "prepared"

    def on_connect(ctx: Any, conn: Connection) -> Any:
        steps.append(("connect", ctx))
        entered_connect.set()
        deadline = time.monotonic() + IO_TIMEOUT  # the client closes meanwhile
        while conn.is_active() and time.monotonic() < deadline:
            time.sleep(0.002)
        steps.append(("connect returns", conn.is_active()))
        return "connected"

    def on_disconnect(ctx: Any, conn: Connection) -> None:
        steps.append(("disconnect", ctx))

    server = serve(echo, on_prepare=on_prepare, on_connect=on_connect,
                   on_disconnect=on_disconnect)  # fmt: skip
    sock = clients.raw(server)
    assert entered_connect.wait(IO_TIMEOUT)
    sock.close()
    wait_until(lambda: "close" in steps, message="the close callback")
    assert steps == [
        "prepare",
        ("connect", "prepared"),
        ("connect returns", False),
        ("disconnect", "connected"),
        "close",
    ]


def test_a_close_callback_added_in_on_request_fires_when_the_client_closes(
    serve: Any, clients: Clients
):
    """TestCloseCallbackWhenOnRequest."""
    fired: list[Connection] = []

    def on_request(ctx: Any, conn: Connection) -> None:
        conn.skip(len(conn.reader()))
        if not fired and conn.is_active():
            conn.add_close_callback(fired.append)

    server = serve(on_request)
    sock = clients.raw(server)
    sock.sendall(b"hello")
    wait_until(lambda: server.loop.connections(), message="the connection")
    (conn,) = server.loop.connections()
    wait_until(lambda: len(conn.reader()) == 0, message="the request to be handled")
    assert fired == []
    sock.close()
    wait_until(lambda: fired == [conn], message="the close callback")


def test_a_close_callback_added_in_on_connect_fires_without_on_request(
    serve: Any, clients: Clients
):
    """TestCloseCallbackWhenOnConnect: on_request is None."""
    fired: list[Connection] = []
    server = serve(None, on_connect=lambda ctx, conn: conn.add_close_callback(fired.append))
    sock = clients.raw(server)
    sock.sendall(b"unread")
    wait_until(lambda: server.loop.connections(), message="the connection")
    assert fired == []
    sock.close()
    wait_until(lambda: len(fired) == 1, message="the close callback")
    assert not server.loop.connections()


def test_the_server_closing_in_on_connect_gives_the_client_eof(serve: Any, clients: Clients):
    """TestCloseConnWhenOnConnect."""
    server = serve(echo, on_connect=lambda ctx, conn: conn.close())
    conn = clients.dial(server)
    with pytest.raises(ConnectionEOFError):
        conn.next(1)
    conn.close()
    assert not conn.is_active()


def test_the_whole_server_logic_can_run_in_on_connect(serve: Any, clients: Clients):
    """TestOnConnect: on_connect loops next(4) "ping" -> "pong" until the client closes."""
    results: list[Any] = []

    def on_connect(ctx: Any, conn: Connection) -> Any:
        rounds = 0
        try:
            while True:
                if conn.read_binary(4) != b"ping":
                    results.append("bad ping")
                    return ctx
                conn.write(b"pong")
                rounds += 1
        except ConnectionClosedError as exc:
            results.append((rounds, type(exc)))
        return ctx

    server = serve(None, on_connect=on_connect)
    conn = clients.dial(server)
    for _ in range(300):
        conn.write(b"ping")
        assert conn.read_binary(4) == b"pong"
    conn.close()
    wait_until(lambda: results, message="on_connect to return")
    assert results == [(300, ConnectionEOFError)]
    assert server.loop.shutdown(1.0) is True


def test_on_connect_can_write_before_any_request(serve: Any, clients: Clients):
    """TestOnConnectWrite."""

    def greet(ctx: Any, conn: Connection) -> Any:
        conn.write(b"hello")
        return ctx

    server = serve(echo, on_connect=greet)
    conn = clients.dial(server)
    assert conn.read_string(5) == "hello"
    check_echo(conn, b"and then echo")


def test_set_on_request_inside_on_connect_replaces_the_handler(serve: Any, clients: Clients):
    """netpoll #421: a handler set in on_connect must be the one that runs."""
    calls: list[str] = []

    def replaced(ctx: Any, conn: Connection) -> None:
        calls.append("replaced")
        echo(ctx, conn)

    def original(ctx: Any, conn: Connection) -> None:
        calls.append("original")
        echo(ctx, conn)

    def on_connect(ctx: Any, conn: Connection) -> Any:
        conn.set_on_request(replaced)
        return ctx

    server = serve(original, on_connect=on_connect)
    conn = clients.dial(server)
    check_echo(conn, b"abc")
    assert set(calls) == {"replaced"}


# ---------------------------------------------------------------------------- request loop


def test_on_request_never_runs_twice_at_once_and_reruns_while_input_remains(
    serve: Any, clients: Clients
):
    active, seen = [0], bytearray()
    overlap: list[int] = []
    lock = threading.Lock()

    def one_byte_at_a_time(ctx: Any, conn: Connection) -> None:
        with lock:
            active[0] += 1
            if active[0] > 1:
                overlap.append(active[0])
        seen.append(conn.read_byte())
        time.sleep(0.0005)
        with lock:
            active[0] -= 1

    server = serve(one_byte_at_a_time)
    sock = clients.raw(server)
    payload = bytes(range(200))
    for i in range(0, 200, 10):
        sock.sendall(payload[i : i + 10])
    wait_until(lambda: len(seen) == 200, message="every byte consumed")
    assert bytes(seen) == payload
    assert overlap == []


def test_a_handler_that_consumes_nothing_is_not_called_again_until_more_bytes_arrive(
    serve: Any, clients: Clients
):
    calls: list[int] = []
    frames: list[bytes] = []

    def eight_byte_frames(ctx: Any, conn: Connection) -> None:
        calls.append(len(conn.reader()))
        while len(conn.reader()) >= 8:
            frames.append(conn.read_binary(8))

    server = serve(eight_byte_frames)
    sock = clients.raw(server)
    sock.sendall(b"half")
    wait_until(lambda: calls, message="the first call")
    time.sleep(0.05)  # a spinning loop would call it thousands of times meanwhile
    assert len(calls) <= 2
    sock.sendall(b"full")
    wait_until(lambda: frames == [b"halffull"], message="the frame")


def test_the_read_timeout_option_limits_blocking_reads_in_handlers(serve: Any, clients: Clients):
    outcome: list[Any] = []

    def on_request(ctx: Any, conn: Connection) -> None:
        started = time.monotonic()
        try:
            conn.next(100)
        except ReadTimeoutError:
            outcome.append(time.monotonic() - started)
        conn.close()

    server = serve(on_request, read_timeout=0.05)
    sock = clients.raw(server)
    sock.sendall(b"only a few bytes")
    wait_until(lambda: outcome, message="the read timeout")
    assert 0.045 <= outcome[0] <= 0.11
    assert recv_until_eof(sock) == b""


def test_accepted_tcp_connections_have_tcp_nodelay_on(serve: Any, clients: Clients):
    nodelay: list[int] = []

    def on_prepare(conn: Connection) -> None:
        nodelay.append(sockopt(conn, socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = serve(echo, on_prepare=on_prepare)
    check_echo(clients.dial(server), b"x")
    assert nodelay == [1]


def test_the_idle_timeout_option_closes_idle_connections(serve: Any, clients: Clients):
    server = serve(echo, idle_timeout=0.1, close_idle=True)
    sock = clients.raw(server)
    started = time.monotonic()
    sock.sendall(b"hi")
    assert recv_exactly(sock, 2) == b"hi"
    assert recv_until_eof(sock) == b""
    assert 0.095 <= time.monotonic() - started <= 0.2
    wait_until(lambda: not server.loop.connections(), message="the server to forget it")


# ---------------------------------------------------------------------------- many clients


@pytest.mark.parametrize(("count", "size"), [(100, 1024), (10, 5000)])
@pytest.mark.parametrize("network", ["tcp", "unix"])
def test_clients_writing_and_closing_at_once_lose_no_byte(
    serve: Any, count: int, size: int, network: str
):
    """TestParallelShortConnection (100 x 1 KiB) and TestClientWriteAndClose (10 x 5000)."""
    received: list[bytes] = []
    lock = threading.Lock()

    def collect(ctx: Any, conn: Connection) -> None:
        ctx += conn.next(len(conn.reader()))

    def on_prepare(conn: Connection) -> bytearray:
        buffer = bytearray()

        def done(c: Connection) -> None:
            with lock:
                received.append(bytes(buffer))

        conn.add_close_callback(done)
        return buffer

    server = serve(collect, on_prepare=on_prepare, network=network)
    barrier = threading.Barrier(count)
    payloads = [bytes([i]) * size for i in range(count)]
    failures: list[BaseException] = []

    def client(payload: bytes) -> None:
        try:
            conn = dial_connection(network, server.address, timeout=IO_TIMEOUT)
            try:
                barrier.wait(IO_TIMEOUT)
                conn.write(payload)
            finally:
                conn.close()
        except BaseException as exc:
            failures.append(exc)

    started = time.monotonic()
    writers = [threading.Thread(target=client, args=(p,), name="writer") for p in payloads]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(IO_TIMEOUT)
    assert failures == []
    wait_until(lambda: len(received) == count, timeout=5, message=f"{count} connections closed")
    assert sorted(received) == sorted(payloads)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------- shutdown


def test_shutdown_closes_an_idle_connection_and_returns_true(serve: Any, clients: Clients):
    """TestGracefulExit, case 1."""
    server: Server = serve(echo)
    conn = clients.dial(server)
    check_echo(conn, b"idle soon")
    assert server.loop.shutdown(1.0) is True
    with pytest.raises(ConnectionEOFError):
        conn.next(1)
    server.thread.join(IO_TIMEOUT)
    assert not server.thread.is_alive(), "serve() must return after shutdown"
    with pytest.raises(DialRefusedError):
        dial_connection("tcp", server.address, timeout=1.0)


def test_shutdown_returns_false_while_handlers_are_blocked_and_true_once_idle(
    serve: Any, clients: Clients
):
    """TestGracefulExit, case 2: 10 handlers blocked; shutdown(0.1) is False, then True."""
    release = threading.Event()
    entered: list[Connection] = []

    def blocked(ctx: Any, conn: Connection) -> None:
        entered.append(conn)
        release.wait(IO_TIMEOUT)
        conn.skip(len(conn.reader()))

    server: Server = serve(blocked)
    socks = [clients.raw(server) for _ in range(10)]
    for sock in socks:
        sock.sendall(b"x")
    wait_until(lambda: len(entered) == 10, message="10 handlers blocked")

    started = time.monotonic()
    assert server.loop.shutdown(0.1) is False
    assert 0.095 <= time.monotonic() - started <= 0.2
    assert all(conn.is_active() for conn in entered), "busy connections must stay open"
    server.thread.join(IO_TIMEOUT)
    assert not server.thread.is_alive(), "serve() returns even when shutdown timed out"

    release.set()
    assert server.loop.shutdown(2.0) is True
    for sock in socks:
        assert recv_until_eof(sock) == b""


def test_shutdown_waits_for_handlers_still_reading_their_requests(
    serve: Any, clients: Clients, threads: ThreadRunner
):
    """TestGracefulExit, case 3: 10 connections, half sent a 16-byte request whose handler
    next(16) is still waiting for its second half when shutdown starts."""
    entered, finished = [], []

    def on_request(ctx: Any, conn: Connection) -> None:
        entered.append(conn)
        finished.append(conn.read_binary(16))

    server: Server = serve(on_request)
    socks = [clients.raw(server) for _ in range(10)]
    wait_until(lambda: len(server.loop.connections()) == 10, message="10 connections")
    for sock in socks[:5]:
        sock.sendall(b"8 bytes.")
    wait_until(lambda: len(entered) == 5, message="5 handlers waiting for their next 8 bytes")

    shutdown = threads.start(lambda: server.loop.shutdown(5.0), name="shutdown")
    wait_until(
        lambda: sum(conn.is_active() for conn in server.loop.connections()) == 5,
        message="the 5 idle connections to be closed",
    )
    assert not shutdown.done.is_set()
    for sock in socks[:5]:
        sock.sendall(b"+8 more.")
    assert shutdown.result() is True
    assert finished == [b"8 bytes.+8 more."] * 5


def test_shutdown_says_goodbye_to_an_idle_connection_and_drops_what_crosses_it_unread(
    serve: Any, clients: Clients, threads: ThreadRunner
):
    """With `goodbye`, an idle connection is closed in two halves: the goodbye and a FIN,
    then the close once the peer closes. A request the peer wrote before it read the goodbye
    (it crossed on the wire) reaches no handler, and nothing is reset under the peer."""
    handled: list[bytes] = []

    def on_request(ctx: Any, conn: Connection) -> None:
        data = conn.read_binary(len(conn.reader()))
        handled.append(data)
        conn.write(data)
        conn.flush()

    server: Server = serve(on_request, goodbye=b"BYE!", goodbye_grace=10.0)
    sock = clients.raw(server)
    sock.sendall(b"ping")
    assert recv_exactly(sock, 4) == b"ping"

    shutdown = threads.start(lambda: server.loop.shutdown(20.0), name="shutdown")
    assert recv_until_eof(sock) == b"BYE!"  # the goodbye, then the server's FIN
    sock.sendall(b"crossed")  # as if written before the goodbye arrived
    time.sleep(0.1)
    assert not shutdown.done.is_set(), "the connection stays until its peer closes"
    started = time.monotonic()
    sock.close()
    assert shutdown.result() is True
    assert time.monotonic() - started < 2.0, "the peer's close ends the wait, not the grace"
    assert handled == [b"ping"]


def _echo_server_with_an_idle_client(
    serve: Any, clients: Clients, grace: float
) -> tuple[Server, socket.socket]:
    """An echo server saying goodbye with `grace`, and a raw client that has been served once."""
    server: Server = serve(echo, goodbye=b"BYE!", goodbye_grace=grace)
    sock = clients.raw(server)
    sock.sendall(b"ping")
    assert recv_exactly(sock, 4) == b"ping"
    return server, sock


def test_a_peer_that_never_closes_after_the_goodbye_is_closed_after_the_grace(
    serve: Any, clients: Clients
):
    server, sock = _echo_server_with_an_idle_client(serve, clients, grace=0.3)
    started = time.monotonic()
    assert server.loop.shutdown(5.0) is True
    assert 0.25 <= time.monotonic() - started < 2.0
    assert recv_until_eof(sock) == b"BYE!"
    assert not server.loop.connections()


def test_shutdown_closes_at_its_deadline_a_connection_waiting_after_its_goodbye(
    serve: Any, clients: Clients
):
    server, sock = _echo_server_with_an_idle_client(serve, clients, grace=30.0)
    started = time.monotonic()
    server.loop.shutdown(0.3)
    assert time.monotonic() - started < 2.0
    assert recv_until_eof(sock) == b"BYE!"
    wait_until(lambda: not server.loop.connections(), message="the connection to close")


def test_a_peer_leaving_while_the_goodbye_holds_the_request_lock_is_still_closed(
    serve: Any, clients: Clients, monkeypatch: pytest.MonkeyPatch
):
    """The peer's hang-up is handled while `say_goodbye` holds the request lock, so the
    hang-up cannot run the close callbacks and relies on the lock's holder to: without that,
    the connection stayed half-closed and shutdown waited out its whole timeout."""
    server, sock = _echo_server_with_an_idle_client(serve, clients, grace=30.0)
    send_goodbye = Connection._send_goodbye

    def goodbye_then_the_peer_leaves(conn: Connection, data: bytes) -> bool:
        said = send_goodbye(conn, data)
        sock.close()
        wait_until(lambda: conn._hangup_handled, message="the hang-up handled")
        time.sleep(0.05)  # its close attempt has found the lock taken
        return said

    monkeypatch.setattr(Connection, "_send_goodbye", goodbye_then_the_peer_leaves)
    started = time.monotonic()
    assert server.loop.shutdown(3.0) is True
    assert time.monotonic() - started < 2.0


def test_shutdown_before_serve_returns_true_and_serve_then_refuses(serve: Any):
    loop = EventLoop(echo)
    assert loop.shutdown(0.1) is True
    listener = Listener(socket.socket(), "tcp")
    try:
        with pytest.raises(RuntimeError):
            loop.serve(listener)
    finally:
        listener.close()


def test_serve_accepts_a_plain_listening_socket(clients: Clients):
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", 0))
        plain.listen(8)
        loop = EventLoop(echo)
        server_thread = threading.Thread(target=loop.serve, args=(plain,), name="test-serve")
        server_thread.start()
        try:
            wait_until(lambda: loop.address is not None, message="serving")
            check_echo(clients.dial(("tcp", plain.getsockname())), b"converted")
        finally:
            assert loop.shutdown(2.0) is True
            server_thread.join(IO_TIMEOUT)
        with pytest.raises(RuntimeError):
            loop.serve(plain)
    finally:
        plain.close()


# ---------------------------------------------------------------------------- failures


def test_a_handler_exception_closes_only_its_connection_and_is_logged(
    serve: Any, clients: Clients, caplog: pytest.LogCaptureFixture
):
    """TestServerPanicAndClose."""

    def on_request(ctx: Any, conn: Connection) -> None:
        data = conn.read_binary(len(conn.reader()))
        if data == b"boom":
            raise RuntimeError("handler failed on purpose")
        conn.write(data)

    server = serve(on_request)
    good, bad = clients.dial(server), clients.dial(server)
    check_echo(good, b"before")
    bad.write(b"boom")
    with pytest.raises(ConnectionEOFError):
        bad.next(1)
    wait_until(lambda: not bad.is_active(), message="the failing connection to close")
    check_echo(good, b"after")
    check_echo(clients.dial(server), b"a new connection")
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(records) == 1
    assert records[0].levelno >= logging.ERROR


def test_server_reads_and_closes_then_the_client_turns_inactive(serve: Any, clients: Clients):
    """TestServerReadAndClose."""

    def read_and_close(ctx: Any, conn: Connection) -> None:
        conn.read_binary(5)
        conn.close()

    server = serve(read_and_close)
    conn = clients.dial(server)
    conn.write(b"hello")
    wait_until(lambda: not conn.is_active(), message="the client to see the close")
    with pytest.raises(ConnectionClosedError):
        conn.write_binary(b"x")


def test_accept_backs_off_on_emfile_instead_of_spinning_then_resumes(
    serve: Any, clients: Clients, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """netpoll #230 / TestServerAcceptWhenTooManyOpenFiles: accept fails with EMFILE for
    300 ms; the loop must pause (0, 10, 50, 100, 200 ms ...) and then serve."""
    server = serve(echo)
    failing_until = [0.0]
    failures: list[float] = []
    real_accept = Listener.accept

    def accept(self: Listener) -> socket.socket | None:
        now = time.monotonic()
        if now < failing_until[0]:
            failures.append(now)
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(self)

    monkeypatch.setattr(Listener, "accept", accept)
    failing_until[0] = time.monotonic() + 0.3
    sock = clients.raw(server)
    sock.sendall(b"served")
    assert recv_exactly(sock, 6) == b"served"
    served_at = time.monotonic()
    assert 3 <= len(failures) <= 8, f"{len(failures)} accept attempts while failing"
    assert served_at >= failing_until[0]
    assert served_at - failures[0] < 1.0
    assert any("pausing accepts" in r.getMessage() for r in caplog.records)

    # The back-off was reset by the successful accept: new connections are served at once.
    started = time.monotonic()
    check_echo(clients.dial(server), b"again")
    assert time.monotonic() - started < 0.5


def test_shutdown_during_an_emfile_pause_closes_the_listener_for_good(
    serve: Any, clients: Clients, monkeypatch: pytest.MonkeyPatch
):
    server = serve(echo)
    failures: list[float] = []

    def accept(self: Listener) -> socket.socket | None:
        failures.append(time.monotonic())
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Listener, "accept", accept)
    clients.raw(server)  # pending: makes the listener readable
    wait_until(lambda: len(failures) >= 4, message="a few failed accepts")  # paused 100 ms now
    assert server.loop.shutdown(1.0) is True
    assert server.listener.socket.fileno() == -1
    count = len(failures)
    time.sleep(0.25)  # past the pending resume: it must not re-register a closed listener
    assert len(failures) == count
    with pytest.raises(DialRefusedError):
        dial_connection("tcp", server.address, timeout=1.0)


# ---------------------------------------------------------------------------- on the poller


def frame_echo_on_poller(ctx: Any, conn: Connection) -> None:
    """Echo every complete 4-byte-length-prefixed frame buffered; never block."""
    ctx.append(threading.current_thread().name)
    reader, writer = conn.reader(), conn.writer()
    available = len(reader)
    while available >= 4:
        size = int.from_bytes(reader.peek(4), "big")
        if available < 4 + size:
            break
        writer.write_binary(reader.next(4 + size))
        available -= 4 + size
    reader.release()
    writer.flush()


def test_pipelined_echo_with_handlers_on_the_poller_thread(serve: Any, clients: Clients):
    threads_seen: list[str] = []
    server = serve(frame_echo_on_poller, run_on_poller=True, on_prepare=lambda c: threads_seen)
    conn = clients.dial(server)
    frames = [
        len(body).to_bytes(4, "big") + body
        for body in (bytes([i % 251]) * (i * 37 % 9000) for i in range(300))
    ]
    stream = b"".join(frames)
    conn.write(stream)  # all 300 requests in flight at once
    assert conn.read_binary(len(stream)) == stream
    assert threads_seen
    assert all(name.startswith("rpcpoll-poller") for name in threads_seen)


def test_a_blocking_read_on_the_poller_thread_raises_would_block_and_closes_only_that_connection(
    serve: Any, clients: Clients, caplog: pytest.LogCaptureFixture
):
    def on_request(ctx: Any, conn: Connection) -> None:
        if conn.peek(1) == b"B":
            conn.next(100)  # only a few bytes are buffered: this would block the poller
        frame_echo_on_poller([], conn)

    server = serve(on_request, run_on_poller=True)
    good, bad = clients.dial(server), clients.dial(server)
    frame = (3).to_bytes(4, "big") + b"abc"
    good.write(frame)
    assert good.read_binary(len(frame)) == frame
    bad.write(b"Block")
    with pytest.raises(ConnectionEOFError):
        bad.next(1)
    assert any(r.exc_info and r.exc_info[0] is WouldBlockOnPollerError for r in caplog.records)
    good.write(frame)
    assert good.read_binary(len(frame)) == frame


# ---------------------------------------------------------------------------- setup hooks


def test_a_handler_set_in_on_prepare_is_kept(serve: Any, clients: Clients):
    """netpoll sets the loop's handlers before OnPrepare, so OnPrepare may replace them."""
    closed: list[Connection] = []

    def on_prepare(conn: Connection) -> None:
        conn.set_on_request(echo)
        conn.add_close_callback(closed.append)

    server = serve(None, on_prepare=on_prepare)
    conn = clients.dial(server)
    check_echo(conn, b"per-connection handler")
    conn.close()
    wait_until(lambda: len(closed) == 1, message="the server side to close")
    wait_until(lambda: not server.loop.connections(), message="the server to forget it")


def test_an_on_prepare_failure_drops_that_connection_only(
    serve: Any, clients: Clients, caplog: pytest.LogCaptureFixture
):
    calls = [0]

    def on_prepare(conn: Connection) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("on_prepare failed on purpose")

    server = serve(echo, on_prepare=on_prepare)
    first = clients.dial(server)
    with pytest.raises(ConnectionEOFError):
        first.next(1)
    check_echo(clients.dial(server), b"second")
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_an_on_connect_failure_closes_that_connection_and_is_logged(
    serve: Any, clients: Clients, caplog: pytest.LogCaptureFixture
):
    closed: list[Connection] = []

    def on_connect(ctx: Any, conn: Connection) -> Any:
        conn.add_close_callback(closed.append)
        if conn.read_binary(1) == b"!":
            raise RuntimeError("on_connect failed on purpose")
        return ctx

    server = serve(echo, on_connect=on_connect)
    bad = clients.dial(server)
    bad.write(b"!")
    with pytest.raises(ConnectionEOFError):
        bad.next(1)
    wait_until(lambda: len(closed) == 1, message="the close callback")
    good = clients.dial(server)
    good.write(b"+")
    check_echo(good, b"fine")
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def _thread_cpu_seconds(thread: threading.Thread) -> float:
    """CPU time (user + system) a thread has used, from /proc (Linux)."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_handler_still_running_after_closing_its_connection_does_not_make_the_poller_spin(
    serve: Any, clients: Clients
):
    """Regression: close() inside on_request left the fd in epoll until the handler returned;
    bytes the peer sent meanwhile made every level-triggered wait return at once."""
    release, closed = threading.Event(), threading.Event()

    def close_then_keep_working(ctx: Any, conn: Connection) -> None:
        conn.skip(len(conn.reader()))
        conn.close()
        closed.set()
        release.wait(IO_TIMEOUT)

    server = serve(close_then_keep_working)
    (poller_thread,) = [t for t in threading.enumerate() if t.name == "rpcpoll-poller-0"]
    sock = clients.raw(server)
    try:
        sock.sendall(b"first")
        assert closed.wait(IO_TIMEOUT)
        sock.sendall(b"bytes nobody will read")
        before, started = _thread_cpu_seconds(poller_thread), time.monotonic()
        time.sleep(0.3)
        used = _thread_cpu_seconds(poller_thread) - before
        assert used < 0.1 * (time.monotonic() - started), f"the poller used {used:.2f} s of CPU"
    finally:
        release.set()
