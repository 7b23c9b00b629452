"""The contract between generated services and the RPC runtime.

A module written by `rpcpoll gen` holds, for each proto service `S`, a module-level
`ServiceDescriptor`, an `SClient(Client)` with one method per unary rpc and an
`SHandler(Handler)` that users subclass. A server dispatches a call by the service's wire name
and the method's wire name to `getattr(handler, method.python_name)(request, context)`; a
client sends it through a `Channel`.

The async counterparts are `SAsyncClient(AsyncClient)`, `SAsyncHandler(AsyncHandler)` and
`AsyncChannel`.

`LocalChannel` (and `AsyncLocalChannel`) run that dispatch in-process, through the same
encode/decode steps and the same error mapping that a server applies, so handlers and clients
can be tested without sockets.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import msgspec

from .message import Message
from .protocol.status import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    RpcError,
    UnavailableError,
    UnimplementedError,
)

if TYPE_CHECKING:
    from .transport.identity import PeerIdentity

__all__ = [
    "AsyncChannel",
    "AsyncClient",
    "AsyncHandler",
    "AsyncLocalChannel",
    "CallContext",
    "Channel",
    "Client",
    "Handler",
    "LocalChannel",
    "MethodDescriptor",
    "ServiceDescriptor",
]

_log = logging.getLogger(__name__)

C = TypeVar("C", bound="Client")
_NO_METADATA: Mapping[str, str] = types.MappingProxyType({})


@dataclass(frozen=True)
class MethodDescriptor:
    """One rpc of a service."""

    name: str  #: wire name as in the proto, e.g. "Echo"
    python_name: str  #: method name on the generated client and handler, e.g. "echo"
    request_type: type[Message]  #: generated message class
    response_type: type[Message]
    client_streaming: bool = False
    server_streaming: bool = False
    #: from `option idempotency_level = IDEMPOTENT | NO_SIDE_EFFECTS`: safe to retry
    idempotent: bool = False

    def encode_request(self, request: Any) -> bytes:
        """`request.to_bytes()`, after checking its type: what every Channel sends.

        A wrong type raises TypeError; an unencodable request TypeError or ValueError naming
        the field. Either way in the caller, before any I/O.
        """
        if not isinstance(request, self.request_type):
            raise TypeError(
                f"{self.name} takes {self.request_type.__name__}, not {type(request).__name__}"
            )
        return request.to_bytes()

    @property
    def unary(self) -> bool:
        """Whether neither side streams."""
        return not (self.client_streaming or self.server_streaming)

    @property
    def kind(self) -> str:
        """ "unary", "server_stream", "client_stream" or "bidi" (CallContext.kind)."""
        if self.client_streaming:
            return "bidi" if self.server_streaming else "client_stream"
        return "server_stream" if self.server_streaming else "unary"


@dataclass(frozen=True)
class ServiceDescriptor:
    """A service: its wire name ("echo.EchoService") and its methods keyed by wire name."""

    full_name: str
    methods: Mapping[str, MethodDescriptor] = field(hash=False)

    def __post_init__(self) -> None:
        # Freeze the mapping too, so a descriptor shared by every client and handler of the
        # service cannot be changed under them.
        object.__setattr__(self, "methods", types.MappingProxyType(dict(self.methods)))


class CallContext(msgspec.Struct, gc=False):
    """What a handler (and a server middleware) receives as `context`: who is calling what,
    and until when.

    `CallContext(service, method, metadata={}, deadline=None, peer="", kind="unary",
    peer_identity=None)`. One is built per call, on the server's hot path, so it is a msgspec
    Struct (built in C, not tracked by the cyclic GC) and its reply metadata dict is made only
    when first used.
    """

    side: ClassVar[str] = "server"  # how a middleware tells it from a ClientCallContext

    #: the service's wire name, e.g. "echo.EchoService"
    service: str
    #: the method's wire name, e.g. "Echo"
    method: str
    #: the caller's metadata, as received (not copied: one context is built per request)
    metadata: Mapping[str, str] = _NO_METADATA
    #: `time.monotonic()` value by which the caller wants an answer; None = no deadline
    deadline: float | None = None
    #: the caller's address as the server sees it ("127.0.0.1:50122", "unix:/path")
    peer: str = ""
    #: "unary", "server_stream", "client_stream" or "bidi"
    kind: str = "unary"
    #: the caller's verified TLS certificate identity (a `rpcpoll.transport.PeerIdentity`:
    #: subject, common_name, dns_names, uris, ...); None without TLS or a client certificate
    peer_identity: PeerIdentity | None = None
    # The server reads this directly: a call without reply metadata makes no dict.
    _reply_metadata: dict[str, str] | None = None
    # Set by the server when the caller went away (cancelled the call, or its connection
    # closed): `cancelled()`.
    _cancelled: bool = False
    # Streams: metadata for the TRAILER (None: none), and whether the HEADER went out (after
    # which reply metadata can no longer be sent).
    _trailing_metadata: dict[str, str] | None = None
    _header_sent: bool = False

    def cancelled(self) -> bool:
        """Whether the caller has gone away: cancelled the call or closed its connection.

        An async handler sees it as `asyncio.CancelledError` at its next await; a sync handler
        can poll this and stop early (its reply would be dropped anyway).
        """
        return self._cancelled

    @property
    def reply_metadata(self) -> dict[str, str]:
        """Metadata sent back to the caller with the reply (a dict the handler may fill)."""
        reply = self._reply_metadata
        if reply is None:
            reply = self._reply_metadata = {}
        return reply

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def set_reply_metadata(self, key: str, value: str) -> None:
        """Send `key: value` back to the caller with the reply (for a stream: with the
        server's HEADER, which goes before its first message; later, use trailing metadata)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("reply metadata keys and values must be str")
        if self._header_sent:
            raise RuntimeError("the stream's header has been sent: use set_trailing_metadata")
        self.reply_metadata[key] = value

    @property
    def trailing_metadata(self) -> dict[str, str]:
        """Metadata sent at the end of a stream, with its status (a dict the handler may
        fill until it returns)."""
        trailing = self._trailing_metadata
        if trailing is None:
            trailing = self._trailing_metadata = {}
        return trailing

    def set_trailing_metadata(self, key: str, value: str) -> None:
        """Send `key: value` with the stream's status, when it ends."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("trailing metadata keys and values must be str")
        self.trailing_metadata[key] = value

    def __repr__(self) -> str:
        return f"CallContext(service={self.service!r}, method={self.method!r})"


class Handler:
    """Base of every generated `SHandler`; subclass it and override the rpc methods.

    Each generated method takes `(request, context)` and raises UnimplementedError until
    overridden.
    """

    SERVICE: ClassVar[ServiceDescriptor]


@runtime_checkable
class Channel(Protocol):
    """How a client sends a unary call (implemented by the runtime and by LocalChannel)."""

    def unary_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Send `request` and return the decoded response; raise RpcError on failure.

        The reply's metadata is copied into `reply_metadata` when it is given (also when the
        call fails with an error reply).
        """
        ...

    def close(self) -> None:
        """Release the channel's resources; later calls fail."""
        ...


@runtime_checkable
class AsyncChannel(Protocol):
    """How an async client sends a unary call (implemented by rpcpoll.aio and
    AsyncLocalChannel)."""

    async def unary_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        """As `Channel.unary_call`, awaited; cancelling the awaiting task cancels the call."""
        ...

    def close(self) -> None: ...


class AsyncHandler:
    """Base of every generated `SAsyncHandler`: override the rpc methods with `async def`
    methods taking `(request, context)`. They run on the server's event loop (docs/asyncio.md)."""

    SERVICE: ClassVar[ServiceDescriptor]


class _LocalServing:
    """What LocalChannel and AsyncLocalChannel share: the registered handlers, the lookup of
    a call's method, and the server's steps around the handler (decode, check, encode, error
    map)."""

    _handler_base: ClassVar[tuple[type, ...]] = (Handler,)

    def __init__(self, *handlers: Handler | AsyncHandler) -> None:
        self._handlers: dict[str, Handler | AsyncHandler] = {}
        self._closed = False
        for handler in handlers:
            self.register(handler)

    def register(self, handler: Handler | AsyncHandler) -> None:
        """Serve `handler`'s service on this channel (replacing any earlier handler for it)."""
        service = getattr(type(handler), "SERVICE", None)
        if not isinstance(service, ServiceDescriptor) or not isinstance(
            handler, self._handler_base
        ):
            raise TypeError(f"{type(handler).__name__} is not a generated handler (no SERVICE)")
        self._handlers[service.full_name] = handler

    def close(self) -> None:
        self._closed = True

    def _route(
        self, service: ServiceDescriptor, method: MethodDescriptor, timeout: float | None
    ) -> tuple[Handler | AsyncHandler, MethodDescriptor, float | None]:
        """The handler and its own descriptor of `method`, and the call's deadline; raises
        as a server would answer a call it cannot serve."""
        if self._closed:
            raise UnavailableError(message="channel is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        handler = self._handlers.get(service.full_name)
        served = None if handler is None else type(handler).SERVICE.methods.get(method.name)
        if handler is None or served is None:
            raise UnimplementedError(message=f"unknown method {service.full_name}/{method.name}")
        if not served.unary:
            raise UnimplementedError(
                message=f"{service.full_name}/{method.name} is a streaming method"
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceededError(message=f"deadline exceeded before {method.name} was sent")
        return handler, served, deadline

    @staticmethod
    def _decode_request(method: MethodDescriptor, payload: bytes) -> Any:
        """The request off the wire, or the InvalidArgumentError a server would answer
        (returned, not raised: see `_failure`)."""
        try:
            return method.request_type.from_bytes(payload)
        except ValueError as exc:
            return InvalidArgumentError(message=f"cannot decode the request: {exc}")

    @staticmethod
    def _encode_response(where: str, method: MethodDescriptor, response: Any) -> bytes:
        if not isinstance(response, method.response_type):
            raise TypeError(
                f"{where} returned {type(response).__name__}, not {method.response_type.__name__}"
            )
        return response.to_bytes()

    @staticmethod
    def _failure(exc: Exception, where: str) -> RpcError:
        """The error the caller sees for a handler's exception: an RpcError's code and
        message only (what crosses the wire); anything else, logged, as InternalError."""
        if isinstance(exc, RpcError):
            return RpcError(exc.code, exc.message)
        _log.error("handler for %s failed", where, exc_info=exc)
        return InternalError(message=f"{where} failed on the server")

    @staticmethod
    def _after(method: MethodDescriptor, deadline: float | None, reply: bytes | RpcError) -> Any:
        """The client side of the reply. Errors are raised here, outside the handler's
        `except` blocks, so that, as over a network, the caller's exception carries nothing
        of the server's (no __cause__, no __context__)."""
        if isinstance(reply, RpcError):
            raise reply
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceededError(message=f"deadline exceeded waiting for {method.name}")
        return method.response_type.from_bytes(reply)


class LocalChannel(_LocalServing):
    """An in-process Channel over registered Handler instances.

    Each call encodes the request with `to_bytes` and decodes it again, so the wire form is
    exercised, then calls the handler with a fresh CallContext and does the same to the
    response. Errors are mapped as a server maps them: an RpcError reaches the caller with its
    code and message only; any other exception is logged with its traceback and becomes an
    InternalError with a generic message; an unknown service or method is UnimplementedError;
    a call that overruns its timeout is DeadlineExceededError.
    """

    def __init__(self, *handlers: Handler) -> None:
        super().__init__(*handlers)

    def unary_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        handler, served, deadline = self._route(service, method, timeout)
        payload = method.encode_request(request)
        where = f"{service.full_name}/{method.name}"
        reply: bytes | RpcError = self._decode_request(served, payload)
        if not isinstance(reply, RpcError):
            received = dict(metadata) if metadata else _NO_METADATA  # a copy, as off the wire
            context = CallContext(service.full_name, method.name, received, deadline)
            try:
                response = getattr(handler, served.python_name)(reply, context)
                reply = self._encode_response(where, served, response)
            except Exception as exc:
                reply = self._failure(exc, where)
            finally:
                if reply_metadata is not None:
                    reply_metadata.update(context.reply_metadata)
        return self._after(method, deadline, reply)


class AsyncLocalChannel(_LocalServing):
    """An in-process AsyncChannel over registered AsyncHandler (or Handler) instances: what
    LocalChannel does, awaited.

    An async handler method runs in its own task on the caller's loop; a sync one in the
    loop's default executor. When the call's timeout passes, the handler's task is cancelled
    (as a server cancels an async handler at the deadline) and the caller gets
    DeadlineExceededError; cancelling the caller's task cancels the handler's.
    """

    _handler_base = (Handler, AsyncHandler)

    async def unary_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        handler, served, deadline = self._route(service, method, timeout)
        payload = method.encode_request(request)
        where = f"{service.full_name}/{method.name}"
        reply: bytes | RpcError = self._decode_request(served, payload)
        if not isinstance(reply, RpcError):
            received = dict(metadata) if metadata else _NO_METADATA
            context = CallContext(service.full_name, method.name, received, deadline)
            bound = getattr(handler, served.python_name)
            if inspect.iscoroutinefunction(bound):
                serve = asyncio.ensure_future(bound(reply, context))
            else:
                loop = asyncio.get_running_loop()
                serve = loop.run_in_executor(None, bound, reply, context)
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait((serve,), timeout=remaining)
                if not done:
                    serve.cancel()
                    context._cancelled = True
                    raise DeadlineExceededError(
                        message=f"deadline exceeded waiting for {method.name}"
                    ) from None
                reply = self._encode_response(where, served, serve.result())
            except asyncio.CancelledError:
                serve.cancel()
                context._cancelled = True
                raise
            except DeadlineExceededError:
                raise
            except Exception as exc:
                reply = self._failure(exc, where)
            finally:
                if reply_metadata is not None:
                    reply_metadata.update(context.reply_metadata)
        return self._after(method, deadline, reply)


class Client:
    """Base of every generated `SClient`.

    `target` is a Channel, used as is, or an address string handed with `options` to
    `rpcpoll.client.open_channel`. Closing the client closes its channel.
    """

    SERVICE: ClassVar[ServiceDescriptor]

    def __init__(self, target: str | Channel, **options: Any) -> None:
        if isinstance(target, str):
            self._channel: Channel = _open_channel(target, options)
        elif isinstance(target, Channel):
            if options:
                raise TypeError(f"options apply to address targets only: {sorted(options)}")
            self._channel = target
        else:
            raise TypeError(f"target must be an address or a Channel, not {type(target).__name__}")

    @property
    def channel(self) -> Channel:
        """The channel this client sends calls through."""
        return self._channel

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call_unary(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Send a unary call of this service's method `method` (wire name)."""
        service = self.SERVICE
        if reply_metadata is None:  # channels written before reply metadata need not take it
            return self._channel.unary_call(
                service, service.methods[method], request, timeout=timeout, metadata=metadata
            )
        return self._channel.unary_call(
            service,
            service.methods[method],
            request,
            timeout=timeout,
            metadata=metadata,
            reply_metadata=reply_metadata,
        )

    def _call_stream(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Any:
        """Start a streaming call of `method` (wire name): see `ClientChannel.stream_call`
        for what `request` is and what comes back."""
        service = self.SERVICE
        stream_call = getattr(self._channel, "stream_call", None)
        if stream_call is None:
            raise UnimplementedError(
                message=f"{type(self._channel).__name__} does not carry streams ({method})"
            )
        return stream_call(
            service, service.methods[method], request, timeout=timeout, metadata=metadata
        )


#: Either kind of generated handler base.
AnyHandler = Handler | AsyncHandler

AC = TypeVar("AC", bound="AsyncClient")


class AsyncClient:
    """Base of every generated `SAsyncClient`: the same calls, awaited.

    `target` is an AsyncChannel, used as is, or an address string handed with `options` to
    `rpcpoll.aio.open_async_channel` (any `ClientChannel` option; connections are multiplexed,
    `mux` is how many per instance at most). The client may be made outside an event loop; it
    binds to the loop of its first call. `async with` (or `await client.aclose()`) closes it.
    """

    SERVICE: ClassVar[ServiceDescriptor]

    def __init__(self, target: str | AsyncChannel, **options: Any) -> None:
        if isinstance(target, str):
            runtime = importlib.import_module("rpcpoll.aio")
            self._channel: AsyncChannel = runtime.open_async_channel(target, **options)
        elif isinstance(target, AsyncChannel):
            if options:
                raise TypeError(f"options apply to address targets only: {sorted(options)}")
            self._channel = target
        else:
            raise TypeError(
                f"target must be an address or an AsyncChannel, not {type(target).__name__}"
            )

    @property
    def channel(self) -> AsyncChannel:
        """The channel this client sends calls through."""
        return self._channel

    def close(self) -> None:
        """Close the channel (calls still waiting fail)."""
        self._channel.close()

    async def aclose(self) -> None:
        """Close the channel from async code."""
        self._channel.close()

    async def __aenter__(self: AC) -> AC:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def _call_unary(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Send a unary call of this service's method `method` (wire name), awaited."""
        service = self.SERVICE
        return await self._channel.unary_call(
            service,
            service.methods[method],
            request,
            timeout=timeout,
            metadata=metadata,
            reply_metadata=reply_metadata,
        )

    def _call_stream(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Any:
        """A streaming call of `method`: an AsyncServerStreamCall or AsyncBidiStreamCall that
        opens when first used, or (client streams) an awaitable of the response; see
        `AsyncClientChannel.stream_call`."""
        service = self.SERVICE
        stream_call = getattr(self._channel, "stream_call", None)
        if stream_call is None:
            raise UnimplementedError(
                message=f"{type(self._channel).__name__} does not carry streams ({method})"
            )
        return stream_call(
            service, service.methods[method], request, timeout=timeout, metadata=metadata
        )


def _open_channel(target: str, options: dict[str, Any]) -> Channel:
    # Imported lazily: the client runtime is a layer above this module.
    try:
        runtime = importlib.import_module("rpcpoll.client")
    except ModuleNotFoundError as exc:
        if exc.name not in ("rpcpoll.client", "rpcpoll"):
            raise
        runtime = None
    open_channel = getattr(runtime, "open_channel", None)
    if open_channel is None:
        raise RuntimeError(
            f"cannot connect to {target!r}: the network client (rpcpoll.client.open_channel) "
            "is not available in this version of rpcpoll; pass a Channel such as "
            "rpcpoll.service.LocalChannel instead"
        )
    channel: Channel = open_channel(target, **options)
    return channel
