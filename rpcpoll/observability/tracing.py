"""OpenTelemetry tracing middleware: `ClientTracing` and `ServerTracing` (sync and async faces).

`ClientTracing` starts a CLIENT span per call (or stream), a child of the caller's current
span, and injects its W3C trace context (`traceparent`, and `tracestate` when there is one)
into the request metadata; `ServerTracing` extracts it and starts the SERVER span as its child,
so a trace crosses processes. The server span is the current span while the handler runs (and
while each message of a streamed response is produced), so spans the handler starts, and the
calls it makes through a `ClientTracing` client, are its children.

Spans follow OpenTelemetry's RPC semantic conventions (docs/operating.md, Tracing):

- name `"<service>/<method>"`, e.g. `"echo.EchoService/Echo"`;
- `rpc.system` = "rpcpoll" (the framework and its wire format; TTHeader is only the framing),
  `rpc.service`, `rpc.method`, `rpc.response.status_code` (the status name: "OK", ...);
- server spans: `network.peer.address` / `network.peer.port` (the caller); client spans:
  `server.address` / `server.port` (the instance the call went to, set when it ends);
- status ERROR with the error's message on a client span for any status but OK, and on a
  server span for the statuses that are the server's fault (UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS; gRPC's rule); an exception that is not an
  RpcError (a handler bug) is also recorded as an event.

The tracer comes from `tracer_provider` (default: the global one, which may be set after the
middleware is made), and trace context is carried by `propagator` (default: the global one,
W3C trace context and baggage unless configured otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, SpanKind, Status, TracerProvider
    from opentelemetry.trace import StatusCode as SpanStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rpcpoll.observability.tracing needs opentelemetry-api: pip install 'rpcpoll[tracing]'"
    ) from exc

from .._version import __version__
from ..middleware import Endpoint, Middleware, observe_stream
from ..protocol.status import RpcError, StatusCode
from ._calls import STREAMED_RESPONSES, call_status

__all__ = ["RPC_SYSTEM", "ClientTracing", "ServerTracing"]

#: The `rpc.system` attribute of every span.
RPC_SYSTEM = "rpcpoll"

#: Statuses that mark a client span as failed: all but OK.
CLIENT_ERRORS = frozenset(StatusCode) - {StatusCode.OK}
#: Statuses that mark a server span as failed: the server's fault, not the caller's.
SERVER_ERRORS = frozenset(
    {
        StatusCode.UNKNOWN,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.UNIMPLEMENTED,
        StatusCode.INTERNAL,
        StatusCode.UNAVAILABLE,
        StatusCode.DATA_LOSS,
    }
)


_ROOT = otel_context.Context()  # an empty context (contexts are never changed in place)
_PEER_CACHE = 4096  # peers whose attributes are kept


class _Tracing(Middleware):
    """What both sides share: the tracer, the propagator, attributes per method."""

    _kind: SpanKind

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        """`tracer_provider`: where spans go (default: the global provider).
        `propagator`: how trace context is carried in metadata (default: the global one)."""
        self._tracer = trace.get_tracer("rpcpoll", __version__, tracer_provider)
        self._propagator = propagator
        self._methods: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        # (propagator, the metadata keys it reads): most calls carry none of them, and then
        # extracting is skipped. One tuple, swapped whole, so threads never see half of it.
        self._fields: tuple[Any, frozenset[str]] = (None, frozenset())
        self._peers: dict[str, dict[str, Any]] = {}  # peer -> its attributes (a cache)

    def _textmap(self) -> TextMapPropagator:
        return self._propagator or propagate.get_global_textmap()

    def _carries_context(self, propagator: TextMapPropagator, metadata: Any) -> bool:
        known, fields = self._fields
        if known is not propagator:
            fields = frozenset(propagator.fields)
            self._fields = (propagator, fields)
        return any(field in metadata for field in fields)

    def _peer(self, peer: str, prefix: str) -> dict[str, Any]:
        """The attributes of a peer address (cached: a connection makes many calls)."""
        key = prefix + peer
        attributes = self._peers.get(key)
        if attributes is None:
            if len(self._peers) >= _PEER_CACHE:
                self._peers.clear()
            attributes = self._peers[key] = {}
            _peer_attributes(peer, attributes, prefix)
        return attributes

    def _method(self, context: Any) -> tuple[str, dict[str, str]]:
        """(span name, fixed attributes) of the context's method, made once per method."""
        key = (context.service, context.method)
        known = self._methods.get(key)
        if known is None:
            attributes = {
                "rpc.system": RPC_SYSTEM,
                "rpc.service": context.service,
                "rpc.method": context.method,
            }
            known = self._methods[key] = (f"{context.service}/{context.method}", attributes)
        return known

    def _end(self, span: Span, error: BaseException | None, errors: frozenset[StatusCode]) -> None:
        """Set the outcome on `span` and end it; `errors`: the statuses that fail it."""
        if not span.is_recording():  # not sampled, or no SDK: nothing would be kept
            span.end()
            return
        code = call_status(error)
        span.set_attribute("rpc.response.status_code", code.name)
        if code in errors:
            message = error.message if isinstance(error, RpcError) else code.name
            span.set_status(Status(SpanStatus.ERROR, message))
            if error is not None and not isinstance(error, (RpcError, GeneratorExit)):
                span.record_exception(error)
        span.end()


class ServerTracing(_Tracing):
    """A SERVER span per call, the child of the caller's span (module docs)."""

    def __call__(self, request: Any, context: Any, next: Endpoint) -> Any:
        span, active = self._start(context)
        token = otel_context.attach(active)
        try:
            response = next(request, context)
        except BaseException as exc:
            self._end(span, exc, SERVER_ERRORS)
            raise
        finally:
            otel_context.detach(token)
        if context.kind in STREAMED_RESPONSES:
            return self._responses(response, span, active)
        self._end(span, None, SERVER_ERRORS)
        return response

    async def call_async(self, request: Any, context: Any, next: Endpoint) -> Any:
        # The call runs in its own task: attaching changes only that task's context.
        span, active = self._start(context)
        token = otel_context.attach(active)
        try:
            response = await next(request, context)
        except BaseException as exc:
            self._end(span, exc, SERVER_ERRORS)
            raise
        finally:
            otel_context.detach(token)
        if context.kind in STREAMED_RESPONSES:
            return self._async_responses(response, span, active)
        self._end(span, None, SERVER_ERRORS)
        return response

    def _start(self, context: Any) -> tuple[Span, otel_context.Context]:
        """The call's span, and the context to run the handler in (the span current)."""
        name, fixed = self._method(context)
        # Without trace context in the metadata the parent is an empty context: the span is a
        # root, whatever the serving thread's current context may be.
        metadata, parent = context.metadata, _ROOT
        if metadata:
            propagator = self._textmap()
            if self._carries_context(propagator, metadata):
                parent = propagator.extract(metadata, context=_ROOT)
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=fixed)
        if context.peer and span.is_recording():
            span.set_attributes(self._peer(context.peer, "network.peer"))
        return span, trace.set_span_in_context(span, parent)

    def _responses(self, stream: Any, span: Span, active: otel_context.Context) -> Iterator[Any]:
        """The handler's response stream, each message produced with the span current; the
        span ends with the stream."""
        stream = iter(stream)
        error: BaseException | None = None
        try:
            while True:
                token = otel_context.attach(active)
                try:
                    message = next(stream)
                except StopIteration:
                    break
                finally:
                    otel_context.detach(token)
                yield message
        except BaseException as exc:
            error = exc
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            raise
        finally:
            self._end(span, error, SERVER_ERRORS)

    async def _async_responses(
        self, stream: Any, span: Span, active: otel_context.Context
    ) -> AsyncIterator[Any]:
        error: BaseException | None = None
        try:
            while True:
                token = otel_context.attach(active)
                try:
                    message = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                yield message
        except BaseException as exc:
            error = exc
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
            raise
        finally:
            self._end(span, error, SERVER_ERRORS)


class ClientTracing(_Tracing):
    """A CLIENT span per call or stream, trace context sent in its metadata (module docs)."""

    def __call__(self, request: Any, context: Any, next: Endpoint) -> Any:
        span, active = self._start(context)
        token = otel_context.attach(active)
        try:
            response = next(request, context)
        except BaseException as exc:
            self._finish(span, context, exc)
            raise
        finally:
            otel_context.detach(token)
        if context.kind in STREAMED_RESPONSES:
            return observe_stream(response, None, partial(self._finish, span, context))
        self._finish(span, context, None)
        return response

    async def call_async(self, request: Any, context: Any, next: Endpoint) -> Any:
        span, active = self._start(context)
        token = otel_context.attach(active)
        try:
            response = await next(request, context)
        except BaseException as exc:
            self._finish(span, context, exc)
            raise
        finally:
            otel_context.detach(token)
        if context.kind in STREAMED_RESPONSES:
            return observe_stream(response, None, partial(self._finish, span, context))
        self._finish(span, context, None)
        return response

    def _start(self, context: Any) -> tuple[Span, otel_context.Context]:
        name, fixed = self._method(context)
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=fixed)
        active = trace.set_span_in_context(span)
        self._textmap().inject(context.metadata, context=active)  # the dict sent with the call
        return span, active

    def _finish(self, span: Span, context: Any, error: BaseException | None) -> None:
        if context.peer and span.is_recording():
            span.set_attributes(self._peer(context.peer, "server"))
        self._end(span, error, CLIENT_ERRORS)


def _peer_attributes(peer: str, attributes: dict[str, Any], prefix: str) -> None:
    """`<prefix>.address` and `<prefix>.port` from "host:port", "[v6]:port" or "unix:/path"."""
    if not peer:
        return
    if peer.startswith("unix:"):
        attributes["network.transport"] = "unix"
        attributes[f"{prefix}.address"] = peer[5:]
        return
    host, _, port = peer.rpartition(":")
    if not host:
        attributes[f"{prefix}.address"] = peer
        return
    attributes[f"{prefix}.address"] = host.strip("[]")
    if port.isdigit():
        attributes[f"{prefix}.port"] = int(port)
