"""From a call frame to a reply frame: routing, decoding, the handler, error mapping.

The error contract (the same as `rpcpoll.service.LocalChannel`'s):

- a handler raising `RpcError` sends that code and message;
- any other exception sends INTERNAL with a generic message; the traceback is logged, never sent;
- an unknown service or method gets UNIMPLEMENTED; an undecodable request INVALID_ARGUMENT;
- a call whose deadline passed before it could run gets DEADLINE_EXCEEDED without running;
- with limits set (`set_limits`): a header over `max_header_size` bytes or with too many
  entries, and a reply that would exceed `max_frame_size`, get RESOURCE_EXHAUSTED.

None of these affect the connection. Frames that are not calls are protocol errors, raised
to the caller, which closes the connection.

Replies are appended to a `bytearray` that collects a whole read batch (the server sends it
with one `sendmsg`): the response is encoded straight after its frame header, whose length is
filled in afterwards, so no intermediate `bytes` is made. The common call (a header seen
before: `by_header`) goes from the server's frame loop to `call()` and nothing else.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..message import DecodeError, Message
from ..message.wire import encode_into
from ..middleware import build_chain
from ..protocol.frame import (
    FIXED_HEADER,
    FIXED_SIZE,
    MAGIC,
    REPLY_HEAD,
    HeaderLimitError,
    MessageType,
    ProtocolError,
    append_frame,
    exception_info,
    parse_info,
    reply_info,
)
from ..protocol.status import RpcError, StatusCode
from ..service import AsyncHandler, CallContext, Handler, MethodDescriptor, ServiceDescriptor

if TYPE_CHECKING:
    from ..transport.identity import PeerIdentity

__all__ = ["Dispatcher", "Route"]

log = logging.getLogger("rpcpoll.server")

#: What the header cache holds for a plain call: (route, timeout in ms, metadata).
CachedCall = tuple["Route", int | None, Mapping[str, str]]

_REPLY_WORDS = (len(REPLY_HEAD) - FIXED_SIZE) >> 2


class Route:
    """One method of a registered handler, with what a call of it needs at hand."""

    __slots__ = (
        "blocking",
        "call",
        "decode",
        "is_async",
        "kind",
        "method",
        "method_name",
        "request_type",
        "response_type",
        "service",
        "service_name",
        "where",
    )

    def __init__(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        handler: Any,
        middleware: Sequence[Any] = (),
    ):
        self.service = service
        self.method = method
        bound = getattr(handler, method.python_name)
        #: "unary", "server_stream", "client_stream" or "bidi"
        self.kind = method.kind
        #: an `async def` method: it runs on the server's event loop (server/aio.py)
        self.is_async = inspect.iscoroutinefunction(bound) or inspect.isasyncgenfunction(bound)
        if inspect.isasyncgenfunction(bound):
            bound = _returning(bound)  # middleware awaits `next`: it gets the async iterator
        #: the handler's method, inside the server's middleware (rpcpoll.middleware)
        self.call: Callable[[Any, CallContext], Any] = build_chain(bound, middleware, self.is_async)
        self.request_type: type[Message] = method.request_type
        self.decode: Callable[[Any], Any] = method.request_type.__rpcpoll_decode__
        self.response_type: type[Message] = method.response_type
        self.service_name = service.full_name
        self.method_name = method.name
        self.where = f"{service.full_name}/{method.name}"
        #: mode "auto": a call of this method blocked the poller once (server.py)
        self.blocking = False


def _returning(generator: Callable[[Any, CallContext], Any]) -> Callable[[Any, Any], Any]:
    """An `async def` that returns what the async generator function `generator` makes."""

    async def endpoint(request: Any, context: Any) -> Any:
        return generator(request, context)

    return endpoint


class Dispatcher:
    """The routing table of a server: (service, method) wire names to bound handler methods."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._stream_routes: dict[tuple[str, str], Route] = {}  # streaming methods
        self._by_method: dict[str, Route | None] = {}  # None: the name is ambiguous
        self.services: dict[str, Handler | AsyncHandler] = {}
        #: Header info bytes -> (route, timeout ms, metadata) for plain calls: most requests
        #: repeat a few headers exactly, so they skip parsing and routing. Small headers only,
        #: and cleared when full, so a peer cannot grow it without bound.
        self.by_header: dict[bytes, CachedCall] = {}
        # Limits (set_limits); None: unlimited, as before a server sets them.
        self.max_header_size: int | None = None
        self.max_header_entries: int | None = None
        self.max_frame_size: int | None = None
        self._oversized_routes: set[str] = set()  # routes whose oversized reply was logged
        #: wraps every method registered from now on (rpcpoll.middleware)
        self.middleware: Sequence[Any] = ()

    def set_limits(
        self,
        *,
        max_header_size: int | None = None,
        max_header_entries: int | None = None,
        max_frame_size: int | None = None,
    ) -> None:
        """Answer RESOURCE_EXHAUSTED to a call whose header has more than `max_header_size`
        bytes or `max_header_entries` entries, and instead of a reply larger than
        `max_frame_size`."""
        self.max_header_size = max_header_size
        self.max_header_entries = max_header_entries
        self.max_frame_size = max_frame_size

    def register(self, handler: Handler | AsyncHandler) -> None:
        """Serve every method of `handler`'s generated service."""
        service = getattr(type(handler), "SERVICE", None)
        if not isinstance(service, ServiceDescriptor):
            raise TypeError(f"{type(handler).__name__} is not a generated handler (no SERVICE)")
        if service.full_name in self.services:
            raise ValueError(f"service {service.full_name} is already registered")
        self.services[service.full_name] = handler
        for method in service.methods.values():
            route = Route(service, method, handler, self.middleware)
            if not method.unary:
                self._stream_routes[(service.full_name, method.name)] = route
                continue
            self._routes[(service.full_name, method.name)] = route
            # Kitex routes a frame without a service name by a method name that is unique.
            self._by_method[method.name] = None if method.name in self._by_method else route

    @property
    def has_async(self) -> bool:
        """Whether any registered method is `async def` (the server then runs on asyncio)."""
        routes = [*self._routes.values(), *self._stream_routes.values()]
        return any(route.is_async for route in routes)

    def route(self, service: str, method: str) -> Route | None:
        if service:
            return self._routes.get((service, method))
        return self._by_method.get(method)

    def stream_route(self, service: str, method: str) -> Route | None:
        """The streaming method a stream opens (the service name is required)."""
        return self._stream_routes.get((service, method))

    def unary_mismatch(self, service: str, method: str, streaming: bool) -> str:
        """Why a call of `service`/`method` cannot be served: it is known, but as the other
        kind ("a streaming method" for a unary call, "a unary method" for a stream); or ""."""
        if streaming and (service, method) in self._routes:
            return f"{service}/{method} is a unary method: call it without a stream"
        if not streaming and (service, method) in self._stream_routes:
            return f"{service}/{method} is a streaming method: open a stream to call it"
        return ""

    # ------------------------------------------------------------------ serving a frame

    def serve_raw(
        self,
        seq_id: int,
        flags: int,
        info: bytes,
        payload: memoryview,
        out: bytearray,
        extra: Mapping[str, str] | None,
        now: float,
        peer: str = "",
        identity: PeerIdentity | None = None,
    ) -> None:
        """Serve a frame whose header is not in `by_header` on this thread: `resolve` it,
        then run the call it makes, if any."""
        resolved = self.resolve(seq_id, flags, info, out, extra)
        if resolved is not None:
            entry, oneway = resolved
            self.call(entry, seq_id, flags, payload, out, extra, now, peer, identity, oneway)

    def resolve(
        self,
        seq_id: int,
        flags: int,
        info: bytes,
        out: bytearray,
        extra: Mapping[str, str] | None,
    ) -> tuple[CachedCall, bool] | None:
        """The call a frame whose header is not in `by_header` makes, as (entry, oneway),
        caching the header if it is a plain call's; or None when it makes none, with the
        answer that is due appended to `out` (an unknown method, an expired deadline, a header
        over the limits). Raises ProtocolError for a frame a server cannot take (a reply)."""
        limit = self.max_header_size
        if limit is not None and len(info) > limit:  # before parsing it
            message = f"request header of {len(info)} bytes exceeds the limit of {limit}"
            self._fail(out, seq_id, flags, StatusCode.RESOURCE_EXHAUSTED, message, extra)
            return None
        try:
            entry = self._learn(info)
            if entry is not None:
                return entry, False
            parsed = parse_info(info, self.max_header_entries)
        except HeaderLimitError as exc:
            self._fail(out, seq_id, flags, StatusCode.RESOURCE_EXHAUSTED, f"request {exc}", extra)
            return None
        kind, method, service, timeout_ms, _status, _message, metadata, frame_type = parsed
        if (kind is not MessageType.CALL and kind is not MessageType.ONEWAY) or frame_type:
            raise ProtocolError(f"a server cannot receive a {kind.name} frame here")
        oneway = kind is MessageType.ONEWAY
        route = self.route(service, method)
        if route is None:
            if not oneway:
                name = f"{service}/{method}" if service else method
                why = self.unary_mismatch(service, method, False) or f"unknown method {name}"
                self._fail(out, seq_id, flags, StatusCode.UNIMPLEMENTED, why, extra)
            return None
        if timeout_ms is not None and timeout_ms <= 0:
            if not oneway:
                code = StatusCode.DEADLINE_EXCEEDED
                self._fail(out, seq_id, flags, code, "deadline exceeded", extra)
            return None
        return (route, timeout_ms, metadata), oneway

    def call(
        self,
        entry: CachedCall,
        seq_id: int,
        flags: int,
        payload: memoryview,
        out: bytearray,
        extra: Mapping[str, str] | None,
        now: float,
        peer: str = "",
        identity: PeerIdentity | None = None,
        oneway: bool = False,
    ) -> None:
        """Decode, call the handler, encode; append the reply or exception unless oneway.

        `entry` is the call's (route, timeout in ms, metadata); `now` is `time.monotonic()`
        when the frame arrived: the deadline counts from there; `peer` is the caller's address,
        `identity` its verified TLS identity (CallContext.peer, CallContext.peer_identity).
        """
        route, timeout_ms, metadata = entry
        try:
            request = route.decode(payload)  # msgspec's own decoder: the common case
        except Exception:
            try:  # again, for the result (an empty payload) or the error with field names
                request = route.request_type.from_bytes(payload)
            except DecodeError as exc:
                if not oneway:
                    message = f"cannot decode the request: {exc}"
                    self._fail(out, seq_id, flags, StatusCode.INVALID_ARGUMENT, message, extra)
                return
        deadline = None if timeout_ms is None else now + timeout_ms * 0.001
        context = CallContext(
            route.service_name, route.method_name, metadata, deadline, peer, "unary", identity
        )
        start = len(out)
        try:
            response = route.call(request, context)
            if oneway:
                return
            # The common case of `reply()`, inline: the server's hot path (keep in step).
            if response.__class__ is not route.response_type or context._reply_metadata or extra:
                self.reply(entry, seq_id, flags, context, response, None, out, extra)
                return
            out += REPLY_HEAD
            response._check()
            encode_into(response, out, -1)
        except Exception as exc:
            del out[start:]
            if not oneway:
                self.reply(entry, seq_id, flags, context, None, exc, out, extra)
            else:
                self.log_failure(route, exc)
            return
        size = len(out) - start
        limit = self.max_frame_size
        if limit is not None and size > limit:
            del out[start:]
            self.reply(entry, seq_id, flags, context, response, None, out, extra)  # says why
            return
        FIXED_HEADER.pack_into(out, start, size - 4, MAGIC, flags, seq_id, _REPLY_WORDS)

    def reply(
        self,
        entry: CachedCall,
        seq_id: int,
        flags: int,
        context: CallContext,
        response: Any,
        error: BaseException | None,
        out: bytearray,
        extra: Mapping[str, str] | None,
    ) -> None:
        """Append the reply frame of a call whose handler returned `response` or raised
        `error`: the response encoded straight into `out`, or the error contract's exception
        frame (module docs)."""
        route = entry[0]
        start = len(out)
        if error is None:
            try:
                if response.__class__ is not route.response_type and not isinstance(
                    response, route.response_type
                ):
                    raise TypeError(
                        f"{route.where} returned {type(response).__name__}, "
                        f"not {route.response_type.__name__}"
                    )
                reply_metadata = context._reply_metadata  # None unless the handler set some
                if reply_metadata or extra:
                    info = reply_info({**(reply_metadata or {}), **(extra or {})})
                    out += bytes(FIXED_SIZE)
                    out += info
                    words = len(info) >> 2
                else:
                    out += REPLY_HEAD  # the header of every reply without metadata
                    words = _REPLY_WORDS
                response._check()  # what Message.encode_into does, without the call around it
                encode_into(response, out, -1)
            except Exception as exc:
                del out[start:]
                error = exc
        if error is not None:
            if isinstance(error, RpcError):
                reply_metadata = {**(context._reply_metadata or {}), **(extra or {})}
                self._fail(out, seq_id, flags, error.code, error.message, reply_metadata)
            else:
                self.log_failure(route, error)
                message = f"{route.where} failed on the server"
                self._fail(out, seq_id, flags, StatusCode.INTERNAL, message, extra)
            return
        size = len(out) - start
        limit = self.max_frame_size
        if limit is not None and size > limit:
            del out[start:]
            if route.where not in self._oversized_routes:  # once per method: no log flood
                self._oversized_routes.add(route.where)
                log.warning(
                    "%s: a reply of %d bytes exceeds the maximum frame size of %d; "
                    "answering RESOURCE_EXHAUSTED",
                    route.where,
                    size,
                    limit,
                )
            message = (
                f"{route.where}: reply of {size} bytes exceeds the maximum frame size of {limit}"
            )
            self._fail(out, seq_id, flags, StatusCode.RESOURCE_EXHAUSTED, message, extra)
            return
        FIXED_HEADER.pack_into(out, start, size - 4, MAGIC, flags, seq_id, words)

    @staticmethod
    def log_failure(route: Route, error: BaseException) -> None:
        """Log a handler's failure with its traceback (an RpcError is an answer, not one)."""
        if not isinstance(error, RpcError):
            log.error("handler for %s failed", route.where, exc_info=error)

    def _learn(self, info: bytes) -> CachedCall | None:
        """Cache the route of a plain call's header; None for anything else."""
        parsed = parse_info(info, self.max_header_entries)
        msg_type, method, service, timeout, _status, _message, metadata, kind = parsed
        route = self.route(service, method)
        if (
            msg_type is not MessageType.CALL
            or kind  # a stream frame
            or route is None
            or (timeout is not None and timeout <= 0)
        ):
            return None
        entry = (route, timeout, metadata)
        if len(info) <= 256:
            if len(self.by_header) >= 4096:
                self.by_header.clear()
            self.by_header[info] = entry
        return entry

    @staticmethod
    def _fail(
        out: bytearray,
        seq_id: int,
        flags: int,
        code: int,
        message: str,
        metadata: Mapping[str, str] | None,
    ) -> None:
        append_frame(out, flags, seq_id, exception_info(int(code), message, metadata))
