"""netpoll in Python: zero-copy buffers, pollers, connections, the server EventLoop, the Dialer.

This layer knows nothing about RPC; any framed protocol can be built on it.
"""

from .buffer_cache import BufferCache, CacheStats, default_cache
from .errors import (
    BufferClosedError,
    LinkBufferError,
    NotEnoughDataError,
    ReadOnlyBufferError,
    TransportError,
)
from .linkbuffer import BINARY_INPLACE_THRESHOLD, LinkBuffer

__all__ = [
    "BINARY_INPLACE_THRESHOLD",
    "BufferCache",
    "BufferClosedError",
    "CacheStats",
    "LinkBuffer",
    "LinkBufferError",
    "NotEnoughDataError",
    "ReadOnlyBufferError",
    "TransportError",
    "default_cache",
]
