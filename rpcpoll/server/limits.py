"""ServerLimits: every bound a Server enforces, with defaults that are safe on a 2-core box.

Each limit is a `Server(...)` keyword and an `rpcpoll serve` flag of the same name
(docs/limits.md lists what a peer sees when one is hit). The defaults are sized for one
process on a small machine: the worst case they allow together (every connection holding its
buffers full) is stated in docs/limits.md, and every hostile pattern the test suite plays
(tests/hostile/) stays far below it.

Where each is enforced, and what it costs:

- `max_connections`: at accept, a length compare; a connection over it is sent a refusal
  frame and closed at once (transport/eventloop.py).
- `max_calls`, `max_calls_per_connection`: per call, an int compare; counted only for calls
  that run on worker threads (a poller thread runs one call at a time anyway). A call over
  either is answered RESOURCE_EXHAUSTED without being decoded; a connection at its own limit
  is also not read until one of its calls ends.
- `max_frame_size`: from each frame's fixed 14 bytes, before the frame is buffered (a request
  over it closes the connection: nothing after it can be trusted to be a frame boundary); on
  every reply, which is answered RESOURCE_EXHAUSTED instead when over.
- `max_header_size`, `max_metadata_entries`: per frame a length compare; entries are counted
  from the header's block counts before they are read.
- `max_partial_bytes`, `frame_timeout`: a frame that has started arriving must complete
  within `frame_timeout`, and all incomplete frames together may hold `max_partial_bytes`
  (transport/connection.py, "Incomplete messages"); checked when a read leaves a frame
  incomplete, never per complete frame.
- `max_unsent_bytes`, `max_unread_bytes`: backpressure per connection (transport/connection.py,
  "Backpressure"); checked when a flush fills the socket or a read lands while a call runs.
- `idle_timeout`: a connection with nothing received or sent for that long is closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from ..protocol.frame import DEFAULT_MAX_FRAME_SIZE

__all__ = ["DEFAULT_LIMITS", "FD_RESERVE", "RESERVED_ENTRIES", "ServerLimits", "fd_capped"]

log = logging.getLogger("rpcpoll.server")

KiB = 1024
MiB = 1024 * KiB

# Header entries rpcpoll (or Kitex) itself may send besides metadata: message type, method,
# timeout, status code and message, "isn", and room for a few Kitex transmeta keys.
RESERVED_ENTRIES = 10
# File descriptors kept out of max_connections' reach (listeners, logs, the pollers' own,
# connections the handlers open): a server never accepts into EMFILE.
FD_RESERVE = 64


@dataclass(frozen=True)
class ServerLimits:
    """The bounds of one server (module docs; docs/limits.md). None disables a timeout."""

    max_connections: int = 1024
    max_calls: int = 256
    max_calls_per_connection: int = 128
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_header_size: int = 16 * KiB
    max_metadata_entries: int = 64
    max_partial_bytes: int = 64 * MiB
    frame_timeout: float | None = 30.0
    idle_timeout: float | None = 600.0
    max_unsent_bytes: int = 256 * KiB
    max_unread_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_calls",
            "max_calls_per_connection",
            "max_unsent_bytes",
            "max_unread_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_frame_size < 4 * KiB:
            raise ValueError(f"max_frame_size must be at least 4096, got {self.max_frame_size}")
        if not 4 <= self.max_header_size <= 4 * 0xFFFF:
            raise ValueError(
                f"max_header_size must be between 4 and 262140, got {self.max_header_size}"
            )
        if self.max_metadata_entries < 0 or self.max_partial_bytes < 0:
            raise ValueError("max_metadata_entries and max_partial_bytes cannot be negative")
        for name in ("frame_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None), got {value}")

    @property
    def max_header_entries(self) -> int:
        """Entries a header may have in all: metadata plus rpcpoll's own keys."""
        return self.max_metadata_entries + RESERVED_ENTRIES

    def describe(self) -> str:
        """One line naming every limit, for the server's start-up log."""
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


DEFAULT_LIMITS = ServerLimits()


def fd_capped(max_connections: int) -> int:
    """`max_connections`, lowered (with a warning) to what the process's fd limit allows: a
    server that runs out of fds cannot even accept a connection to refuse it."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft == resource.RLIM_INFINITY:
        return max_connections
    cap = max(1, soft - FD_RESERVE)
    if max_connections > cap:
        log.warning(
            "max_connections %d is more than the fd limit (%d) allows: serving at most %d"
            " (raise it with ulimit -n)",
            max_connections, soft, cap,
        )  # fmt: skip
        return cap
    return max_connections
