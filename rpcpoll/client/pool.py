"""Long-connection pools, as Kitex's LongPool: idle connections per address, checked on the way
out, capped per address and overall, evicted after an idle timeout.

Rules (Kitex's, `pkg/remote/connpool/long_pool.go`):

- `get` takes the most recently returned idle connection (LIFO keeps a warm set small) and
  checks it with `is_active()`; a dead one is closed and the next is tried. With none left the
  caller dials. Active connections are not capped, only idle ones.
- `put` keeps a connection only while the address holds fewer than `max_idle_per_address` and
  the whole process fewer than `max_idle_global`; otherwise it is closed.
- The caller never puts back a connection that saw an error or a timeout: it closes it.
- An idle connection older than `max_idle_timeout` is closed when found (on `get`, and by the
  periodic sweep that `put` triggers).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from ..transport.connection import Connection

__all__ = ["IdleBudget", "Pool", "PoolOptions"]


@dataclass(frozen=True)
class PoolOptions:
    """Kitex's defaults: 10 idle per address, 100 overall, 60 s idle timeout."""

    max_idle_per_address: int = 10
    max_idle_global: int = 100
    max_idle_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_idle_per_address < 0 or self.max_idle_global < 0:
            raise ValueError("idle limits cannot be negative")
        if self.max_idle_timeout <= 0:
            raise ValueError("max_idle_timeout must be positive")


class IdleBudget:
    """The process-wide count of idle pooled connections (Kitex's globalIdle).

    Its lock is also the lock of every Pool that shares it: one acquisition per get or put.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle = 0


GLOBAL_IDLE = IdleBudget()


class Pool:
    """Idle connections to one address."""

    def __init__(self, options: PoolOptions, budget: IdleBudget = GLOBAL_IDLE) -> None:
        self.options = options
        self._budget = budget
        self._lock = budget.lock
        self._idle: deque[tuple[Connection, float]] = deque()  # (conn, idle since)
        self._closed = False

    def get(self) -> Connection | None:
        """An idle connection that is still active, or None (the caller dials)."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
                self._budget.idle -= 1
            # Checked outside the lock: on a direct connection is_active() is a system call.
            if time.monotonic() - since < self.options.max_idle_timeout and conn.is_active():
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        """Keep `conn` for reuse if the limits allow, else close it."""
        if self._closed or conn.closed:  # no liveness probe here: `get` checks
            conn.close()
            return
        options = self.options
        budget = self._budget
        now = time.monotonic()
        with self._lock:
            keep = (
                len(self._idle) < options.max_idle_per_address
                and budget.idle < options.max_idle_global
            )
            if keep:
                budget.idle += 1
                self._idle.append((conn, now))
            oldest = self._idle[0][1] if self._idle else now
            expired = self._expired_locked(now) if now - oldest >= options.max_idle_timeout else []
        if not keep:
            conn.close()
        for old in expired:
            old.close()

    def _expired_locked(self, now: float) -> list[Connection]:
        # Oldest first: stop at the first connection that has not expired (Kitex's Evict).
        limit = now - self.options.max_idle_timeout
        expired = []
        while self._idle and self._idle[0][1] <= limit:
            expired.append(self._idle.popleft()[0])
        self._budget.idle -= len(expired)
        return expired

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when put back."""
        with self._lock:
            self._closed = True
            conns = [conn for conn, _ in self._idle]
            self._budget.idle -= len(conns)
            self._idle.clear()
        for conn in conns:
            conn.close()
