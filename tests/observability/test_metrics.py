"""ServerMetrics and ClientMetrics in one process: counts, statuses, latency, in-flight calls,
connections, streams (fake endpoints), threads, and the optional dependency."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from obs_testutil import AsyncEcho, Echo
from prometheus_client import CollectorRegistry

import rpcpoll
from rpcpoll.examples.echo_rpc import (
    EchoRequest,
    EchoResponse,
    EchoServiceAsyncClient,
    EchoServiceClient,
    EchoServiceHandler,
)
from rpcpoll.middleware import ClientCallContext
from rpcpoll.observability.metrics import DEFAULT_BUCKETS, ClientMetrics, ServerMetrics
from rpcpoll.server import Server
from rpcpoll.service import CallContext

ECHO = {"rpc_type": "unary", "rpc_service": "echo.EchoService", "rpc_method": "Echo"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value (0 when absent, as Prometheus reads a missing series)."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_server_metrics_count_calls_by_status_with_latency(
    serve: Callable[..., Server],
) -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    server = serve(Echo(), middleware=[metrics])
    metrics.track_connections(server)
    with EchoServiceClient(server.address, timeout=5.0) as client:
        for _ in range(3):
            client.echo(EchoRequest(message="ok"))
        with pytest.raises(rpcpoll.NotFoundError):
            client.echo(EchoRequest(message=f"fail:{int(rpcpoll.StatusCode.NOT_FOUND)}"))
        with pytest.raises(rpcpoll.InternalError):
            client.echo(EchoRequest(message="crash"))
        assert value(registry, "rpcpoll_server_connections") == 1
    p = "rpcpoll_server"
    assert value(registry, f"{p}_started_total", **ECHO) == 5
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="OK") == 3
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="NOT_FOUND") == 1
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="INTERNAL") == 1
    assert value(registry, f"{p}_handling_seconds_count", **ECHO, rpc_code="OK") == 3
    assert value(registry, f"{p}_handling_seconds_bucket", **ECHO, rpc_code="OK", le="+Inf") == 3
    assert 0 < value(registry, f"{p}_handling_seconds_sum", **ECHO, rpc_code="OK") < 5
    assert value(registry, f"{p}_calls_in_flight", **ECHO) == 0
    # the documented buckets, cumulative
    les = [b for b in DEFAULT_BUCKETS]
    counts = [
        value(registry, f"{p}_handling_seconds_bucket", **ECHO, rpc_code="OK", le=str(le))
        for le in les
    ]
    assert counts == sorted(counts) and counts[-1] == 3
    metrics.close()
    assert registry.get_sample_value(f"{p}_started_total", ECHO) is None  # unregistered


def test_the_in_flight_gauge_counts_a_call_while_it_runs(serve: Callable[..., Server]) -> None:
    entered, release = threading.Event(), threading.Event()

    class Slow(EchoServiceHandler):
        def echo(self, request: EchoRequest, context: Any) -> EchoResponse:
            entered.set()
            release.wait(10)
            return EchoResponse(message=request.message)

    registry = CollectorRegistry()
    server = serve(Slow(), middleware=[ServerMetrics(registry)], mode="pool")
    with EchoServiceClient(server.address, timeout=10.0) as client:
        caller = threading.Thread(target=client.echo, args=(EchoRequest(message="x"),))
        caller.start()
        try:
            assert entered.wait(10)
            assert value(registry, "rpcpoll_server_calls_in_flight", **ECHO) == 1
            assert value(registry, "rpcpoll_server_handled_total", **ECHO, rpc_code="OK") == 0
        finally:
            release.set()
            caller.join()
    assert value(registry, "rpcpoll_server_calls_in_flight", **ECHO) == 0
    assert value(registry, "rpcpoll_server_handled_total", **ECHO, rpc_code="OK") == 1


def test_async_handlers_and_async_clients_are_counted(serve: Callable[..., Server]) -> None:
    server_registry, client_registry = CollectorRegistry(), CollectorRegistry()
    server = serve(AsyncEcho(), middleware=[ServerMetrics(server_registry)])
    client_metrics = ClientMetrics(client_registry)

    async def main() -> None:
        async with EchoServiceAsyncClient(
            server.address, timeout=5.0, middleware=[client_metrics]
        ) as client:
            await asyncio.gather(*(client.echo(EchoRequest(message="a")) for _ in range(4)))
            with pytest.raises(rpcpoll.AbortedError):
                await client.echo(EchoRequest(message=f"fail:{int(rpcpoll.StatusCode.ABORTED)}"))

    asyncio.run(main())
    for registry, side in ((server_registry, "server"), (client_registry, "client")):
        assert value(registry, f"rpcpoll_{side}_started_total", **ECHO) == 5
        assert value(registry, f"rpcpoll_{side}_handled_total", **ECHO, rpc_code="OK") == 4
        assert value(registry, f"rpcpoll_{side}_handled_total", **ECHO, rpc_code="ABORTED") == 1
        assert value(registry, f"rpcpoll_{side}_calls_in_flight", **ECHO) == 0
    client_metrics.close()


def test_client_metrics_count_what_the_caller_sees(serve: Callable[..., Server]) -> None:
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry, buckets=[0.5, 0.1])
    server = serve(Echo())
    with EchoServiceClient(server.address, timeout=5.0, middleware=[metrics]) as client:
        client.echo(EchoRequest(message="ok"))
        with pytest.raises(rpcpoll.InvalidArgumentError):
            client.echo(EchoRequest(message=f"fail:{int(rpcpoll.StatusCode.INVALID_ARGUMENT)}"))
    with (
        socket_nobody_listens() as address,
        EchoServiceClient(address, timeout=2.0, middleware=[metrics]) as client,
        pytest.raises(rpcpoll.UnavailableError),
    ):
        client.echo(EchoRequest(message="nobody"))
    p = "rpcpoll_client"
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="OK") == 1
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="INVALID_ARGUMENT") == 1
    assert value(registry, f"{p}_handled_total", **ECHO, rpc_code="UNAVAILABLE") == 1
    # custom buckets, sorted, +Inf added
    assert value(registry, f"{p}_handling_seconds_bucket", **ECHO, rpc_code="OK", le="0.1") == 1
    assert value(registry, f"{p}_handling_seconds_bucket", **ECHO, rpc_code="OK", le="+Inf") == 1
    assert (
        registry.get_sample_value(
            f"{p}_handling_seconds_bucket", {**ECHO, "rpc_code": "OK", "le": "0.25"}
        )
        is None
    )
    metrics.close()


class socket_nobody_listens:
    """A loopback address nothing listens on, for the block's duration."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_two_metrics_on_one_registry_are_refused() -> None:
    registry = CollectorRegistry()
    first = ServerMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ServerMetrics(registry)
    ClientMetrics(registry).close()  # other names: fine
    first.close()


# ---------------------------------------------------------------------- streams, fake endpoints


def stream_context(kind: str, side: str = "server") -> Any:
    if side == "server":
        return CallContext("pkg.Chat", "Talk", kind=kind)
    return ClientCallContext("pkg.Chat", "Talk", {}, kind=kind)


def chat(kind: str, code: str | None = None) -> dict[str, str]:
    found = {"rpc_type": kind, "rpc_service": "pkg.Chat", "rpc_method": "Talk"}
    return found if code is None else {**found, "rpc_code": code}


def test_a_server_stream_is_counted_message_by_message_and_ends_with_its_stream() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)

    def handler(request: Any, context: Any) -> Iterator[int]:
        yield from range(request)

    stream = metrics(3, stream_context("server_stream"), handler)
    kind = "server_stream"
    assert value(registry, "rpcpoll_server_calls_in_flight", **chat(kind)) == 1
    assert list(stream) == [0, 1, 2]
    assert value(registry, "rpcpoll_server_msg_received_total", **chat(kind)) == 1
    assert value(registry, "rpcpoll_server_msg_sent_total", **chat(kind)) == 3
    assert value(registry, "rpcpoll_server_handled_total", **chat(kind, "OK")) == 1
    assert value(registry, "rpcpoll_server_calls_in_flight", **chat(kind)) == 0
    # a consumer that stops early (the caller went away): CANCELLED
    early = metrics(5, stream_context(kind), handler)
    next(early)
    early.close()
    assert value(registry, "rpcpoll_server_handled_total", **chat(kind, "CANCELLED")) == 1
    assert value(registry, "rpcpoll_server_msg_sent_total", **chat(kind)) == 4
    metrics.close()


def test_client_and_bidi_streams_count_requests_and_failures() -> None:
    registry = CollectorRegistry()
    server, client = ServerMetrics(registry), ClientMetrics(registry)

    def summing(requests: Iterator[int], context: Any) -> int:
        return sum(requests)

    def failing_bidi(requests: Iterator[int], context: Any) -> Iterator[int]:
        for request in requests:
            yield request * 2
        raise rpcpoll.DataLossError(message="gone")

    assert server(iter([1, 2, 3]), stream_context("client_stream"), summing) == 6
    assert value(registry, "rpcpoll_server_msg_received_total", **chat("client_stream")) == 3
    assert value(registry, "rpcpoll_server_msg_sent_total", **chat("client_stream")) == 1
    assert value(registry, "rpcpoll_server_handled_total", **chat("client_stream", "OK")) == 1
    # a client sends the requests and receives the responses
    replies = client(iter([1, 2]), stream_context("bidi", "client"), failing_bidi)
    with pytest.raises(rpcpoll.DataLossError):
        list(replies)
    assert value(registry, "rpcpoll_client_msg_sent_total", **chat("bidi")) == 2
    assert value(registry, "rpcpoll_client_msg_received_total", **chat("bidi")) == 2
    assert value(registry, "rpcpoll_client_handled_total", **chat("bidi", "DATA_LOSS")) == 1
    server.close()
    client.close()


def test_async_streams_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)

    async def handler(requests: AsyncIterator[int], context: Any) -> AsyncIterator[int]:
        async def replies() -> AsyncIterator[int]:
            async for request in requests:
                yield request + 1

        return replies()

    async def requests() -> AsyncIterator[int]:
        for i in range(4):
            yield i

    async def main() -> list[int]:
        stream = await metrics.call_async(requests(), stream_context("bidi"), handler)
        return [item async for item in stream]

    assert asyncio.run(main()) == [1, 2, 3, 4]
    assert value(registry, "rpcpoll_server_msg_received_total", **chat("bidi")) == 4
    assert value(registry, "rpcpoll_server_msg_sent_total", **chat("bidi")) == 4
    assert value(registry, "rpcpoll_server_handled_total", **chat("bidi", "OK")) == 1
    metrics.close()


# ---------------------------------------------------------------------- threads


def test_counts_of_threads_that_ended_are_kept() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    context = CallContext("echo.EchoService", "Echo")

    def calls(n: int) -> None:
        for _ in range(n):
            metrics(1, context, lambda request, context: request)

    for round_ in range(3):  # threads end between rounds; their tables are folded in
        threads = [threading.Thread(target=calls, args=(100,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert value(registry, "rpcpoll_server_handled_total", **ECHO, rpc_code="OK") == (
            400 * (round_ + 1)
        )
    assert len(metrics._recorder._tables) == 1  # this thread's only: ended ones were folded
    assert value(registry, "rpcpoll_server_started_total", **ECHO) == 1200
    metrics.close()


def test_multiprocess_mode_flushes_what_changed_to_the_shared_files(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values
    from prometheus_client.multiprocess import MultiProcessCollector

    # What a worker of `rpcpoll serve --workers N --metrics-port P` runs with.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    metrics = ServerMetrics(None, flush_interval=3600)  # flushed by hand below, then on close
    shared = CollectorRegistry()
    MultiProcessCollector(shared, path=str(tmp_path))  # type: ignore[no-untyped-call]
    context = CallContext("echo.EchoService", "Echo")

    def fail(request: Any, context: Any) -> Any:
        raise rpcpoll.NotFoundError(message="no")

    try:
        for _ in range(3):
            metrics(1, context, lambda request, context: request)
        with pytest.raises(rpcpoll.NotFoundError):
            metrics(1, context, fail)
        assert value(shared, "rpcpoll_server_started_total", **ECHO) == 0  # not flushed yet
        metrics.flush()
        assert value(shared, "rpcpoll_server_started_total", **ECHO) == 4
        assert value(shared, "rpcpoll_server_handled_total", **ECHO, rpc_code="NOT_FOUND") == 1
        assert value(shared, "rpcpoll_server_handling_seconds_count", **ECHO, rpc_code="OK") == 3
        assert (
            value(
                shared, "rpcpoll_server_handling_seconds_bucket", **ECHO, rpc_code="OK", le="+Inf"
            )
            == 3
        )
        assert value(shared, "rpcpoll_server_calls_in_flight", **ECHO) == 0
        metrics(1, context, lambda request, context: request)
        metrics.close()  # the last flush adds only what changed since the first
        assert value(shared, "rpcpoll_server_handled_total", **ECHO, rpc_code="OK") == 4
        assert value(shared, "rpcpoll_server_handling_seconds_count", **ECHO, rpc_code="OK") == 4
        assert 0 < value(shared, "rpcpoll_server_handling_seconds_sum", **ECHO, rpc_code="OK") < 1
    finally:
        metrics.close()
        values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------- the optional dependency


def test_rpcpoll_imports_without_the_optional_packages() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"  # None: `import` raises ImportError
        "sys.modules['opentelemetry'] = None\n"
        "import rpcpoll, rpcpoll.observability, rpcpoll.server.cli\n"
        "from rpcpoll.observability import AccessLog\n"
        "try:\n"
        "    import rpcpoll.observability.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    import rpcpoll.observability.tracing\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [
        "rpcpoll.observability.metrics needs prometheus_client: pip install 'rpcpoll[metrics]'",
        "rpcpoll.observability.tracing needs opentelemetry-api: pip install 'rpcpoll[tracing]'",
    ]


def test_serve_refuses_metrics_without_prometheus_client() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "from rpcpoll.cli import main\n"
        "sys.argv = ['rpcpoll', 'serve', '--address', '127.0.0.1:0', '--metrics-port', '0']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "pip install 'rpcpoll[metrics]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_default_buckets_are_sorted_and_finite() -> None:
    assert list(DEFAULT_BUCKETS) == sorted(DEFAULT_BUCKETS)
    assert all(math.isfinite(b) for b in DEFAULT_BUCKETS)
    assert {0.005, 0.01, 0.1, 1.0, 10.0} <= set(DEFAULT_BUCKETS)  # grpc-prometheus's, kept
