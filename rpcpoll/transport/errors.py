"""The transport's exceptions: one root, grouped subclasses, stdlib bases where they fit.

netpoll reports its errors as errno-like values (`ErrConnClosed`, `ErrReadTimeout`, ...); here each
becomes a class under `TransportError`, so callers can catch the whole layer or one condition.
"""

from __future__ import annotations

__all__ = [
    "BufferClosedError",
    "ConcurrentAccessError",
    "ConnectionClosedError",
    "ConnectionEOFError",
    "DialError",
    "DialRefusedError",
    "DialTimeoutError",
    "LinkBufferError",
    "NotEnoughDataError",
    "ReadOnlyBufferError",
    "ReadTimeoutError",
    "TLSCertificateError",
    "TLSConfigError",
    "TLSError",
    "TLSHandshakeError",
    "TLSSessionError",
    "TransportError",
    "UnsupportedNetworkError",
    "WouldBlockOnPollerError",
    "WriteTimeoutError",
]


class TransportError(Exception):
    """Root of every error raised by `rpcpoll.transport`."""


class LinkBufferError(TransportError, ValueError):
    """A LinkBuffer operation was called with arguments the buffer cannot satisfy."""


class NotEnoughDataError(LinkBufferError):
    """A read asked a raw LinkBuffer for more bytes than it holds (a raw buffer never blocks)."""

    def __init__(self, op: str, wanted: int, available: int) -> None:
        super().__init__(f"link buffer {op}({wanted}): only {available} bytes readable")
        self.op = op
        self.wanted = wanted
        self.available = available


class BufferClosedError(LinkBufferError):
    """The LinkBuffer was closed, or its blocks were handed to another buffer by `append`."""


class ReadOnlyBufferError(LinkBufferError):
    """A writer method was called on a read-only LinkBuffer (one made by `slice`)."""


class ConnectionClosedError(TransportError, ConnectionError):
    """The connection is closed (by this side, or by the peer: see `ConnectionEOFError`)."""


class ConnectionEOFError(ConnectionClosedError, EOFError):
    """The peer closed the connection before the bytes a read waited for arrived.

    Bytes that arrived before the close stay readable; `partial` holds what a read that
    consumes up to a delimiter (`until`) took before it hit the end of the stream.
    """

    def __init__(self, message: str = "connection closed by peer", partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class ReadTimeoutError(TransportError, TimeoutError):
    """A blocking read did not get its bytes before the read timeout or deadline."""


class WriteTimeoutError(TransportError, TimeoutError):
    """A flush could not hand every byte to the kernel before the write timeout or deadline.

    Bytes not yet sent stay in the output buffer and keep draining while the connection lives.
    """


class DialTimeoutError(TransportError, TimeoutError):
    """Resolving and connecting did not finish within the dial timeout."""


class DialRefusedError(TransportError, ConnectionRefusedError):
    """Nothing listens at the dialed address (ECONNREFUSED, or ENOENT for a Unix path)."""


class DialError(TransportError, OSError):
    """A dial failed for another reason (unreachable network, unresolvable host, ...)."""


class TLSError(TransportError):
    """Root of the TLS errors: the message says what went wrong and, where it can, why."""


class TLSConfigError(TLSError, ValueError):
    """A certificate, key or CA file cannot be used (missing, not PEM, key not matching)."""


class TLSHandshakeError(TLSError, DialError):
    """The TLS handshake of a dial failed: the peer does not speak TLS, closed the connection,
    or refused our certificate. Nothing was sent to the application on the other side."""


class TLSCertificateError(TLSHandshakeError):
    """The peer's certificate was not accepted: unknown CA, expired, or not valid for the
    name we dialed (`verify_message` says which, as OpenSSL put it)."""

    def __init__(self, message: str, verify_code: int = 0, verify_message: str = "") -> None:
        super().__init__(message)
        self.verify_code = verify_code
        self.verify_message = verify_message


class TLSSessionError(TLSError, ConnectionClosedError):
    """An established TLS session failed (an alert from the peer, a corrupt record): the
    connection is closed. Raised by reads that would otherwise say only "closed by peer"."""


class ConcurrentAccessError(TransportError, RuntimeError):
    """Two threads flushed the same connection at once; a connection has one writer."""


class WouldBlockOnPollerError(TransportError, RuntimeError):
    """A blocking read was called on a poller thread (any poller's), where waiting would stall
    or deadlock every connection of that poller.

    Handlers that run on the poller thread must consume only what is buffered
    (check `len(conn.reader())` first) and return; they are called again when bytes arrive.
    """


class UnsupportedNetworkError(TransportError, ValueError):
    """The network name is not one of "tcp", "tcp4", "tcp6" or "unix"."""
