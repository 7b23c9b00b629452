"""The transport's exceptions: one root, grouped subclasses, stdlib bases where they fit.

netpoll reports its errors as errno-like values (`ErrConnClosed`, `ErrReadTimeout`, ...); here each
becomes a class under `TransportError`, so callers can catch the whole layer or one condition.
"""

from __future__ import annotations

__all__ = [
    "BufferClosedError",
    "LinkBufferError",
    "NotEnoughDataError",
    "ReadOnlyBufferError",
    "TransportError",
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
