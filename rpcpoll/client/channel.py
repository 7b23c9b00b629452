"""The network Channel behind generated clients: instances, balancing, breakers, safe retries.

A channel calls one service, on one or many instances:

- **Target.** `"host:port"` or `"unix:/path"` is one fixed instance. `"etcd://host:port/NAME"`
  discovers the instances of NAME in etcd and follows changes; `resolver=` plugs in any other
  `rpcpoll.discovery.Resolver`, the target then being the service name.
- **Balancing.** Each call picks an instance with the balancer (`balancer=`: weighted
  round-robin by default, "random", "consistent_hash" with `hash_key=`, or any
  `rpcpoll.client.balance.Balancer`).
- **Circuit breaking.** Each instance has a breaker (`breaker=`, a factory); an instance whose
  connections keep failing gets no calls until its breaker lets a probe through. Only
  connection failures count, not errors a handler returns, nor timeouts.
- **Connections.** Per instance, a Kitex-style pool of long connections, one call per
  connection at a time (the default), or with `mux=N` a ring of N multiplexed connections
  shared by every thread (see `rpcpoll.client.mux`); `mux=True` means
  `DEFAULT_MUX_CONNECTIONS` (8: more connections than a server usually has worker processes,
  since the kernel spreads connections, not calls, over `--workers`; docs/workers.md).
  `warmup=N` dials N connections per instance ahead of the first call (for mux: the ring).

Timeouts. `timeout=` is the whole call's budget, retries included. It travels to the server
as the caller's remaining time, and the wait for the reply stops at the deadline: the call then
raises DEADLINE_EXCEEDED and a late reply is dropped, never read as another call's reply.
`connect_timeout` bounds each dial separately (its TLS handshake included).

TLS. `ssl=` (an `ssl.SSLContext`, e.g. from `rpcpoll.transport.client_context` with a client
certificate for mTLS) or `tls=True` (the system's CAs) encrypts every connection, pooled and
multiplexed. The server's certificate must be valid for `server_hostname` (default: the host
of each instance's address; SNI carries it too). Failures are UNAVAILABLE with OpenSSL's
reason (docs/tls.md).

Limits. A request whose frame would exceed `max_frame_size` fails with RESOURCE_EXHAUSTED
before anything is sent (one compare per call without metadata); a reply over it fails its
call with RESOURCE_EXHAUSTED. With `mux`, each connection takes at most
`max_calls_per_connection` calls at once and stops taking calls while more than
`max_unsent_bytes` wait for a server that is not reading (rpcpoll.client.mux, "Bounds").

Retries. A call is retried only when it provably never reached a handler (the dial failed, or
a connection was found dead before anything was written) or when the method is idempotent
(`option idempotency_level = IDEMPOTENT` in the proto, or `idempotent_methods=`), within
`retry.max_attempts` and the deadline, preferring an instance that has not failed this call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..discovery.base import Instance, Resolver, Subscription, same_instances
from ..middleware import AnyMiddleware, ClientCallContext, Endpoint, build_chain
from ..protocol.frame import DEFAULT_MAX_FRAME_SIZE, FrameReader, MessageType, RequestTemplate
from ..protocol.status import (
    InternalError,
    ResourceExhaustedError,
    RpcError,
    StatusCode,
    UnavailableError,
)
from ..protocol.stream import trailer_info
from ..service import MethodDescriptor, ServiceDescriptor
from ..stream.calls import BidiStreamCall, ServerStreamCall, run_client_stream, start_sending
from ..stream.core import SyncStreamEnd
from ..transport.address import format_address, parse_address
from .balance import Balancer, Picker, WeightedRoundRobin, balancer_by_name
from .breaker import BreakerFactory, CircuitBreaker, default_breaker_factory
from .longconn import LongConnTransport
from .mux import DEFAULT_MAX_CALLS, DEFAULT_MAX_UNSENT, MuxTransport
from .outcome import MaybeSentError, NotSentError, Reply
from .pool import PoolOptions

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["DEFAULT_MUX_CONNECTIONS", "NO_RETRY", "ClientChannel", "RetryPolicy", "open_channel"]

DEFAULT_MUX_CONNECTIONS = 8
_NONE: frozenset[Instance] = frozenset()
_NETWORKS = ("tcp", "tcp4", "tcp6", "unix")

log = logging.getLogger("rpcpoll.client")

HashKey = Callable[[str, Any, "Mapping[str, str] | None"], "str | bytes | None"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon to retry a call that may be retried (see the module docs).

    `max_attempts` counts the first attempt (Kitex's default of 2 retries is 3 attempts); the
    pause before retry n is `backoff * 2**(n-1)`, at most `max_backoff`.
    """

    max_attempts: int = 3
    backoff: float = 0.005
    max_backoff: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def pause(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)


class _Transport(Protocol):
    def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply: ...

    def warm_up(self, count: int, deadline: float | None = None) -> int: ...

    def close(self) -> None: ...


class _Endpoint:
    """One instance's connections and breaker."""

    __slots__ = ("breaker", "instance", "streams", "transport")

    def __init__(self, instance: Instance, transport: _Transport, breaker: CircuitBreaker):
        self.instance = instance
        self.transport = transport
        self.breaker = breaker
        #: where streams go: the transport if it multiplexes, else a MuxTransport made for
        #: the first stream (a pooled connection carries one call at a time)
        self.streams: Any = transport if isinstance(transport, MuxTransport) else None

    def close(self) -> None:
        self.transport.close()  # calls in progress on it finish
        if self.streams is not None and self.streams is not self.transport:
            self.streams.close()


class ClientChannel:
    """A `rpcpoll.service.Channel` to the instances of one service (see the module docs).

    Options: `timeout` (default per-call timeout, None = no limit), `connect_timeout` (per dial,
    default 1 s), `retry` (a RetryPolicy), `idempotent_methods` (wire names, "Service/Method"
    or "Method", to treat as idempotent), `max_frame_size`; the pool's `max_idle_per_address`
    (10), `max_idle_global` (100), `max_idle_timeout` (60 s); `mux` (connections per instance
    shared by all calls, True for 8; 0, the default, pools one call per connection); `resolver`,
    `balancer` (a Balancer or its name), `hash_key` (`f(method, request, metadata)` giving the
    consistent-hash key), `breaker` (a factory `f(instance) -> CircuitBreaker`), `warmup`
    (connections dialed per instance up front); with `mux`, `max_calls_per_connection` (128)
    and `max_unsent_bytes` (1 MiB); `ssl` (an SSLContext) or `tls=True` (a default client
    context) for TLS, and `server_hostname` (the name the server's certificate must carry);
    `middleware` (wraps every call, the first listed outermost, with a ClientCallContext:
    rpcpoll/middleware.py).

    A target that is not an address (an http:// URL, a host without a port, a port over
    65535) raises ValueError here, with a one-line message.
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        *,
        timeout: float | None = None,
        connect_timeout: float | None = 1.0,
        retry: RetryPolicy | None = None,
        idempotent_methods: Iterable[str] = (),
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_idle_per_address: int = 10,
        max_idle_global: int = 100,
        max_idle_timeout: float = 60.0,
        mux: int | bool = 0,
        resolver: Resolver | None = None,
        balancer: Balancer | str | None = None,
        hash_key: HashKey | None = None,
        breaker: BreakerFactory | None = None,
        warmup: int = 0,
        max_calls_per_connection: int = DEFAULT_MAX_CALLS,
        max_unsent_bytes: int = DEFAULT_MAX_UNSENT,
        middleware: Sequence[AnyMiddleware] = (),
        ssl: SSLContext | None = None,
        tls: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        if mux is True:
            mux = DEFAULT_MUX_CONNECTIONS
        if mux < 0 or warmup < 0:
            raise ValueError("mux and warmup cannot be negative")
        self.target = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        self._idempotent = frozenset(idempotent_methods)
        self._frames = FrameReader(max_frame_size)
        self.max_frame_size = max_frame_size
        # Payloads up to this size fit a frame whatever the method and timeout: no other check.
        self._small_payload = max_frame_size - 1024
        self._mux_limits = (max_calls_per_connection, max_unsent_bytes)
        self._pool_options = PoolOptions(max_idle_per_address, max_idle_global, max_idle_timeout)
        self._mux = int(mux)
        self._warmup = warmup
        if ssl is None and tls:
            from ..transport.tls import client_context

            ssl = client_context()
        self._ssl = ssl
        self._server_hostname = server_hostname
        if isinstance(balancer, str):
            balancer = balancer_by_name(balancer)
        self._balancer: Balancer = balancer or WeightedRoundRobin()
        self._hash_key = hash_key
        self._breaker_factory = breaker or default_breaker_factory
        self._templates: dict[tuple[str, str], RequestTemplate] = {}
        # The calls' way through the middleware, None without any (built once, here).
        self._chain: Endpoint | None = None
        if middleware:
            self._chain = build_chain(self._through_middleware, middleware, self._is_async)
        self._closed = False
        self._lock = threading.Lock()  # guards instance-list changes
        self._view: tuple[Picker, dict[Instance, _Endpoint]] = (self._balancer.picker(()), {})
        self._warmers: list[threading.Thread] = []
        self._resolved: list[Instance] = []  # the resolver's last list, bad entries included
        self._subscription: Subscription | None = None
        self._owned_resolver: Resolver | None = None

        self._service_name, discovery = _discovery_of(target, resolver)
        if discovery is None:  # one fixed instance
            network, address = parse_address(target)
            shown = str(address) if network == "unix" else format_address(network, address)
            self._check_tls_name(network, shown)
            self._set_instances([Instance(shown, network)], warm_now=True)
            return
        if resolver is None:
            self._owned_resolver = discovery  # made from the target: ours to close
        resolver = discovery
        try:
            instances = resolver.resolve(self._service_name)
        except Exception as exc:  # discovery may recover: calls fail until it does
            log.warning("cannot resolve %s yet: %s", self._service_name, exc)
            instances = []
        self._set_instances(instances, warm_now=True)
        self._subscription = resolver.subscribe(self._service_name, self._on_instances)

    # ------------------------------------------------------------------ Channel

    _is_async = False  # how middleware is chained: rpcpoll.aio's channel is async

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
        if self._chain is None:
            return self._unary(service, method, request, timeout, metadata, reply_metadata)
        context = self._context(service, method, timeout, metadata)
        try:
            return self._chain(request, context)
        finally:
            if reply_metadata is not None:
                reply_metadata.update(context.reply_metadata)

    def _context(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> ClientCallContext:
        """A call's context for the middleware (which may change metadata and timeout)."""
        return ClientCallContext(
            service.full_name,
            method.name,
            dict(metadata) if metadata else {},
            self.timeout if timeout is None else timeout,
            _descriptors=(service, method),
        )

    def _through_middleware(self, request: Any, context: ClientCallContext) -> Any:
        """The innermost endpoint of the middleware chain: the call itself."""
        service, method = context._descriptors
        if not method.unary:
            return self._stream(
                service, method, request, context.timeout, context.metadata, context
            )
        return self._unary(
            service, method, request, context.timeout, context.metadata,
            context.reply_metadata, context,
        )  # fmt: skip

    def stream_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Any:
        """A streaming call (rpcpoll/stream/calls.py): for a server stream, `request` is the
        request and a ServerStreamCall is returned; for a client stream, `request` is an
        iterable of requests and the response is returned; for bidi, `request` is None or an
        iterable of requests (sent from a thread of their own) and a BidiStreamCall is
        returned. `timeout` covers the whole stream."""
        if self._chain is None:
            return self._stream(service, method, request, timeout, metadata)
        context = self._context(service, method, timeout, metadata)
        context.kind = method.kind
        return self._chain(request, context)

    def _stream(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        context: ClientCallContext | None = None,
    ) -> Any:
        end = self._open_stream(service, method, timeout, metadata, context)
        encode = method.encode_request
        kind = method.kind
        if kind == "server_stream":
            try:
                end.send(encode(request))
            except BaseException:
                end.cancel(StatusCode.CANCELLED, "the request could not be sent")
                raise
            end.end(trailer_info())
            return ServerStreamCall(end, encode)
        if kind == "client_stream":
            return run_client_stream(end, encode, request)
        call: BidiStreamCall[Any, Any] = BidiStreamCall(end, encode)
        if request is not None:
            start_sending(call, request)
        return call

    def _open_stream(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        context: ClientCallContext | None,
    ) -> SyncStreamEnd:
        """A stream's end, its HEADER queued, on an instance picked as for a call (a dial
        that fails is retried on another instance, within `retry` and the deadline)."""
        if self._closed:
            raise UnavailableError(message="the client is closed")
        if timeout is None:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        decode = method.response_type.from_bytes
        failed: set[Instance] | None = None
        attempt = 1
        while True:
            endpoint = self._pick(None, failed)
            if context is not None:
                context.peer, context.attempts = endpoint.instance.target, attempt
            try:
                transport = endpoint.streams or self._stream_transport(endpoint)
                end = transport.open_stream(
                    service.full_name, method.name, decode, deadline, metadata
                )
                endpoint.breaker.on_success()
                return end
            except NotSentError as exc:
                failed = failed or set()
                time.sleep(
                    self._after_failure(service, method, endpoint, exc, attempt, deadline, failed)
                )
                attempt += 1

    def _stream_transport(self, endpoint: _Endpoint) -> MuxTransport:
        """The MuxTransport for streams of an endpoint whose calls are pooled."""
        with self._lock:
            if endpoint.streams is None:
                network, address = _dial_address(endpoint.instance)
                endpoint.streams = MuxTransport(
                    network,
                    address,
                    size=1,
                    frames=self._frames,
                    connect_timeout=self.connect_timeout,
                    describe=endpoint.instance.target,
                    max_calls=self._mux_limits[0],
                    max_unsent=self._mux_limits[1],
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
            streams: MuxTransport = endpoint.streams
            return streams

    def _unary(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None,
        context: ClientCallContext | None = None,
    ) -> Any:
        payload, deadline, template, hash_key = self._prepare(
            service, method, request, timeout, metadata
        )
        failed: set[Instance] | None = None  # instances this call failed on: tried last
        attempt = 1
        while True:
            endpoint = self._pick(hash_key, failed)
            if context is not None:
                context.peer, context.attempts = endpoint.instance.target, attempt
            try:
                reply = endpoint.transport.call(template, payload, deadline, metadata)
                endpoint.breaker.on_success()
                break
            except NotSentError as exc:
                failure: Exception = exc
            except MaybeSentError as exc:
                failure = exc
            failed = failed or set()
            time.sleep(
                self._after_failure(service, method, endpoint, failure, attempt, deadline, failed)
            )
            attempt += 1
        return self._result(method, reply, reply_metadata)

    # The steps of a call that do not depend on how it waits (the async channel shares them).

    def _prepare(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[bytes, float | None, RequestTemplate, str | bytes | None]:
        """(payload, deadline, header template, hash key) of a call, checked before anything
        is sent: the request's type and fields, the frame size, the channel being open."""
        if self._closed:
            raise UnavailableError(message="the client is closed")
        payload = method.encode_request(request)
        if timeout is None:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        key = (service.full_name, method.name)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = RequestTemplate(service.full_name, method.name)
        if metadata or len(payload) > self._small_payload:
            size = template.frame_size_bound(len(payload), metadata)
            if size > self.max_frame_size:
                raise ResourceExhaustedError(
                    message=f"the request to {method.name} would be a frame of {size} bytes,"
                    f" over this client's max_frame_size of {self.max_frame_size}; nothing was sent"
                )
        hash_key = self._hash_key(method.name, request, metadata) if self._hash_key else None
        return payload, deadline, template, hash_key

    def _after_failure(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        endpoint: _Endpoint,
        failure: Exception,
        attempt: int,
        deadline: float | None,
        failed: set[Instance],
    ) -> float:
        """After an attempt that failed with NotSentError or MaybeSentError: the pause before
        the next attempt, or UnavailableError when the call may not (or cannot) be retried."""
        endpoint.breaker.on_failure()
        failed.add(endpoint.instance)
        retry = isinstance(failure, NotSentError) or self._is_idempotent(service, method)
        if (
            not retry
            or attempt >= self.retry.max_attempts
            or (deadline is not None and time.monotonic() >= deadline)
        ):
            cause = failure.__cause__ or failure
            where = endpoint.instance.target
            raise UnavailableError(message=f"{where}: {cause}") from cause
        pause = self.retry.pause(attempt)
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        return pause

    @staticmethod
    def _result(
        method: MethodDescriptor, reply: Reply, reply_metadata: dict[str, str] | None
    ) -> Any:
        """The response of a reply, or its RpcError raised."""
        msg_type, status, status_message, received, body = reply
        if reply_metadata is not None:
            reply_metadata.update(received)
        if msg_type is MessageType.EXCEPTION:
            raise RpcError(status, status_message)
        try:
            return method.response_type.from_bytes(body)
        except ValueError as exc:
            raise InternalError(message=f"cannot decode the reply to {method.name}: {exc}") from exc

    def _pick(
        self, hash_key: str | bytes | None, failed: AbstractSet[Instance] | None
    ) -> _Endpoint:
        """The endpoint for the next attempt: an instance whose breaker allows a call,
        preferring those this call has not failed on."""
        picker, endpoints = self._view
        if not failed:  # the first attempt: most often the first pick will do
            instance = picker.pick(hash_key, _NONE)
            if instance is not None:
                endpoint = endpoints[instance]
                if endpoint.breaker.allow():
                    return endpoint
        failed = failed or _NONE
        refused: set[Instance] = set()  # breakers said no
        avoid_failed = bool(failed)
        while True:
            excluded = failed | refused if avoid_failed else refused
            instance = picker.pick(hash_key, excluded)
            if instance is None:
                if avoid_failed:
                    avoid_failed = False  # every other instance is out: try those again
                    continue
                raise UnavailableError(message=self._no_instance_message(refused))
            endpoint = endpoints[instance]
            if endpoint.breaker.allow():
                return endpoint
            refused.add(instance)

    def _no_instance_message(self, refused: set[Instance]) -> str:
        if refused:
            shown = ", ".join(sorted(instance.target for instance in refused))
            return f"{self._service_name}: circuit open for every instance ({shown})"
        return f"{self._service_name}: no instance available"

    def _is_idempotent(self, service: ServiceDescriptor, method: MethodDescriptor) -> bool:
        return (
            method.idempotent
            or method.name in self._idempotent
            or f"{service.full_name}/{method.name}" in self._idempotent
        )

    # ------------------------------------------------------------------ instances

    @property
    def instances(self) -> list[Instance]:
        """The instances calls are balanced over right now."""
        return list(self._view[1])

    def _on_instances(self, instances: Sequence[Instance]) -> None:
        """The resolver's change notification (on its thread)."""
        if not self._closed:
            self._set_instances(instances, warm_now=False)

    def _set_instances(self, instances: Sequence[Instance], *, warm_now: bool) -> None:
        with self._lock:
            if self._closed or same_instances(instances, self._resolved):
                return  # e.g. a subscription's first notice repeats what resolve() gave
            self._resolved = list(instances)
            old = self._endpoints_by_target()
            endpoints: dict[str, _Endpoint] = {}
            view: dict[Instance, _Endpoint] = {}
            added = []
            for instance in instances:
                endpoint = old.get(instance.target) or endpoints.get(instance.target)
                if endpoint is None:
                    try:
                        where = _dial_address(instance)
                        self._check_tls_name(where[0], instance.target)
                    except ValueError as exc:  # one bad entry must not hide the good ones
                        log.warning(
                            "%s: skipping instance %r: %s", self._service_name, instance, exc
                        )
                        continue
                    endpoint = self._new_endpoint(instance, *where)
                    added.append(endpoint)
                endpoint.instance = instance
                endpoints[instance.target] = endpoint
                view[instance] = endpoint
            removed = [endpoint for target, endpoint in old.items() if target not in endpoints]
            self._view = (self._balancer.picker(list(view)), view)
        for endpoint in removed:
            endpoint.close()  # calls in progress on it finish
        if added and self._warmup:
            if warm_now:
                self._warm(added)
            else:
                warmer = threading.Thread(
                    target=self._warm, args=(added,), name="rpcpoll-warmup", daemon=True
                )
                self._warmers = [t for t in self._warmers if t.is_alive()] + [warmer]
                warmer.start()

    def _check_tls_name(self, network: str, shown: str) -> None:
        """ValueError if TLS would have no name to check the server's certificate against."""
        ssl = self._ssl
        no_name = network == "unix" and self._server_hostname is None
        if no_name and ssl is not None and ssl.check_hostname:
            raise ValueError(
                f"{shown}: a unix address has no host name for TLS to check: give"
                " server_hostname= (or an SSLContext with check_hostname off)"
            )

    def _endpoints_by_target(self) -> dict[str, _Endpoint]:
        """The current endpoints, one per address (instances differing only in weight or tags
        share theirs)."""
        return {endpoint.instance.target: endpoint for endpoint in self._view[1].values()}

    def _new_endpoint(
        self, instance: Instance, network: str, address: str | tuple[str, int]
    ) -> _Endpoint:
        describe = instance.target
        transport: _Transport
        if self._mux:
            transport = MuxTransport(
                network,
                address,
                size=self._mux,
                frames=self._frames,
                connect_timeout=self.connect_timeout,
                describe=describe,
                max_calls=self._mux_limits[0],
                max_unsent=self._mux_limits[1],
                ssl=self._ssl,
                server_hostname=self._server_hostname,
            )
        else:
            transport = LongConnTransport(
                network,
                address,
                frames=self._frames,
                pool_options=self._pool_options,
                connect_timeout=self.connect_timeout,
                describe=describe,
                ssl=self._ssl,
                server_hostname=self._server_hostname,
            )
        return _Endpoint(instance, transport, self._breaker_factory(instance))

    def _warm(self, endpoints: list[_Endpoint]) -> None:
        for endpoint in endpoints:
            try:
                endpoint.transport.warm_up(self._warmup)
            except (NotSentError, RpcError) as exc:  # the first calls will dial instead
                log.warning("warm-up of %s failed: %s", endpoint.instance.target, exc)

    # ------------------------------------------------------------------ lifecycle

    @property
    def idle_connections(self) -> int:
        """Pooled connections waiting for a call, over every instance (pool mode)."""
        return sum(
            endpoint.transport.idle_connections
            for endpoint in self._endpoints_by_target().values()
            if isinstance(endpoint.transport, LongConnTransport)
        )

    def close(self) -> None:
        """Close idle connections and stop following discovery; calls in progress finish,
        later calls fail."""
        with self._lock:
            self._closed = True
            endpoints = list(self._endpoints_by_target().values())
        if self._subscription is not None:
            self._subscription.close()
        if self._owned_resolver is not None:
            self._owned_resolver.close()
        for warmer in self._warmers:
            warmer.join(5.0)
        for endpoint in endpoints:
            endpoint.close()

    def __enter__(self) -> ClientChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _dial_address(instance: Instance) -> tuple[str, str | tuple[str, int]]:
    """(network, address) to dial an instance at; ValueError if it cannot be dialed."""
    if instance.network not in _NETWORKS:
        raise ValueError(f"unsupported network {instance.network!r}")
    return parse_address(instance.target)


def _discovery_of(
    target: str | tuple[str, int], resolver: Resolver | None
) -> tuple[str, Resolver | None]:
    """(service name, resolver) for a target: no resolver for a fixed address."""
    if resolver is not None:
        if not isinstance(target, str):
            raise TypeError("with resolver=, the target is the service name")
        return target, resolver
    if isinstance(target, str) and target.lower().startswith(("etcd://", "etcds://")):
        from ..discovery.etcd import EtcdResolver, parse_etcd_target

        _endpoints, service = parse_etcd_target(target)
        return service, EtcdResolver.from_url(target)
    return str(target), None


def open_channel(target: str, **options: Any) -> ClientChannel:
    """The Channel for a target string; what `SClient(target, **options)` uses."""
    return ClientChannel(target, **options)
