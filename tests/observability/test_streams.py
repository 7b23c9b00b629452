"""The observability middleware on real streams: the route guide's server stream, client
stream and bidi, sync and async, with metrics, tracing and the access log on both sides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from rpcpoll.examples.route_guide import AsyncRouteGuide, RouteGuide
from rpcpoll.examples.route_guide_rpc import (
    Point,
    Rectangle,
    RouteGuideAsyncClient,
    RouteGuideClient,
    RouteNote,
)
from rpcpoll.observability import AccessLog
from rpcpoll.observability.metrics import ClientMetrics, ServerMetrics
from rpcpoll.observability.tracing import ClientTracing, ServerTracing
from rpcpoll.server import Server

RECTANGLE = Rectangle(lo=Point(latitude=0, longitude=0), hi=Point(latitude=2_000_000))  # 3 features
POINTS = [Point(latitude=i, longitude=i) for i in range(4)]
NOTES = [RouteNote(location=Point(latitude=1, longitude=1), message=str(i)) for i in range(3)]


def count(registry: CollectorRegistry, name: str, method: str, kind: str, **more: str) -> float:
    labels = {"rpc_type": kind, "rpc_service": "routeguide.RouteGuide", "rpc_method": method}
    return registry.get_sample_value(name, {**labels, **more}) or 0.0


def sync_calls(address: str, middleware: list[Any]) -> None:
    with RouteGuideClient(address, timeout=5.0, middleware=middleware) as client:
        assert len(list(client.list_features(RECTANGLE))) == 3
        assert client.record_route(POINTS).point_count == 4
        assert len(list(client.route_chat(NOTES))) == 3  # 0 + 1 + 2 earlier notes


def async_calls(address: str, middleware: list[Any]) -> None:
    async def main() -> None:
        async with RouteGuideAsyncClient(address, timeout=5.0, middleware=middleware) as client:
            assert len([f async for f in client.list_features(RECTANGLE)]) == 3
            assert (await client.record_route(POINTS)).point_count == 4
            assert len([n async for n in client.route_chat(NOTES)]) == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    ("handler", "calls"), [(RouteGuide, sync_calls), (AsyncRouteGuide, async_calls)]
)
def test_streams_are_measured_traced_and_logged_on_both_sides(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    handler: type,
    calls: Callable[[str, list[Any]], None],
) -> None:
    caplog.set_level(logging.INFO, logger="rpcpoll.access")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server_registry, client_registry = CollectorRegistry(), CollectorRegistry()
    server_middleware = [ServerTracing(provider), ServerMetrics(server_registry), AccessLog()]
    server = serve(handler(), middleware=server_middleware)
    calls(server.address, [ClientTracing(provider), ClientMetrics(client_registry)])
    server.shutdown(2.0)  # every stream's end is recorded (the handler side ends last)

    s, c = "rpcpoll_server", "rpcpoll_client"
    for method, kind, requests, responses in (
        ("ListFeatures", "server_stream", 1, 3),
        ("RecordRoute", "client_stream", 4, 1),
        ("RouteChat", "bidi", 3, 3),
    ):
        assert count(server_registry, f"{s}_handled_total", method, kind, rpc_code="OK") == 1
        assert count(server_registry, f"{s}_msg_received_total", method, kind) == requests
        assert count(server_registry, f"{s}_msg_sent_total", method, kind) == responses
        assert count(server_registry, f"{s}_calls_in_flight", method, kind) == 0
        assert count(client_registry, f"{c}_handled_total", method, kind, rpc_code="OK") == 1
        assert count(client_registry, f"{c}_msg_sent_total", method, kind) == requests
        assert count(client_registry, f"{c}_msg_received_total", method, kind) == responses

    spans = exporter.get_finished_spans()
    servers = {s.name: s for s in spans if s.kind is SpanKind.SERVER}
    clients = {s.name: s for s in spans if s.kind is SpanKind.CLIENT}
    assert (
        set(servers)
        == set(clients)
        == {f"routeguide.RouteGuide/{m}" for m in ("ListFeatures", "RecordRoute", "RouteChat")}
    )
    for name, server_span in servers.items():
        assert server_span.parent is not None and clients[name].context is not None
        assert server_span.parent.span_id == clients[name].context.span_id

    lines = [r.getMessage() for r in caplog.records if r.name == "rpcpoll.access"]
    assert len(lines) == 3
    assert any("rpc=routeguide.RouteGuide/RouteChat status=OK" in line
               and line.endswith("requests=3 responses=3") for line in lines)  # fmt: skip
    provider.shutdown()
