"""A fault-injecting TCP proxy between client and server (delay, truncate mid-frame, reset,
blackhole): every call either succeeds, having run once, or fails with the status its fault
calls for; none is lost (every call ends within its deadline) and none runs twice unless its
method is idempotent."""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hostile_testutil import Gate, host_port

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.server import Server


class FaultProxy:
    """Forwards 127.0.0.1:port to a server, doing `fault` to every connection:

    - "delay": forwards every chunk after `delay` seconds;
    - "truncate": forwards the first half of the client's first chunk, then closes both sides;
    - "reset": forwards the request, and when the reply comes, resets the client instead;
    - "blackhole": accepts and reads, never forwards, never answers.
    """

    def __init__(self, target: tuple[str, int], fault: str, delay: float = 0.02) -> None:
        self.target, self.fault, self.delay = target, fault, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._pipe, args=(client,), daemon=True)
            with self._lock:
                self._sockets.append(client)
                self._threads.append(thread)
            thread.start()

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target)
        with self._lock:
            self._sockets.append(server)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    sink: socket.socket = key.data
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if self.fault == "blackhole":
                        continue
                    if self.fault == "truncate":
                        server.sendall(data[: len(data) // 2])
                        return
                    if self.fault == "reset" and source is server:
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    if self.fault == "delay":
                        time.sleep(self.delay)
                    sink.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            client.close()
            server.close()

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(5)
        self.listener.close()
        with self._lock:
            threads, sockets = list(self._threads), list(self._sockets)
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()


@pytest.fixture
def proxy(serve: Callable[..., Server]) -> Iterator[Callable[[str], FaultProxy]]:
    server = serve()
    made: list[FaultProxy] = []

    def start(fault: str) -> FaultProxy:
        made.append(FaultProxy(host_port(server.address), fault))
        return made[-1]

    try:
        yield start
    finally:
        for item in made:
            item.close()


# fault -> (calls, the statuses a failed call may end with, whether any call may succeed)
CASES = {
    "delay": (20, set(), True),
    "truncate": (10, {rpcpoll.StatusCode.UNAVAILABLE}, False),
    "reset": (10, {rpcpoll.StatusCode.UNAVAILABLE}, False),
    "blackhole": (4, {rpcpoll.StatusCode.DEADLINE_EXCEEDED}, False),
}


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
@pytest.mark.parametrize("fault", list(CASES))
def test_every_call_through_a_faulty_network_succeeds_once_or_fails_with_its_status(
    proxy: Callable[[str], FaultProxy], gate: Gate, fault: str, idempotent: bool
) -> None:
    calls, statuses, may_succeed = CASES[fault]
    options = {"idempotent_methods": ["Echo"]} if idempotent else {}
    through = proxy(fault)
    outcomes: dict[str, object] = {}
    with EchoServiceClient(through.address, timeout=0.3, connect_timeout=0.3, **options) as client:
        for index in range(calls):
            key = f"{fault}-{idempotent}-{index}"
            started = time.monotonic()
            try:
                reply = client.echo(EchoRequest(message=key))
                assert reply.message == key
                outcomes[key] = "ok"
            except rpcpoll.RpcError as exc:
                outcomes[key] = exc.code
            assert time.monotonic() - started < 1.0  # never lost: ends by its deadline
    for key, outcome in outcomes.items():
        runs = gate.runs.get(key, 0)
        if outcome == "ok":
            assert may_succeed, (key, outcome)
            assert runs == 1, (key, runs)
        else:
            assert outcome in statuses, (key, outcome)
            if not idempotent:
                assert runs <= 1, (key, runs)  # never run twice when it was not idempotent
            if fault in ("truncate", "blackhole"):
                assert runs == 0, (key, runs)  # no whole frame ever reached the server
    if fault == "reset" and idempotent:
        assert any(runs > 1 for runs in gate.runs.values())  # retried, as allowed
