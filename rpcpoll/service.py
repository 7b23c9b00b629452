"""The contract between generated services and the RPC runtime.

A module written by `rpcpoll gen` holds, for each proto service `S`, a module-level
`ServiceDescriptor`, an `SClient(Client)` with one method per unary rpc and an
`SHandler(Handler)` that users subclass. A server dispatches a call by the service's wire name
and the method's wire name to `getattr(handler, method.python_name)(request, context)`; a
client sends it through a `Channel`.

`LocalChannel` runs that dispatch in-process, through the same encode/decode steps and the same
error mapping that a server applies, so handlers and clients can be tested without sockets.
"""

from __future__ import annotations

import importlib
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
    """What a handler receives as `context`: who is calling what, and until when.

    `CallContext(service, method, metadata={}, deadline=None, peer=None)`. One is built per
    call, on the server's hot path, so it is a msgspec Struct (built in C, not tracked by the
    cyclic GC) and its reply metadata dict is made only when first used.
    """

    #: the service's wire name, e.g. "echo.EchoService"
    service: str
    #: the method's wire name, e.g. "Echo"
    method: str
    #: the caller's metadata, as received (not copied: one context is built per request)
    metadata: Mapping[str, str] = _NO_METADATA
    #: `time.monotonic()` value by which the caller wants an answer; None = no deadline
    deadline: float | None = None
    #: the caller's verified TLS certificate identity (a `rpcpoll.transport.PeerIdentity`:
    #: subject, common_name, dns_names, uris, ...); None without TLS or a client certificate
    peer: PeerIdentity | None = None
    # The server reads this directly: a call without reply metadata makes no dict.
    _reply_metadata: dict[str, str] | None = None

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
        """Send `key: value` back to the caller with the reply."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("reply metadata keys and values must be str")
        self.reply_metadata[key] = value

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


class LocalChannel:
    """An in-process Channel over registered Handler instances.

    Each call encodes the request with `to_bytes` and decodes it again, so the wire form is
    exercised, then calls the handler with a fresh CallContext and does the same to the
    response. Errors are mapped as a server maps them: an RpcError reaches the caller with its
    code and message only; any other exception is logged with its traceback and becomes an
    InternalError with a generic message; an unknown service or method is UnimplementedError;
    a call that overruns its timeout is DeadlineExceededError.
    """

    def __init__(self, *handlers: Handler) -> None:
        self._handlers: dict[str, Handler] = {}
        self._closed = False
        for handler in handlers:
            self.register(handler)

    def register(self, handler: Handler) -> None:
        """Serve `handler`'s service on this channel (replacing any earlier handler for it)."""
        service = getattr(type(handler), "SERVICE", None)
        if not isinstance(service, ServiceDescriptor):
            raise TypeError(f"{type(handler).__name__} is not a generated handler (no SERVICE)")
        self._handlers[service.full_name] = handler

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
        if self._closed:
            raise UnavailableError(message="channel is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = method.encode_request(request)

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

        reply = self._serve(handler, service, served, payload, metadata, deadline, reply_metadata)
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceededError(message=f"deadline exceeded waiting for {method.name}")
        return method.response_type.from_bytes(reply)

    def _serve(
        self,
        handler: Handler,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        payload: bytes,
        metadata: Mapping[str, str] | None,
        deadline: float | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> bytes:
        """The server side of a call: decode, dispatch, encode, with the server's error map.

        Errors are raised outside the `except` blocks, so that, as over a network, the caller's
        exception carries nothing of the server's (no __cause__, no __context__).
        """
        where = f"{service.full_name}/{method.name}"
        failure: RpcError
        try:
            request = method.request_type.from_bytes(payload)
        except ValueError as exc:
            failure = InvalidArgumentError(message=f"cannot decode the request: {exc}")
        else:
            received = dict(metadata) if metadata else _NO_METADATA  # a copy, as off the wire
            context = CallContext(service.full_name, method.name, received, deadline)
            try:
                response = getattr(handler, method.python_name)(request, context)
                if not isinstance(response, method.response_type):
                    raise TypeError(
                        f"{where} returned {type(response).__name__}, "
                        f"not {method.response_type.__name__}"
                    )
                return response.to_bytes()
            except RpcError as exc:
                failure = RpcError(exc.code, exc.message)  # only these two cross the wire
            except Exception:
                _log.exception("handler for %s failed", where)
                failure = InternalError(message=f"{where} failed on the server")
            finally:
                if reply_metadata is not None:
                    reply_metadata.update(context.reply_metadata)
        raise failure

    def close(self) -> None:
        self._closed = True


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
