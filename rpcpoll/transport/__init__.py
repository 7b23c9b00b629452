"""netpoll in Python: zero-copy buffers, pollers, connections, the server EventLoop, the Dialer.

This layer knows nothing about RPC; any framed protocol can be built on it. `docs/transport.md`
maps every netpoll concept to its name here.
"""

from .buffer_cache import BufferCache, CacheStats, default_cache
from .connection import CloseCallback, Connection, OnRequest, Runner, run_inline
from .errors import (
    BufferClosedError,
    ConcurrentAccessError,
    ConnectionClosedError,
    ConnectionEOFError,
    DialError,
    DialRefusedError,
    DialTimeoutError,
    LinkBufferError,
    NotEnoughDataError,
    ReadOnlyBufferError,
    ReadTimeoutError,
    TransportError,
    UnsupportedNetworkError,
    WouldBlockOnPollerError,
    WriteTimeoutError,
)
from .eventloop import EventLoop
from .linkbuffer import BINARY_INPLACE_THRESHOLD, LinkBuffer
from .net import Dialer, Listener, convert_listener, create_listener, dial_connection
from .poller import Poller, PollerManager, configure, manager
from .worker_pool import WorkerPool, default_pool, set_default_pool


def initialize() -> None:
    """Start the pollers now instead of at the first connection (netpoll's Initialize)."""
    manager().initialize()


__all__ = [
    "BINARY_INPLACE_THRESHOLD",
    "BufferCache",
    "BufferClosedError",
    "CacheStats",
    "CloseCallback",
    "ConcurrentAccessError",
    "Connection",
    "ConnectionClosedError",
    "ConnectionEOFError",
    "DialError",
    "DialRefusedError",
    "DialTimeoutError",
    "Dialer",
    "EventLoop",
    "LinkBuffer",
    "LinkBufferError",
    "Listener",
    "NotEnoughDataError",
    "OnRequest",
    "Poller",
    "PollerManager",
    "ReadOnlyBufferError",
    "ReadTimeoutError",
    "Runner",
    "TransportError",
    "UnsupportedNetworkError",
    "WorkerPool",
    "WouldBlockOnPollerError",
    "WriteTimeoutError",
    "configure",
    "convert_listener",
    "create_listener",
    "default_cache",
    "default_pool",
    "dial_connection",
    "initialize",
    "manager",
    "run_inline",
    "set_default_pool",
]
