"""What one attempt of a call can end in, shared by the client's transports and the channel."""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..protocol.frame import MessageType
from ..protocol.status import DeadlineExceededError

__all__ = ["MaybeSentError", "NotSentError", "Reply", "timeout_ms_until"]

# (message type, status, status message, metadata, payload) of a reply frame
Reply = tuple[MessageType, int, str, Mapping[str, str], memoryview]


class NotSentError(Exception):
    """The request provably did not reach the server (no connection, or a connection found
    dead before anything was written): safe to retry any method, on any instance."""


class MaybeSentError(Exception):
    """The connection failed after the request may have reached the server: only an
    idempotent method may be retried."""


def timeout_ms_until(deadline: float | None) -> int | None:
    """The caller's remaining time in whole milliseconds (at least 1) as sent to the server;
    raises DEADLINE_EXCEEDED if none is left."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceededError(message="deadline exceeded before the call was sent")
    return max(1, int(remaining * 1000))
