"""grpc.health.v1: the HealthService handler, the probe and `rpcpoll health`'s exit statuses."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from ops_testutil import Serve, run

from rpcpoll import NotFoundError
from rpcpoll.examples.echo_rpc import EchoRequest
from rpcpoll.health import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthClient,
    HealthService,
    ServingStatus,
)
from rpcpoll.health.probe import ProbeStatus, probe
from rpcpoll.protocol.frame import Frame, MessageType, decode_frame, encode_frame
from rpcpoll.service import CallContext, LocalChannel


def context(timeout: float | None = None) -> CallContext:
    deadline = None if timeout is None else time.monotonic() + timeout
    return CallContext("grpc.health.v1.Health", "Watch", {}, deadline)


def test_check_answers_each_known_service_and_not_found_for_others() -> None:
    health = HealthService()
    health.set_status("echo.EchoService", ServingStatus.NOT_SERVING)
    with HealthClient(LocalChannel(health)) as client:
        assert client.check(HealthCheckRequest()).status is ServingStatus.SERVING
        reply = client.check(HealthCheckRequest(service="echo.EchoService"))
        assert reply.status is ServingStatus.NOT_SERVING
        with pytest.raises(NotFoundError):
            client.check(HealthCheckRequest(service="other.Service"))


def test_statuses_can_be_set_by_name_and_cleared() -> None:
    health = HealthService(serving=False)
    assert health.status() is None
    health.set_status("a.A", "serving")
    health.set_status("", 2)
    assert health.statuses() == {"a.A": ServingStatus.SERVING, "": ServingStatus.NOT_SERVING}
    health.clear_status("a.A")
    assert health.status("a.A") is None
    with pytest.raises(ValueError, match="unknown serving status"):
        health.set_status("a.A", "GREEN")
    with pytest.raises(ValueError, match="unknown serving status"):
        health.set_status("a.A", 42)


def test_shutdown_turns_everything_not_serving_and_freezes_it() -> None:
    health = HealthService()
    health.set_status("a.A", ServingStatus.SERVING)
    health.enter_shutdown()
    assert set(health.statuses().values()) == {ServingStatus.NOT_SERVING}
    health.set_status("a.A", ServingStatus.SERVING)  # ignored while shutting down
    assert health.status("a.A") is ServingStatus.NOT_SERVING
    health.resume()
    health.set_status("a.A", ServingStatus.SERVING)
    assert health.status("a.A") is ServingStatus.SERVING


def test_watch_sends_the_status_then_each_change_and_ends_at_shutdown() -> None:
    health = HealthService()
    stream = health.watch(HealthCheckRequest(service="a.A"), context(timeout=10))
    assert next(stream).status is ServingStatus.SERVICE_UNKNOWN
    got: list[ServingStatus] = []

    def read() -> None:
        got.extend(reply.status for reply in stream)

    reader = threading.Thread(target=read)
    reader.start()
    health.set_status("a.A", ServingStatus.SERVING)
    time.sleep(0.05)
    health.set_status("a.A", ServingStatus.SERVING)  # no change: nothing sent
    health.set_status("a.A", ServingStatus.NOT_SERVING)
    time.sleep(0.05)
    health.enter_shutdown()
    reader.join(5)
    assert not reader.is_alive()
    assert got == [ServingStatus.SERVING, ServingStatus.NOT_SERVING]


def test_watch_ends_at_its_deadline() -> None:
    health = HealthService()
    started = time.monotonic()
    replies = list(health.watch(HealthCheckRequest(), context(timeout=0.2)))
    assert [reply.status for reply in replies] == [ServingStatus.SERVING]
    assert time.monotonic() - started < 2


def test_probe_maps_answers_to_exit_statuses() -> None:
    health = HealthService()
    health.set_status("down.D", ServingStatus.NOT_SERVING)
    assert probe(LocalChannel(health))[0] is ProbeStatus.SERVING
    assert probe(LocalChannel(health), "down.D")[0] is ProbeStatus.NOT_SERVING
    status, text = probe(LocalChannel(health), "nope.N")
    assert status is ProbeStatus.NOT_SERVING and "SERVICE_UNKNOWN" in text
    assert probe(LocalChannel())[0] is ProbeStatus.RPC_FAILED  # no health service


def test_probe_times_out_against_a_server_that_never_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        status, text = probe(address, timeout=0.3)
    assert status is ProbeStatus.TIMEOUT, text


def test_health_command_exit_statuses_against_rpcpoll_serve(server: Serve) -> None:
    assert run("health", server.address)[:2] == (0, "status: SERVING\n")
    assert run("health", server.address, "echo.EchoService")[0] == 0
    code, out, _err = run("health", server.address, "no.Such")
    assert code == 1 and "SERVICE_UNKNOWN" in out
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{unused.getsockname()[1]}"
    code, _out, err = run("health", closed)
    assert code == 3 and err.startswith("connection failed") and "Traceback" not in err
    code, _out, err = run("health", "localhost")
    assert code == 2 and "HOST:PORT" in err


def test_health_is_off_with_no_health(handler_dir: Path) -> None:
    served = Serve("ops_service:OpsEcho", "--no-health", cwd=handler_dir)
    try:
        code, _out, err = run("health", served.address)
    finally:
        served.stop()
    assert code == 5 and "UNIMPLEMENTED" in err


def test_statuses_turn_not_serving_when_a_graceful_stop_begins(handler_dir: Path) -> None:
    served = Serve("ops_service:OpsEcho", cwd=handler_dir)
    # On one connection, in order: a slow call, then two health checks queued behind it. The
    # stop begins while the slow call runs, so the checks run during the drain.
    slow = EchoRequest(message="sleep:1.0").to_bytes()
    frames = [Frame(1, MessageType.CALL, "Echo", "echo.EchoService", slow)]
    for seq, name in ((2, ""), (3, "echo.EchoService")):
        check = HealthCheckRequest(service=name).to_bytes()
        frames.append(Frame(seq, MessageType.CALL, "Check", "grpc.health.v1.Health", check))
    host, port = served.address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"".join(encode_frame(frame) for frame in frames))
            time.sleep(0.3)
            served.send()
            replies = [read_frame(sock) for _ in frames]
    finally:
        code, log = served.stop()
    statuses = [HealthCheckResponse.from_bytes(reply.payload).status for reply in replies[1:]]
    assert [reply.seq_id for reply in replies] == [1, 2, 3]
    assert statuses == [ServingStatus.NOT_SERVING, ServingStatus.NOT_SERVING]
    assert code == 0, log


def read_frame(sock: socket.socket) -> Frame:
    head = _exactly(sock, 4)
    return decode_frame(head + _exactly(sock, int.from_bytes(head, "big")))


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data
