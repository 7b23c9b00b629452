"""Listeners and the Dialer: netpoll's CreateListener, ConvertListener and DialConnection.

Networks are "tcp" (IPv4 or IPv6, whatever the address resolves to), "tcp4", "tcp6" and
"unix". TCP addresses are "host:port", "[v6addr]:port" or a (host, port) tuple; Unix addresses
are filesystem paths (a leading NUL selects Linux's abstract namespace).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from .connection import Connection, Runner
from .errors import DialError, DialRefusedError, DialTimeoutError, UnsupportedNetworkError
from .poller import Poller

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = [
    "Dialer",
    "Listener",
    "convert_listener",
    "create_listener",
    "dial_connection",
    "dial_connection_async",
    "parse_tcp_address",
]

_FAMILIES = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}
_REFUSED = {errno.ECONNREFUSED, errno.ENOENT}
_IN_PROGRESS = {errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY}


def _check_network(network: str) -> None:
    if network not in _FAMILIES and network != "unix":
        raise UnsupportedNetworkError(f"unsupported network {network!r}")


def parse_tcp_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """("host", port) from "host:port", "[v6]:port" or a tuple; ValueError (one line, naming
    what was given) for anything else: no port, a port outside 0-65535, an unbracketed IPv6
    address, a URL."""
    if isinstance(address, tuple):
        if len(address) != 2:
            raise ValueError(f"expected (host, port), got {address!r}")
        host, port_number = address[0], address[1]
        if not isinstance(port_number, int) or isinstance(port_number, bool):
            raise ValueError(f"the port must be an integer, got {port_number!r}")
        return str(host), _check_port(port_number, address)
    if not isinstance(address, str):
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if "://" in address:
        raise ValueError(f"expected HOST:PORT, got the URL {address!r}")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets, as in [::1]:8888: got {address!r}")
    return host, _check_port(int(port), address)


def _check_port(port: int, shown: object) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"the port must be between 0 and 65535, got {port} in {shown!r}")
    return port


class Listener:
    """A non-blocking listening socket that an EventLoop serves."""

    def __init__(self, sock: socket.socket, network: str, *, unlink_on_close: bool = True) -> None:
        sock.setblocking(False)
        self.socket = sock
        self.network = network
        # A Unix listener removes its path when closed, unless it did not bind it
        # (convert_listener).
        self.unlink_on_close = unlink_on_close

    @property
    def address(self) -> Any:
        """The bound address: (host, port) for TCP, the path for Unix."""
        return self.socket.getsockname()

    def fileno(self) -> int:
        return self.socket.fileno()

    def accept(self) -> socket.socket | None:
        """One pending connection, or None if there is none right now."""
        try:
            sock, _ = self.socket.accept()
        except BlockingIOError:
            return None
        return sock

    def close(self) -> None:
        path = self.address if self.network == "unix" and self.unlink_on_close else None
        self.socket.close()
        if isinstance(path, str) and path and not path.startswith("\0"):
            try:
                os.unlink(path)
            except OSError:
                pass

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            where = self.address
        except OSError:
            where = "closed"
        return f"<Listener {self.network} {where!r}>"


def create_listener(
    network: str,
    address: str | tuple[str, int],
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
) -> Listener:
    """Bind and listen. Port 0 picks a free port (see `Listener.address`).

    `reuse_port` sets SO_REUSEPORT, so several processes can listen on one port and the kernel
    spreads new connections between them.
    """
    _check_network(network)
    if network == "unix":
        if not isinstance(address, str):
            raise ValueError("a unix address is a path")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
    else:
        host, port = parse_tcp_address(address)
        family = _FAMILIES[network]
        infos = socket.getaddrinfo(
            host or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
        except BaseException:
            sock.close()
            raise
    sock.listen(backlog)
    return Listener(sock, network)


def convert_listener(sock: socket.socket) -> Listener:
    """Wrap a listening TCP or Unix socket (a duplicate of it: the caller keeps its own).

    Closing the Listener leaves a Unix socket's path in place: the caller bound it, and its own
    socket may still be listening there.
    """
    if sock.type != socket.SOCK_STREAM:
        raise UnsupportedNetworkError("only stream sockets can be served")
    if sock.family == socket.AF_UNIX:
        network = "unix"
    elif sock.family in (socket.AF_INET, socket.AF_INET6):
        network = "tcp"
    else:
        raise UnsupportedNetworkError(f"unsupported socket family {sock.family!r}")
    return Listener(sock.dup(), network, unlink_on_close=False)


def dial_connection(
    network: str,
    address: str | tuple[str, int],
    timeout: float | None = None,
    *,
    runner: Runner | None = None,
    direct: bool = False,
    ssl: SSLContext | None = None,
    server_hostname: str | None = None,
) -> Connection:
    """Connect and return a Connection registered with a poller.

    `timeout` covers name resolution and connecting; None or 0 means no limit (as in netpoll
    and `Connection.set_read_timeout`). Raises `DialTimeoutError`, `DialRefusedError` (a
    `ConnectionRefusedError`) or `DialError`.

    `direct=True` gives a connection that no poller drives: its blocking reads and flushes do
    the I/O on the calling thread. For request/response clients that wait for each reply, this
    saves the hand-off from the poller thread (about 40 µs per round trip, measured with
    bench/bench_transport.py's machine). `set_on_request` turns it into a polled connection.

    `ssl` makes it a TLS connection (`TLSConnection`): the handshake runs on the calling
    thread within `timeout`, before this returns. SNI and the certificate's name are checked
    against `server_hostname` (default: the dialed host; a Unix address has none, so give one
    or turn `check_hostname` off). Raises `TLSHandshakeError`, `TLSCertificateError` (a
    `DialError` both), or `DialTimeoutError`.
    """
    _check_network(network)
    deadline = time.monotonic() + timeout if timeout is not None and timeout > 0 else None
    if network == "unix":
        if not isinstance(address, str):
            raise ValueError("a unix address is a path")
        sock = _connect(socket.AF_UNIX, address, deadline, address)
    else:
        host, port = parse_tcp_address(address)
        last_error: Exception | None = None
        for family, sockaddr in _resolve(host, port, _FAMILIES[network], deadline):
            try:
                sock = _connect(family, sockaddr, deadline, address)
                break
            except DialTimeoutError:
                raise
            except (DialRefusedError, DialError) as exc:
                last_error = exc
        else:
            assert last_error is not None
            raise last_error
    if ssl is not None:
        if server_hostname is None and network != "unix":
            server_hostname = parse_tcp_address(address)[0]
        return _start_tls(sock, ssl, server_hostname, deadline, address, runner, network, direct)
    conn = Connection(sock, runner=runner, network=network, direct=direct)
    conn._register()
    return conn


async def dial_connection_async(
    network: str,
    address: str | tuple[str, int],
    timeout: float | None,
    poller: Poller,
    runner: Runner | None = None,
    ssl: SSLContext | None = None,
    server_hostname: str | None = None,
) -> Connection:
    """`dial_connection` from a coroutine, on the running event loop (resolving and
    connecting without blocking it), for a Connection that `poller` drives (the loop's
    LoopPoller: transport/loop_poller.py). With `ssl`, the TLS handshake runs on a thread of
    the loop's default executor (it blocks), within the same timeout. Raises as
    `dial_connection` does."""
    _check_network(network)
    deadline = None if not timeout else time.monotonic() + timeout
    try:
        if timeout:
            sock = await asyncio.wait_for(_connect_async(network, address), timeout)
        else:
            sock = await _connect_async(network, address)
    except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
        raise DialTimeoutError(f"dial timeout connecting to {address!r}") from None
    if ssl is not None:
        if server_hostname is None and network != "unix":
            server_hostname = parse_tcp_address(address)[0]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None,
            partial(
                _start_tls, sock, ssl, server_hostname, deadline, address, runner, network,
                False, poller,
            ),
        )  # fmt: skip
    conn = Connection(sock, poller=poller, runner=runner, network=network)
    conn._register()
    return conn


def _start_tls(
    sock: socket.socket,
    context: SSLContext,
    server_hostname: str | None,
    deadline: float | None,
    shown: Any,
    runner: Runner | None,
    network: str,
    direct: bool,
    poller: Poller | None = None,
) -> Connection:
    from .tls_connection import TLSConnection

    try:
        conn = TLSConnection(
            sock,
            context,
            server_side=False,
            server_hostname=server_hostname or None,
            poller=poller,
            runner=runner,
            network=network,
            direct=direct,
        )
    except BaseException:
        sock.close()
        raise
    try:
        conn._client_handshake(deadline, shown)
    except BaseException:
        conn.close()
        raise
    conn._register()
    return conn


async def _connect_async(network: str, address: str | tuple[str, int]) -> socket.socket:
    loop = asyncio.get_running_loop()
    targets: list[tuple[int, Any]]
    if network == "unix":
        if not isinstance(address, str):
            raise ValueError("a unix address is a path")
        targets = [(socket.AF_UNIX, address)]
    else:
        host, port = parse_tcp_address(address)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = await loop.getaddrinfo(
                    host, port, family=_FAMILIES[network], type=socket.SOCK_STREAM
                )
            except socket.gaierror as exc:
                raise DialError(f"cannot resolve {host!r}: {exc}") from exc
            targets = [(info[0], info[4]) for info in infos]
        else:
            targets = [(socket.AF_INET if ip.version == 4 else socket.AF_INET6, (host, port))]
    last_error: Exception = DialError(f"no address found for {address!r}")
    for family, sockaddr in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            if exc.errno in _REFUSED or isinstance(exc, ConnectionRefusedError):
                code = exc.errno or errno.ECONNREFUSED
                last_error = DialRefusedError(code, f"connection refused by {address!r}")
            else:
                last_error = DialError(exc.errno or 0, f"dial {address!r}: {exc}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last_error


class Dialer:
    """netpoll's Dialer: `dial` with a default timeout."""

    def __init__(
        self,
        timeout: float | None = None,
        runner: Runner | None = None,
        direct: bool = False,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.runner = runner
        self.direct = direct
        self.ssl = ssl
        self.server_hostname = server_hostname

    def dial(
        self, network: str, address: str | tuple[str, int], timeout: float | None = None
    ) -> Connection:
        return dial_connection(
            network,
            address,
            self.timeout if timeout is None else timeout,
            runner=self.runner,
            direct=self.direct,
            ssl=self.ssl,
            server_hostname=self.server_hostname,
        )


def _resolve(host: str, port: int, family: int, deadline: float | None) -> list[tuple[int, Any]]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        if family not in (socket.AF_UNSPEC, fam):
            raise DialError(f"{host} is not an address of the requested family")
        return [(fam, (host, port))]
    infos = _getaddrinfo_within(host, port, family, deadline)
    if not infos:
        raise DialError(f"no address found for {host!r}")
    return [(info[0], info[4]) for info in infos]


def _getaddrinfo_within(host: str, port: int, family: int, deadline: float | None) -> list[Any]:
    """getaddrinfo bounded by the deadline (it cannot be interrupted, so it runs aside)."""
    if deadline is None:
        return _lookup(host, port, family)
    result: list[Any] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            result.extend(_lookup(host, port, family))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name="rpcpoll-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise DialTimeoutError(f"dial timeout resolving {host!r}")
    if failure:
        raise failure[0]
    return result


def _lookup(host: str, port: int, family: int) -> list[Any]:
    try:
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DialError(f"cannot resolve {host!r}: {exc}") from exc


def _connect(family: int, sockaddr: Any, deadline: float | None, shown: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if family == socket.AF_UNIX and code in (errno.EAGAIN, errno.EWOULDBLOCK):
            code = _connect_unix_blocking(sock, sockaddr, deadline, shown)
        elif code in _IN_PROGRESS:
            _wait_writable(sock, deadline, shown)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code in _REFUSED:
            raise DialRefusedError(code, f"connection refused by {shown!r}")
        if code:
            raise DialError(code, f"dial {shown!r}: {os.strerror(code)}")
        if family != socket.AF_UNIX and sock.getsockname() == sock.getpeername():
            raise DialError(errno.EADDRNOTAVAIL, "self-connect")
        return sock
    except BaseException:
        sock.close()
        raise


def _connect_unix_blocking(
    sock: socket.socket, path: Any, deadline: float | None, shown: Any
) -> int:
    """Connect to a Unix listener whose backlog is full.

    A non-blocking Unix connect then fails with EAGAIN and, unlike TCP, does not go on in the
    background (the socket stays unconnected and polls writable at once). A blocking connect
    waits in the kernel for room in the backlog, bounded by SO_SNDTIMEO.
    """
    timeout = 0.0
    if deadline is not None:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise DialTimeoutError(f"dial timeout connecting to {shown!r}")
    micros = max(1, int(timeout * 1_000_000)) if deadline is not None else 0
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", *divmod(micros, 1_000_000))
    )
    sock.setblocking(True)
    try:
        code = sock.connect_ex(path)
    finally:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
    if code in _IN_PROGRESS:  # SO_SNDTIMEO expired with the backlog still full
        raise DialTimeoutError(f"dial timeout connecting to {shown!r}")
    return code


def _wait_writable(sock: socket.socket, deadline: float | None, shown: Any) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while True:
        if deadline is None:
            timeout_ms = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DialTimeoutError(f"dial timeout connecting to {shown!r}")
            timeout_ms = max(1, int(remaining * 1000 + 0.999))
        if poller.poll(timeout_ms):
            return
