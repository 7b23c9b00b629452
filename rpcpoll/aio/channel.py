"""The async Channel behind generated async clients: `ClientChannel`'s targets, balancing,
circuit breakers, retry rules and limits, with calls that are awaited.

Every instance is reached over multiplexed connections on the running event loop
(rpcpoll.aio.mux): a ring of at most `mux` connections per instance (`mux=True` or the
default: rpcpoll.client.DEFAULT_MUX_CONNECTIONS), grown only while calls are waiting on every
connection. The channel can be made outside any event loop; it binds to the loop of its first
call. `timeout=` and the deadline work as for the sync channel; cancelling the awaiting task
cancels the call on the server too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ..client.channel import DEFAULT_MUX_CONNECTIONS, ClientChannel, _Endpoint
from ..client.outcome import MaybeSentError, NotSentError
from ..discovery.base import Instance
from ..middleware import ClientCallContext
from ..protocol.status import StatusCode, UnavailableError
from ..protocol.stream import trailer_info
from ..service import MethodDescriptor, ServiceDescriptor
from ..stream.calls import AsyncBidiStreamCall, AsyncServerStreamCall, run_client_stream_async
from ..stream.core import AsyncStreamEnd
from .mux import AsyncMuxTransport

__all__ = ["AsyncClientChannel", "open_async_channel"]


class AsyncClientChannel(ClientChannel):
    """An async Channel to the instances of one service; options as `ClientChannel`'s
    (`mux` is the largest number of connections per instance; pool options do not apply)."""

    def __init__(self, target: str | tuple[str, int], **options: Any) -> None:
        mux = options.pop("mux", DEFAULT_MUX_CONNECTIONS)
        if mux is True or not mux:
            mux = DEFAULT_MUX_CONNECTIONS
        super().__init__(target, mux=mux, **options)

    def _new_endpoint(
        self, instance: Instance, network: str, address: str | tuple[str, int]
    ) -> _Endpoint:
        transport = AsyncMuxTransport(
            network,
            address,
            size=self._mux,
            frames=self._frames,
            connect_timeout=self.connect_timeout,
            describe=instance.target,
            max_calls=self._mux_limits[0],
            max_unsent=self._mux_limits[1],
            ssl=self._ssl,
            server_hostname=self._server_hostname,
        )
        return _Endpoint(instance, transport, self._breaker_factory(instance))  # type: ignore[arg-type]

    _is_async = True

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
        if self._chain is None:
            return await self._unary_async(
                service, method, request, timeout, metadata, reply_metadata
            )
        context = self._context(service, method, timeout, metadata)
        try:
            return await self._chain(request, context)
        finally:
            if reply_metadata is not None:
                reply_metadata.update(context.reply_metadata)

    def stream_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Any:
        """A streaming call, as `ClientChannel.stream_call` but async: a server stream or
        bidi call is returned at once (an AsyncServerStreamCall or AsyncBidiStreamCall that
        opens its stream when first used: iterated, sent on, entered); a client stream is an
        awaitable of the response. Requests may come from an iterable or an async iterable."""
        if timeout is None:
            timeout = self.timeout
        encode = method.encode_request
        context = None
        if self._chain is not None:
            context = self._context(service, method, timeout, metadata)
            context.kind = method.kind
        if method.kind == "client_stream":
            if context is None:
                return self._client_stream(service, method, request, timeout, metadata)
            return self._chain(request, context)  # type: ignore[misc]

        call_type = AsyncServerStreamCall if method.kind == "server_stream" else AsyncBidiStreamCall
        call: Any = None

        async def opener() -> Any:
            if context is None:
                return await self._open_call(service, method, request, timeout, metadata)
            assert self._chain is not None
            return await self._chain(request, context)

        call = call_type(opener, encode)
        return call

    async def _client_stream(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        requests: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        context: ClientCallContext | None = None,
    ) -> Any:
        end = await self._open_stream_async(service, method, timeout, metadata, context)
        return await run_client_stream_async(end, method.encode_request, requests)

    async def _open_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        context: ClientCallContext | None = None,
    ) -> Any:
        """The innermost step of a server stream or bidi call: its stream opened (and, for a
        server stream, its request sent), as an opened call object."""
        end = await self._open_stream_async(service, method, timeout, metadata, context)
        encode = method.encode_request
        if method.kind == "server_stream":
            opened: Any = AsyncServerStreamCall.opened(end, encode)
            try:
                await end.send(encode(request))
            except BaseException:
                end.cancel(StatusCode.CANCELLED, "the request could not be sent")
                raise
            end.end(trailer_info())
            return opened
        bidi: Any = AsyncBidiStreamCall.opened(end, encode)
        if request is not None:
            bidi.start_sending(request)
        return bidi

    async def _open_stream_async(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        context: ClientCallContext | None,
    ) -> AsyncStreamEnd:
        if self._closed:
            raise UnavailableError(message="the client is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        decode = method.response_type.from_bytes
        failed: set[Instance] | None = None
        attempt = 1
        while True:
            endpoint = self._pick(None, failed)
            if context is not None:
                context.peer, context.attempts = endpoint.instance.target, attempt
            transport: AsyncMuxTransport = endpoint.transport  # type: ignore[assignment]
            try:
                end = await transport.open_stream(
                    service.full_name, method.name, decode, deadline, metadata
                )
                endpoint.breaker.on_success()
                return end
            except NotSentError as exc:
                failed = failed or set()
                pause = self._after_failure(
                    service, method, endpoint, exc, attempt, deadline, failed
                )
                await asyncio.sleep(pause)
                attempt += 1

    async def _through_middleware(self, request: Any, context: ClientCallContext) -> Any:
        service, method = context._descriptors
        if method.kind == "client_stream":
            return await self._client_stream(
                service, method, request, context.timeout, context.metadata, context
            )
        if not method.unary:
            return await self._open_call(
                service, method, request, context.timeout, context.metadata, context
            )
        return await self._unary_async(
            service, method, request, context.timeout, context.metadata,
            context.reply_metadata, context,
        )  # fmt: skip

    async def _unary_async(
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
        failed: set[Instance] | None = None
        attempt = 1
        while True:
            endpoint = self._pick(hash_key, failed)
            if context is not None:
                context.peer, context.attempts = endpoint.instance.target, attempt
            transport: AsyncMuxTransport = endpoint.transport  # type: ignore[assignment]
            try:
                reply = await transport.call(template, payload, deadline, metadata)
                endpoint.breaker.on_success()
                break
            except NotSentError as exc:
                failure: Exception = exc
            except MaybeSentError as exc:
                failure = exc
            failed = failed or set()
            pause = self._after_failure(
                service, method, endpoint, failure, attempt, deadline, failed
            )
            await asyncio.sleep(pause)
            attempt += 1
        return self._result(method, reply, reply_metadata)

    async def aclose(self) -> None:
        """Close the channel from async code (the same as `close()`)."""
        self.close()

    async def __aenter__(self) -> AsyncClientChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def open_async_channel(target: str, **options: Any) -> AsyncClientChannel:
    """The async Channel for a target string; what `SAsyncClient(target, **options)` uses."""
    return AsyncClientChannel(target, **options)
