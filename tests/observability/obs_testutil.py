"""Helpers of the observability tests: handlers, `rpcpoll serve` in its own process, scrapes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import rpcpoll
from rpcpoll.examples.echo_rpc import (
    EchoRequest,
    EchoResponse,
    EchoServiceAsyncHandler,
    EchoServiceHandler,
)

LISTENING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")
METRICS_AT = re.compile(r"metrics on (?P<url>http://\S+)")

#: The handlers `rpcpoll serve` runs in these tests. `Echo` fails with the status given as
#: "fail:CODE" and tells its pid and metrics directory in the reply metadata. Importing the
#: module with SPANS_FILE set configures the OpenTelemetry SDK to write every span as a JSON
#: line to that file, as it ends (a SimpleSpanProcessor: before the reply is sent).
HANDLER_SOURCE = """\
import json
import os

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoResponse, EchoServiceAsyncHandler, EchoServiceHandler


def _answer(request, context):
    if request.message.startswith("fail:"):
        raise rpcpoll.RpcError(int(request.message[5:]), "asked to fail")
    context.set_reply_metadata("pid", str(os.getpid()))
    context.set_reply_metadata("multiproc-dir", os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    return EchoResponse(message=request.message, payload=request.payload)


class Echo(EchoServiceHandler):
    def echo(self, request, context):
        return _answer(request, context)


if os.environ.get("SPANS_FILE"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class FileExporter(SpanExporter):
        def export(self, spans):
            with open(os.environ["SPANS_FILE"], "a") as out:
                for span in spans:
                    parent = span.parent
                    out.write(json.dumps({
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(span.context.trace_id, "032x"),
                        "span_id": format(span.context.span_id, "016x"),
                        "parent_id": format(parent.span_id, "016x") if parent else None,
                        "parent_remote": bool(parent and parent.is_remote),
                        "attributes": dict(span.attributes),
                        "status": span.status.status_code.name,
                    }) + "\\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)


class TracedEcho(EchoServiceAsyncHandler):
    async def echo(self, request, context):
        from opentelemetry import trace

        current = trace.get_current_span().get_span_context()
        context.set_reply_metadata("handler-span", format(current.span_id, "016x"))
        return _answer(request, context)
"""


class Echo(EchoServiceHandler):
    """In-process twin of HANDLER_SOURCE's Echo: "fail:CODE" fails, "crash" raises."""

    def echo(self, request: EchoRequest, context: Any) -> EchoResponse:
        return answer(request, context)


class AsyncEcho(EchoServiceAsyncHandler):
    async def echo(self, request: EchoRequest, context: Any) -> EchoResponse:  # type: ignore[override]
        return answer(request, context)


def answer(request: EchoRequest, context: Any) -> EchoResponse:
    if request.message.startswith("fail:"):
        raise rpcpoll.RpcError(int(request.message[5:]), "asked to fail")
    if request.message == "crash":
        raise ValueError("a handler bug")
    return EchoResponse(message=request.message, payload=request.payload)


def rpcpoll_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpcpoll", *args]


class Serve:
    """`rpcpoll serve ARGS...` in its own process on a free loopback port; `address` and (with
    --metrics-port) `metrics_url` are read from its log."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            rpcpoll_command("serve", *args, "--address", "127.0.0.1:0", "--exit-wait", "5"),
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        assert self.proc.stderr is not None
        self.log: list[str] = []
        self.metrics_url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            found = METRICS_AT.search(line)
            if found:
                self.metrics_url = found["url"]
            match = LISTENING.search(line)
            if match:
                self.address = match["address"]
                return
        self.stop()
        pytest.fail("rpcpoll serve did not start:\n" + "".join(self.log))

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        """SIGTERM, wait; (exit status, the whole log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()
        self.proc.stderr.close()
        return self.proc.returncode, "".join(self.log) + rest


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET a Prometheus text page and parse it with prometheus_client's parser:
    {(sample name, labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def echo_labels(code: str | None = None, kind: str = "unary") -> frozenset[tuple[str, str]]:
    """The labels of the echo method's series (with `rpc_code` when given)."""
    found = {"rpc_type": kind, "rpc_service": "echo.EchoService", "rpc_method": "Echo"}
    if code is not None:
        found["rpc_code"] = code
    return frozenset(found.items())


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check()` until it returns something true (what it returned) or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: last value {value!r}")
        time.sleep(0.05)
