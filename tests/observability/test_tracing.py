"""ServerTracing and ClientTracing with the OpenTelemetry SDK's in-memory exporter: spans,
attributes, statuses, parent/child links in one process and across two, the server span
current in handlers (sync and async), and streams (fake endpoints)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from obs_testutil import AsyncEcho, Echo, Serve
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode as SpanStatus

import rpcpoll
from rpcpoll.examples.echo_rpc import (
    EchoRequest,
    EchoResponse,
    EchoServiceAsyncClient,
    EchoServiceClient,
    EchoServiceHandler,
)
from rpcpoll.middleware import ClientCallContext
from rpcpoll.observability.tracing import ClientTracing, ServerTracing
from rpcpoll.server import Server
from rpcpoll.service import CallContext

NOT_FOUND = int(rpcpoll.StatusCode.NOT_FOUND)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is kind]


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None and parent.context is not None and child.context is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent.span_id == parent.context.span_id


def test_a_call_makes_a_client_span_and_a_server_span_its_child(
    serve: Callable[..., Server], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []

    class Handler(EchoServiceHandler):
        def echo(self, request: EchoRequest, context: Any) -> EchoResponse:
            seen.append(trace.get_current_span().get_span_context().span_id)
            return EchoResponse(message=request.message)

    server = serve(Handler(), middleware=[ServerTracing(provider)])
    client_tracing = ClientTracing(provider)
    with EchoServiceClient(server.address, timeout=5.0, middleware=[client_tracing]) as client:
        client.echo(EchoRequest(message="hi"))
    spans = exporter.get_finished_spans()
    (server_span,) = by_kind(spans, SpanKind.SERVER)
    (client_span,) = by_kind(spans, SpanKind.CLIENT)
    assert server_span.name == client_span.name == "echo.EchoService/Echo"
    assert_child(server_span, client_span)
    assert server_span.parent is not None and server_span.parent.is_remote
    assert client_span.parent is None  # no span was current in the test: a root
    assert server_span.context is not None and seen == [server_span.context.span_id]
    common = {"rpc.system": "rpcpoll", "rpc.service": "echo.EchoService", "rpc.method": "Echo"}
    assert (
        dict(server_span.attributes or {}).items()
        >= {
            **common,
            "rpc.response.status_code": "OK",
            "network.peer.address": "127.0.0.1",
        }.items()
    )
    assert isinstance((server_span.attributes or {})["network.peer.port"], int)
    host, port = server.address.rsplit(":", 1)
    assert (
        dict(client_span.attributes or {}).items()
        >= {
            **common,
            "rpc.response.status_code": "OK",
            "server.address": host,
            "server.port": int(port),
        }.items()
    )
    assert server_span.status.status_code is SpanStatus.UNSET
    assert client_span.status.status_code is SpanStatus.UNSET


def test_failures_mark_spans_as_errors_by_whose_fault_they_are(
    serve: Callable[..., Server], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    server = serve(Echo(), middleware=[ServerTracing(provider)])
    with EchoServiceClient(
        server.address, timeout=5.0, middleware=[ClientTracing(provider)]
    ) as client:
        with pytest.raises(rpcpoll.NotFoundError):
            client.echo(EchoRequest(message=f"fail:{NOT_FOUND}"))
        with pytest.raises(rpcpoll.InternalError):
            client.echo(EchoRequest(message="crash"))
    spans = exporter.get_finished_spans()
    servers, clients = by_kind(spans, SpanKind.SERVER), by_kind(spans, SpanKind.CLIENT)
    codes = [(s.attributes or {})["rpc.response.status_code"] for s in servers]
    assert codes == ["NOT_FOUND", "INTERNAL"]
    # NOT_FOUND is the caller's business: an error on the client span only (gRPC's rule)
    assert [s.status.status_code for s in servers] == [SpanStatus.UNSET, SpanStatus.ERROR]
    assert [s.status.status_code for s in clients] == [SpanStatus.ERROR, SpanStatus.ERROR]
    assert clients[0].status.description == "asked to fail"
    # the handler's own exception is recorded on the server span (not sent to the caller)
    assert [event.name for event in servers[1].events] == ["exception"]
    assert (servers[1].events[0].attributes or {})["exception.type"] == "ValueError"


def test_async_calls_are_traced_and_the_span_is_current_in_the_async_handler(
    serve: Callable[..., Server], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from rpcpoll.examples.echo_rpc import EchoServiceAsyncHandler

    seen: list[int] = []

    class Handler(EchoServiceAsyncHandler):
        async def echo(self, request: EchoRequest, context: Any) -> EchoResponse:  # type: ignore[override]
            await asyncio.sleep(0)  # the span stays current across an await
            seen.append(trace.get_current_span().get_span_context().span_id)
            return EchoResponse(message=request.message)

    server = serve(Handler(), middleware=[ServerTracing(provider)])
    tracer = provider.get_tracer("test")

    async def main() -> None:
        async with EchoServiceAsyncClient(
            server.address, timeout=5.0, middleware=[ClientTracing(provider)]
        ) as client:
            with tracer.start_as_current_span("caller"):
                await asyncio.gather(*(client.echo(EchoRequest(message="a")) for _ in range(3)))

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    (caller,) = [span for span in spans if span.name == "caller"]
    servers, clients = by_kind(spans, SpanKind.SERVER), by_kind(spans, SpanKind.CLIENT)
    assert len(servers) == len(clients) == 3
    for client_span in clients:
        assert_child(client_span, caller)  # the caller's current span is the parent
    client_ids = {span.context.span_id for span in clients if span.context}
    assert {span.parent.span_id for span in servers if span.parent} == client_ids
    assert sorted(seen) == sorted(span.context.span_id for span in servers if span.context)


def test_a_server_span_with_no_trace_context_is_a_root(
    serve: Callable[..., Server], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    server = serve(AsyncEcho(), middleware=[ServerTracing(provider)])
    with EchoServiceClient(server.address, timeout=5.0) as client:
        client.echo(EchoRequest(message="x"), metadata={"unrelated": "1"})
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.parent is None


def test_the_server_span_is_the_child_of_the_client_span_across_processes(
    handler_dir: Path,
    tmp_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    served = Serve(
        "obs_service:TracedEcho", "--tracing", cwd=handler_dir, env={"SPANS_FILE": str(spans_file)}
    )
    try:
        with EchoServiceClient(
            served.address, timeout=5.0, middleware=[ClientTracing(provider)]
        ) as client:
            reply: dict[str, str] = {}
            client.echo(EchoRequest(message="across"), reply_metadata=reply)
            with pytest.raises(rpcpoll.NotFoundError):
                client.echo(EchoRequest(message=f"fail:{NOT_FOUND}"))
    finally:
        code, log = served.stop()
    assert code == 0, log
    assert "no OpenTelemetry tracer provider" not in log
    # The server's span processor writes each span as it ends, before the reply is sent.
    remote = [json.loads(line) for line in spans_file.read_text().splitlines()]
    remote = [span for span in remote if span["kind"] == "SERVER"]
    clients = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    assert len(remote) == len(clients) == 2
    for server_span, client_span in zip(remote, clients, strict=True):
        assert client_span.context is not None
        assert server_span["trace_id"] == format(client_span.context.trace_id, "032x")
        assert server_span["parent_id"] == format(client_span.context.span_id, "016x")
        assert server_span["parent_remote"] is True
        assert server_span["name"] == "echo.EchoService/Echo"
        assert server_span["attributes"]["rpc.system"] == "rpcpoll"
    assert reply["handler-span"] == remote[0]["span_id"]  # current in the async handler
    assert remote[1]["attributes"]["rpc.response.status_code"] == "NOT_FOUND"


# ---------------------------------------------------------------------- streams, fake endpoints


def test_a_server_stream_span_ends_with_the_stream_and_is_current_while_it_produces(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = ServerTracing(provider)
    seen: list[int] = []

    def handler(request: int, context: Any) -> Iterator[int]:
        for i in range(request):
            seen.append(trace.get_current_span().get_span_context().span_id)
            yield i

    stream = tracing(3, CallContext("pkg.Chat", "Talk", kind="server_stream"), handler)
    assert exporter.get_finished_spans() == ()  # not before its end
    assert list(stream) == [0, 1, 2]
    (span,) = exporter.get_finished_spans()
    assert span.context is not None and seen == [span.context.span_id] * 3
    assert not trace.get_current_span().get_span_context().is_valid  # not leaked to the reader
    early = tracing(5, CallContext("pkg.Chat", "Talk", kind="server_stream"), handler)
    next(early)
    early.close()
    assert (exporter.get_finished_spans()[-1].attributes or {})[
        "rpc.response.status_code"
    ] == "CANCELLED"


def test_client_stream_spans_carry_the_context_and_end_with_the_stream(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = ClientTracing(provider)
    sent: list[dict[str, str]] = []

    async def network(request: Any, context: ClientCallContext) -> AsyncIterator[int]:
        sent.append(dict(context.metadata))

        async def replies() -> AsyncIterator[int]:
            yield 1
            raise rpcpoll.UnavailableError(message="lost")

        return replies()

    async def main() -> list[int]:
        context = ClientCallContext("pkg.Chat", "Talk", {}, kind="bidi")
        stream = await tracing.call_async(iter([]), context, network)
        got = []
        with pytest.raises(rpcpoll.UnavailableError):
            async for item in stream:
                got.append(item)
        return got

    assert asyncio.run(main()) == [1]
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    version, trace_id, span_id, flags = sent[0]["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled
    assert span.status.status_code is SpanStatus.ERROR and span.status.description == "lost"
