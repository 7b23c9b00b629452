"""Giving memory back after a burst: the buffer cache is emptied and the allocator trimmed.

After a burst, a process keeps what it grew to: the buffer cache holds up to its per-class
bound of free blocks, and glibc's malloc keeps freed memory in its heaps (above its dynamic
mmap threshold, even multi-megabyte blocks come from the heap). `release_memory()` empties the
cache and calls `malloc_trim(0)` (through ctypes, where the C library has it), so an idle
server's RSS returns near its baseline. `MemoryReleaser` does that once the buffer cache has
seen no activity for a while: a poller timer looks every half period (a few attribute reads),
and the release itself runs on the given runner, off the poller (a trim can take
milliseconds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

from .buffer_cache import BufferCache, default_cache
from .poller import Poller, TimerHandle, manager

__all__ = ["MemoryReleaser", "malloc_trim", "release_memory"]

log = logging.getLogger("rpcpoll.transport")

_trim: Callable[[int], int] | None = None
_trim_loaded = False


def malloc_trim() -> bool:
    """Ask the C allocator to return free memory to the system; False where it cannot."""
    global _trim, _trim_loaded
    if not _trim_loaded:
        _trim_loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to ask
            _trim = None
    if _trim is None:
        return False
    _trim(0)
    return True


def release_memory(cache: BufferCache | None = None) -> None:
    """Drop the cache's free blocks and trim the allocator."""
    (cache or default_cache()).clear()
    malloc_trim()


class MemoryReleaser:
    """Calls `release_memory` once per quiet spell: after `quiet` seconds in which the buffer
    cache handed out and took back nothing, and not again until it has been busy since."""

    def __init__(
        self,
        quiet: float,
        runner: Callable[[Callable[[], object]], object],
        cache: BufferCache | None = None,
        poller: Poller | None = None,
    ) -> None:
        if quiet <= 0:
            raise ValueError("quiet must be positive")
        self.quiet = quiet
        self._runner = runner
        self._cache = cache or default_cache()
        self._poller = poller
        self._timer: TimerHandle | None = None
        self._activity = -1
        self._quiet_since = 0.0
        self._released = True  # nothing to give back before the first burst
        self._stopped = False
        self.releases = 0

    def start(self) -> None:
        self._stopped = False
        if self._poller is None:
            self._poller = manager().pick()
        self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if not self._stopped and self._poller is not None:
            self._timer = self._poller.call_later(self.quiet / 2, self._tick)

    def _tick(self) -> None:
        cache = self._cache
        activity = cache.hits + cache.misses + cache.returned
        now = time.monotonic()
        if activity != self._activity:
            self._activity = activity
            self._quiet_since = now
            self._released = False
        elif not self._released and now - self._quiet_since >= self.quiet:
            self._released = True
            self.releases += 1
            try:
                self._runner(self._release)
            except RuntimeError:  # the runner is closed: release here
                self._release()
        self._arm()

    def _release(self) -> None:
        release_memory(self._cache)
        log.debug("quiet for %.1f s: released cached buffers and trimmed the heap", self.quiet)
