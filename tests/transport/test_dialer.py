"""The Dialer and listeners: netpoll's net_dialer_test.go and net_listener_test.go."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transport_testutil import (
    IO_TIMEOUT,
    Clients,
    Server,
    ThreadRunner,
    recv_exactly,
    wait_until,
)

from rpcpoll.transport import (
    Connection,
    ConnectionClosedError,
    Dialer,
    DialRefusedError,
    DialTimeoutError,
    TransportError,
    UnsupportedNetworkError,
    convert_listener,
    create_listener,
    dial_connection,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


def echo(ctx: Any, conn: Connection) -> None:
    conn.write(conn.next(len(conn.reader())))


def free_tcp_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unresponsive_listener() -> Iterator[tuple[str, int]]:
    """A TCP listener that never accepts: backlog 0 and its accept queue already full, so the
    kernel drops further SYNs and a connect hangs until its timeout."""
    listening = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        address = listening.getsockname()
        for _ in range(2):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
        wait_until(
            lambda: (
                fillers[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                and _connected(fillers[0])
            ),
            message="the accept queue to fill",
        )
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listening.close()


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------- failures


def test_dial_to_a_closed_port_fails_fast_with_dial_refused():
    started = time.monotonic()
    with pytest.raises(DialRefusedError) as info:
        dial_connection("tcp", f"127.0.0.1:{free_tcp_port()}", timeout=2.0)
    assert time.monotonic() - started < 0.5
    assert isinstance(info.value, ConnectionRefusedError)
    assert isinstance(info.value, TransportError)
    assert info.value.errno == errno.ECONNREFUSED


def test_dial_to_a_missing_unix_path_fails_with_dial_refused(tmp_path: Path):
    with pytest.raises(DialRefusedError):
        dial_connection("unix", str(tmp_path / "nobody.sock"), timeout=1.0)


def test_dial_timeout_raises_near_the_timeout(unresponsive_listener: tuple[str, int]):
    host, port = unresponsive_listener
    started = time.monotonic()
    with pytest.raises(DialTimeoutError) as info:
        dial_connection("tcp", f"{host}:{port}", timeout=0.1)
    elapsed = time.monotonic() - started
    assert 0.095 <= elapsed <= 0.16, f"timed out after {elapsed * 1000:.1f} ms"
    assert isinstance(info.value, TimeoutError)


def test_dialer_uses_its_default_timeout(unresponsive_listener: tuple[str, int]):
    started = time.monotonic()
    with pytest.raises(DialTimeoutError):
        Dialer(timeout=0.05).dial("tcp", unresponsive_listener)
    assert 0.045 <= time.monotonic() - started <= 0.11


def test_unix_dial_to_a_full_backlog_waits_for_room_and_times_out(tmp_path: Path):
    """A non-blocking Unix connect to a full backlog fails with EAGAIN and, unlike TCP, does
    not go on in the background: the dialer must wait for room, not return a dead socket."""
    path = str(tmp_path / "full.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    try:
        listening.bind(path)
        listening.listen(0)
        filler.connect(path)  # the one pending connection a backlog of 0 allows
        started = time.monotonic()
        with pytest.raises(DialTimeoutError):
            dial_connection("unix", path, timeout=0.1)
        elapsed = time.monotonic() - started
        assert 0.095 <= elapsed <= 0.16, f"timed out after {elapsed * 1000:.1f} ms"

        # Room appears 50 ms into the dial: it connects then.
        timer = threading.Timer(0.05, lambda: accepted.append(listening.accept()[0]))
        timer.start()
        conn = dial_connection("unix", path, timeout=2.0)
        timer.join()
        try:
            assert conn.is_active()
            assert conn.remote_address == path
            conn.write(b"hi")
            second, _ = listening.accept()
            accepted.append(second)
            second.settimeout(IO_TIMEOUT)
            assert recv_exactly(second, 2) == b"hi"
        finally:
            conn.close()
    finally:
        for sock in accepted:
            sock.close()
        filler.close()
        listening.close()


def test_unknown_networks_raise_unsupported_network():
    for network in ("udp", "ip", "unixgram", ""):
        with pytest.raises(UnsupportedNetworkError):
            dial_connection(network, "127.0.0.1:1", timeout=1.0)
        with pytest.raises(UnsupportedNetworkError):
            create_listener(network, "127.0.0.1:0")
    assert issubclass(UnsupportedNetworkError, ValueError)


def test_a_malformed_tcp_address_raises_value_error():
    with pytest.raises(ValueError):
        dial_connection("tcp", "127.0.0.1", timeout=1.0)


def test_concurrent_dials_with_a_1ms_timeout_either_connect_or_time_out(
    serve: Any, clients: Clients
):
    """TestConnectionDailTimeoutAndClose: 100 dials at once, each with a 1 ms timeout."""
    server = serve(echo)
    outcomes: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def dial_once() -> None:
        barrier.wait(IO_TIMEOUT)
        try:
            conn = dial_connection("tcp", server.address, timeout=0.001)
        except DialTimeoutError as exc:
            outcome: object = exc
        else:
            outcome = conn
            conn.close()
        with lock:
            outcomes.append(outcome)

    dialers = [threading.Thread(target=dial_once, name=f"dial-{i}") for i in range(100)]
    for thread in dialers:
        thread.start()
    for thread in dialers:
        thread.join(IO_TIMEOUT)
    assert len(outcomes) == 100, "a dial raised something other than DialTimeoutError"
    assert all(isinstance(o, (Connection, DialTimeoutError)) for o in outcomes)


# ---------------------------------------------------------------------------- addresses


def test_dialed_tcp_connection_addresses(serve: Any, clients: Clients):
    """TestDialerTCP."""
    server = serve(echo)
    conn = clients.dial(server)
    host, port = conn.local_address
    assert host == "127.0.0.1"
    assert port != 0
    assert conn.remote_address == server.address
    assert conn.network == "tcp"


def test_dial_tcp4(serve: Any, clients: Clients):
    server = serve(echo, network="tcp4")
    conn = clients.dial(server)
    assert conn.network == "tcp4"
    _check_echo(conn, b"four")


def _check_echo(conn: Connection, data: bytes) -> None:
    conn.write(data)
    assert conn.read_binary(len(data)) == data


def test_dialed_unix_connection_addresses(serve: Any, clients: Clients):
    """TestDialerUnix: the local address of a dialed Unix socket is unnamed."""
    server = serve(echo, network="unix")
    conn = clients.dial(server)
    assert conn.local_address in ("", b"")
    assert conn.remote_address == server.address
    assert conn.network == "unix"
    _check_echo(conn, b"unix")


def test_dial_by_hostname_resolves_within_the_timeout(serve: Any, clients: Clients):
    server = serve(echo)
    conn = clients.dial(("tcp", f"localhost:{server.address[1]}"))
    _check_echo(conn, b"named")


# ---------------------------------------------------------------------------- fd reuse


def test_fd_reuse_across_many_dial_and_close_cycles_never_mixes_data(serve: Any, clients: Clients):
    """TestDialerFdAlloc: 100 times dial, write, the server closes in on_request, the client
    waits until inactive."""
    received: list[bytes] = []

    def read_and_close(ctx: Any, conn: Connection) -> None:
        received.append(conn.read_binary(8))
        conn.close()

    server = serve(read_and_close)
    for i in range(100):
        conn = dial_connection("tcp", server.address, timeout=2.0)
        try:
            conn.write(b"%08d" % i)
            wait_until(lambda c=conn: not c.is_active(), message=f"cycle {i}: the server close")
        finally:
            conn.close()
    wait_until(lambda: len(received) == 100, message="every message")
    assert received == [b"%08d" % i for i in range(100)]


def test_dial_exchange_close_from_many_threads_never_crosses_data(
    serve: Any, threads: ThreadRunner
):
    """TestDialerThenClose: threads dial two servers, exchange "idx-fd" messages, close."""
    servers = [serve(echo), serve(echo, network="unix")]

    def worker(index: int) -> int:
        exchanged = 0
        for round_ in range(25):
            for server in servers:
                conn = dial_connection(server.network, server.address, timeout=2.0)
                try:
                    message = f"{index}-{round_}-{conn.fileno()}|".encode()
                    conn.write(message)
                    assert conn.read_binary(len(message)) == message
                    exchanged += 1
                finally:
                    conn.close()
        return exchanged

    calls = [threads.start(lambda i=i: worker(i), name=f"dialer-{i}") for i in range(4)]
    assert [call.result(25) for call in calls] == [50] * 4


# ---------------------------------------------------------------------------- listeners


def test_convert_listener_serves_a_duplicate_and_the_caller_keeps_its_socket(
    tmp_path: Path, serve: Any
):
    """TestConvertListener."""
    path = str(tmp_path / "converted.sock")
    original = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        original.bind(path)
        original.listen(8)
        listener = convert_listener(original)
        assert listener.network == "unix"
        assert listener.fileno() != original.fileno()
        assert listener.address == path
        assert not listener.socket.getblocking()
        listener.close()  # the caller's socket still listens
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
        finally:
            client.close()
    finally:
        original.close()


def test_convert_listener_refuses_datagram_sockets():
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(UnsupportedNetworkError),
    ):
        convert_listener(udp)


def test_unix_listener_close_removes_its_path(tmp_path: Path):
    path = tmp_path / "gone.sock"
    listener = create_listener("unix", str(path))
    assert path.exists()
    listener.close()
    assert not path.exists()


def test_a_dialed_connection_with_on_request_and_a_close_callback(serve: Any, clients: Clients):
    """TestListenerDialer: the client's on_request reads the echo and closes; both the handler
    and the close callback ran."""
    server = serve(echo)
    conn = clients.dial(server)
    got: list[bytes] = []
    closed: list[Connection] = []

    def on_reply(ctx: Any, c: Connection) -> None:
        got.append(c.read_binary(5))
        c.close()

    conn.set_on_request(on_reply)
    conn.add_close_callback(closed.append)
    conn.write(b"hello")
    wait_until(lambda: closed == [conn], message="the close callback")
    assert got == [b"hello"]
    with pytest.raises(ConnectionClosedError):
        conn.write(b"again")


def test_create_listener_with_reuse_port_lets_two_listeners_share_a_port():
    first = create_listener("tcp", "127.0.0.1:0", reuse_port=True)
    try:
        second = create_listener("tcp", first.address, reuse_port=True)
        second.close()
    finally:
        first.close()


def test_write_string_and_read_string_round_trip(serve: Any, clients: Clients):
    """TestNewFDConnection: WriteString("hello") + Flush, the peer's Next(5) is "hello"."""
    server: Server = serve(echo)
    conn = clients.dial(server)
    conn.write_string("hello")
    conn.flush()
    assert conn.read_string(5) == "hello"


@pytest.mark.parametrize("timeout", [None, 0, 0.0])
def test_a_dial_timeout_of_none_or_zero_means_no_limit(
    timeout: float | None, serve: Any, clients: Clients
):
    """netpoll: DialConnection's timeout applies only when it is above zero (like
    set_read_timeout, where None or 0 means no limit)."""
    server = serve(echo)
    conn = dial_connection("tcp", server.address, timeout)
    try:
        _check_echo(conn, b"no limit")
    finally:
        conn.close()
