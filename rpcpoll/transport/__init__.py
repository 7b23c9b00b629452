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
    TLSCertificateError,
    TLSConfigError,
    TLSError,
    TLSHandshakeError,
    TLSSessionError,
    TransportError,
    UnsupportedNetworkError,
    WouldBlockOnPollerError,
    WriteTimeoutError,
)
from .eventloop import EventLoop
from .identity import PeerIdentity
from .linkbuffer import BINARY_INPLACE_THRESHOLD, LinkBuffer
from .net import Dialer, Listener, convert_listener, create_listener, dial_connection
from .poller import Poller, PollerManager, configure, manager
from .tls import ServerTLS, client_context, server_context
from .tls_connection import TLSConnection
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
    "PeerIdentity",
    "Poller",
    "PollerManager",
    "ReadOnlyBufferError",
    "ReadTimeoutError",
    "Runner",
    "ServerTLS",
    "TLSCertificateError",
    "TLSConfigError",
    "TLSConnection",
    "TLSError",
    "TLSHandshakeError",
    "TLSSessionError",
    "TransportError",
    "UnsupportedNetworkError",
    "WorkerPool",
    "WouldBlockOnPollerError",
    "WriteTimeoutError",
    "client_context",
    "configure",
    "convert_listener",
    "create_listener",
    "default_cache",
    "default_pool",
    "dial_connection",
    "initialize",
    "manager",
    "run_inline",
    "server_context",
    "set_default_pool",
]
