"""`rpcpoll serve --metrics-port` scraped for real (one process and --workers 2), and
`--access-log` lines, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from obs_testutil import Serve, echo_labels, labels, scrape, wait_for

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

NOT_FOUND = int(rpcpoll.StatusCode.NOT_FOUND)


def test_serve_exposes_metrics_of_known_calls_and_logs_each_call(handler_dir: Path) -> None:
    served = Serve("obs_service:Echo", "--metrics-port", "0", "--access-log", cwd=handler_dir)
    try:
        assert served.metrics_url.startswith("http://127.0.0.1:")
        with EchoServiceClient(served.address, timeout=5.0) as client:
            for _ in range(3):
                client.echo(EchoRequest(message="hello", payload=b"x" * 100))
            with pytest.raises(rpcpoll.NotFoundError):
                client.echo(EchoRequest(message=f"fail:{NOT_FOUND}"))
            samples = scrape(served.metrics_url)
            assert samples[("rpcpoll_server_connections", labels())] >= 1
    finally:
        code, log = served.stop()
    assert code == 0, log
    assert samples[("rpcpoll_server_started_total", echo_labels())] == 4
    assert samples[("rpcpoll_server_handled_total", echo_labels("OK"))] == 3
    assert samples[("rpcpoll_server_handled_total", echo_labels("NOT_FOUND"))] == 1
    assert samples[("rpcpoll_server_handling_seconds_count", echo_labels("OK"))] == 3
    inf = echo_labels("OK") | {("le", "+Inf")}
    assert samples[("rpcpoll_server_handling_seconds_bucket", inf)] == 3
    assert samples[("rpcpoll_server_calls_in_flight", echo_labels())] == 0
    # prometheus_client's own process metrics are on the same (default) registry
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)

    lines = [line for line in log.splitlines() if " rpcpoll.access INFO " in line]
    echo_lines = [line for line in lines if "rpc=echo.EchoService/Echo" in line]
    assert len(echo_lines) == 4, log
    size = len(EchoRequest(message="hello", payload=b"x" * 100).to_bytes())
    ok = re.search(
        r"peer=127\.0\.0\.1:\d+ rpc=echo\.EchoService/Echo status=OK duration_ms=[\d.]+"
        rf" request_bytes={size} response_bytes={size}$",
        echo_lines[0],
    )
    assert ok, echo_lines[0]
    assert "status=NOT_FOUND" in echo_lines[3] and "response_bytes=0" in echo_lines[3]


def test_workers_metrics_are_all_on_one_endpoint(handler_dir: Path) -> None:
    served = Serve("obs_service:Echo", "--workers", "2", "--metrics-port", "0", cwd=handler_dir)
    clients: list[EchoServiceClient] = []
    calls_by_pid: dict[str, int] = {}
    try:
        # New connections until both workers answered (SO_REUSEPORT spreads them by a hash).
        while len(calls_by_pid) < 2 and len(clients) < 64:
            client = EchoServiceClient(served.address, timeout=5.0)
            clients.append(client)
            for _ in range(2):
                reply: dict[str, str] = {}
                client.echo(EchoRequest(message="hi"), reply_metadata=reply)
                calls_by_pid[reply["pid"]] = calls_by_pid.get(reply["pid"], 0) + 1
        assert len(calls_by_pid) == 2, "every connection went to one worker"
        shared_dir = reply["multiproc-dir"]
        assert os.path.isdir(shared_dir)
        with pytest.raises(rpcpoll.NotFoundError):
            clients[0].echo(EchoRequest(message=f"fail:{NOT_FOUND}"))
        total = sum(calls_by_pid.values())

        def flushed() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            samples = scrape(served.metrics_url)
            handled = samples.get(("rpcpoll_server_handled_total", echo_labels("OK")))
            failed = samples.get(("rpcpoll_server_handled_total", echo_labels("NOT_FOUND")))
            return samples if (handled, failed) == (total, 1) else None

        samples = wait_for(flushed)  # the workers flush every second
        assert samples[("rpcpoll_server_started_total", echo_labels())] == total + 1
        assert samples[("rpcpoll_server_calls_in_flight", echo_labels())] == 0
        assert samples[("rpcpoll_server_connections", labels())] >= 1
    finally:
        for client in clients:
            client.close()
        code, log = served.stop()
    assert code == 0, log
    assert "every worker's" in log
    assert not os.path.exists(shared_dir)  # removed by the supervisor


def test_serve_refuses_a_metrics_port_in_use(handler_dir: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "rpcpoll", "serve", "obs_service:Echo",
             "--address", "127.0.0.1:0", "--metrics-port", port],
            capture_output=True, text=True, timeout=60, cwd=handler_dir,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
