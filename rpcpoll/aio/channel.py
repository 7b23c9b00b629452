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
from collections.abc import Mapping
from typing import Any

from ..client.channel import DEFAULT_MUX_CONNECTIONS, ClientChannel, _Endpoint
from ..client.outcome import MaybeSentError, NotSentError
from ..discovery.base import Instance
from ..middleware import ClientCallContext
from ..service import MethodDescriptor, ServiceDescriptor
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

    async def _through_middleware(self, request: Any, context: ClientCallContext) -> Any:
        service, method = context._descriptors
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
