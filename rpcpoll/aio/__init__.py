"""asyncio clients: the async face of rpcpoll's channel, on connections the loop drives.

Generated `SAsyncClient` classes call through an `AsyncClientChannel`; see docs/asyncio.md.
"""

from .channel import AsyncClientChannel, open_async_channel

__all__ = ["AsyncClientChannel", "open_async_channel"]
