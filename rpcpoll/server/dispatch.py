"""From a decoded call frame to a reply frame: routing, decoding, the handler, error mapping.

The error contract (the same as `rpcpoll.service.LocalChannel`'s):

- a handler raising `RpcError` sends that code and message;
- any other exception sends INTERNAL with a generic message; the traceback is logged, never sent;
- an unknown service or method gets UNIMPLEMENTED; an undecodable request INVALID_ARGUMENT;
- a call whose deadline passed before it could run gets DEADLINE_EXCEEDED without running;
- with limits set (`set_limits`): a header over `max_header_size` bytes or with too many
  entries, and a reply that would exceed `max_frame_size`, get RESOURCE_EXHAUSTED.

None of these affect the connection. Frames that are not calls are protocol errors, raised
to the caller, which closes the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..message import DecodeError, Message
from ..protocol.frame import (
    Frame,
    FrameTooLargeError,
    HeaderLimitError,
    MessageType,
    ProtocolError,
    frame_from_raw,
    parse_info,
    write_exception,
    write_reply,
)
from ..protocol.status import RpcError, StatusCode
from ..service import CallContext, Handler, MethodDescriptor, ServiceDescriptor
from ..transport.linkbuffer import LinkBuffer

__all__ = ["Dispatcher", "Route"]

log = logging.getLogger("rpcpoll.server")


@dataclass(frozen=True, slots=True)
class Route:
    service: ServiceDescriptor
    method: MethodDescriptor
    call: Callable[[Any, CallContext], Any]
    decode: Callable[[Any], Any]
    response_type: type[Message]
    where: str
    service_name: str
    method_name: str


class Dispatcher:
    """The routing table of a server: (service, method) wire names to bound handler methods."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._by_method: dict[str, Route | None] = {}  # None: the name is ambiguous
        self.services: dict[str, Handler] = {}
        # Header info bytes -> (route, timeout ms, metadata) for plain calls: most requests
        # repeat a few headers exactly, so they skip parsing and routing (see handle_raw).
        self._by_header: dict[bytes, tuple[Route, int | None, Mapping[str, str]] | None] = {}
        # Limits (set_limits); None: unlimited, as before a server sets them.
        self.max_header_size: int | None = None
        self.max_header_entries: int | None = None
        self.max_frame_size: int | None = None
        self._oversized_routes: set[str] = set()  # routes whose oversized reply was logged

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

    def register(self, handler: Handler) -> None:
        """Serve every unary method of `handler`'s generated service."""
        service = getattr(type(handler), "SERVICE", None)
        if not isinstance(service, ServiceDescriptor):
            raise TypeError(f"{type(handler).__name__} is not a generated handler (no SERVICE)")
        if service.full_name in self.services:
            raise ValueError(f"service {service.full_name} is already registered")
        self.services[service.full_name] = handler
        for method in service.methods.values():
            if not method.unary:
                continue  # streaming methods answer UNIMPLEMENTED until streaming lands
            route = Route(
                service,
                method,
                getattr(handler, method.python_name),
                method.request_type.from_bytes,
                method.response_type,
                f"{service.full_name}/{method.name}",
                service.full_name,
                method.name,
            )
            self._routes[(service.full_name, method.name)] = route
            # Kitex routes a frame without a service name by a method name that is unique.
            self._by_method[method.name] = None if method.name in self._by_method else route

    def handle_raw(
        self,
        seq_id: int,
        flags: int,
        info: bytes,
        payload: memoryview,
        out: LinkBuffer,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """`handle` for a frame as `FrameReader.read_raw` returns it: the server's hot path.

        A call whose header was seen before runs straight from the cache; anything else
        (first sight, exceptions to the plain case) goes through the full `handle`.
        """
        limit = self.max_header_size
        if limit is not None and len(info) > limit:  # before hashing or parsing it
            message = f"request header of {len(info)} bytes exceeds the limit of {limit}"
            write_exception(out, seq_id, StatusCode.RESOURCE_EXHAUSTED, message, extra, flags)
            return
        entry = self._by_header.get(info)
        if entry is None:
            try:
                entry = self._learn(info)
                if entry is None:
                    frame = frame_from_raw(seq_id, flags, info, payload, self.max_header_entries)
            except HeaderLimitError as exc:
                code = StatusCode.RESOURCE_EXHAUSTED
                write_exception(out, seq_id, code, f"request {exc}", extra, flags)
                return
            if entry is None:
                self.handle(frame, out, extra)
                return
        route, timeout_ms, metadata = entry
        self._invoke(route, seq_id, flags, payload, timeout_ms, metadata, out, extra, False)

    def cached_route(self, info: bytes) -> Route | None:
        """The route of a header `handle_raw` has seen before (None otherwise): no parsing."""
        entry = self._by_header.get(info)
        return None if entry is None else entry[0]

    def handle(
        self,
        frame: Frame,
        out: LinkBuffer,
        extra_metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Run the call in `frame` and write its reply (or exception) frame to `out`.

        `extra_metadata` goes on the reply whatever the outcome (the server's drain marker).
        """
        kind = frame.message_type
        if kind is not MessageType.CALL and kind is not MessageType.ONEWAY:
            raise ProtocolError(f"a server cannot receive a {kind.name} frame")
        extra = extra_metadata
        route = self.route(frame.service, frame.method)
        if route is None:
            name = f"{frame.service}/{frame.method}" if frame.service else frame.method
            _fail(out, frame, StatusCode.UNIMPLEMENTED, f"unknown method {name}", extra)
            return
        if frame.timeout_ms is not None and frame.timeout_ms <= 0:
            _fail(out, frame, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", extra)
            return
        oneway = kind is MessageType.ONEWAY
        self._invoke(
            route, frame.seq_id, frame.flags, frame.payload, frame.timeout_ms, frame.metadata,
            out, extra, oneway,
        )  # fmt: skip

    def _invoke(
        self,
        route: Route,
        seq_id: int,
        flags: int,
        payload: memoryview | bytes,
        timeout_ms: int | None,
        metadata: Mapping[str, str],
        out: LinkBuffer,
        extra: Mapping[str, str] | None,
        oneway: bool,
    ) -> None:
        """Decode, call the handler, encode; write the reply or exception unless oneway."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        try:
            request = route.decode(payload)
        except DecodeError as exc:
            if not oneway:
                message = f"cannot decode the request: {exc}"
                write_exception(out, seq_id, StatusCode.INVALID_ARGUMENT, message, extra, flags)
            return
        context = CallContext(route.service_name, route.method_name, metadata, deadline)
        try:
            response = route.call(request, context)
            if response.__class__ is not route.response_type and not isinstance(
                response, route.response_type
            ):
                raise TypeError(
                    f"{route.where} returned {type(response).__name__}, "
                    f"not {route.response_type.__name__}"
                )
            body = response.to_bytes()
        except RpcError as exc:
            if not oneway:
                reply_metadata = context.reply_metadata
                if extra:
                    reply_metadata = {**reply_metadata, **extra}
                write_exception(out, seq_id, exc.code, exc.message, reply_metadata, flags)
            return
        except Exception:
            log.exception("handler for %s failed", route.where)
            if not oneway:
                message = f"{route.where} failed on the server"
                write_exception(out, seq_id, StatusCode.INTERNAL, message, extra, flags)
            return
        if oneway:
            return
        reply_metadata = context.reply_metadata
        if extra:
            reply_metadata = {**reply_metadata, **extra}
        try:
            write_reply(out, seq_id, body, reply_metadata, flags, self.max_frame_size)
        except FrameTooLargeError as exc:
            if route.where not in self._oversized_routes:  # once per method: no log flood
                self._oversized_routes.add(route.where)
                log.warning("%s: %s; answering RESOURCE_EXHAUSTED", route.where, exc)
            message = f"{route.where}: {exc}"
            code = StatusCode.RESOURCE_EXHAUSTED
            write_exception(out, seq_id, code, message, extra, flags)

    def _learn(self, info: bytes) -> tuple[Route, int | None, Mapping[str, str]] | None:
        """Cache the route of a plain call's header; None for anything else."""
        parsed = parse_info(info, self.max_header_entries)
        msg_type, method, service, timeout, _status, _message, metadata = parsed
        route = self.route(service, method)
        if (
            msg_type is not MessageType.CALL
            or route is None
            or (timeout is not None and timeout <= 0)
        ):
            return None
        entry = (route, timeout, metadata)
        if len(info) <= 256:
            if len(self._by_header) >= 4096:
                self._by_header.clear()
            self._by_header[info] = entry
        return entry

    def route(self, service: str, method: str) -> Route | None:
        if service:
            return self._routes.get((service, method))
        return self._by_method.get(method)


def _fail(
    out: LinkBuffer,
    frame: Frame,
    code: int,
    message: str,
    metadata: Mapping[str, str] | None,
) -> None:
    if frame.message_type is not MessageType.ONEWAY:
        write_exception(out, frame.seq_id, int(code), message, metadata, frame.flags)
