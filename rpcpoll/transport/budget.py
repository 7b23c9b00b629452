"""PartialBudget: a byte budget shared by connections for input held in incomplete messages.

A connection whose handler returned without consuming the bytes it has (half a frame, waiting
for the rest) holds those bytes for as long as the peer takes to send the rest. One such
connection is cheap; thousands holding megabytes each are a memory attack (slowloris with big
frames). Connections of one EventLoop charge what they hold to one budget; a connection whose
incomplete message would take the total over the limit is closed instead (connection.py).

Charges change only when a handler stalls on, or finishes, an incomplete message: never per
read or per complete message, so the lock below is off the hot path.
"""

from __future__ import annotations

import threading

__all__ = ["PartialBudget"]


class PartialBudget:
    """`limit` bytes of incomplete input, shared; `used` is what is charged right now."""

    __slots__ = ("_lock", "limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a partial budget cannot be negative, got {limit}")
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, old: int, new: int) -> bool:
        """Replace a charge of `old` bytes by `new`. Growth beyond the limit is refused (False,
        nothing changes); shrinking always succeeds."""
        with self._lock:
            used = self.used - old + new
            if new > old and used > self.limit:
                return False
            self.used = used
            return True

    def __repr__(self) -> str:
        return f"<PartialBudget {self.used}/{self.limit} bytes>"
