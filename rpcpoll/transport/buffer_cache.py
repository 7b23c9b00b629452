"""A size-class cache of `bytearray` blocks: netpoll's `mcache`, for LinkBuffer nodes.

Facts this module relies on:

- Allocating a `bytearray(n)` costs a `malloc` plus zero-filling n bytes; reusing a block costs
  one `list.pop`. For the 4 KiB-8 MiB blocks a connection churns through, reuse wins.
- `list.append` and `list.pop` are atomic in CPython, so the free lists need no lock. The
  counters are plain integers updated without a lock: exact in single-threaded use, approximate
  (never corrupting) when several threads share the cache.
- A block must never be handed out again while any `memoryview` into it is alive, or a stale view
  would see someone else's bytes. CPython refuses to resize a `bytearray` that has live buffer
  exports, so `put` probes with a one-byte resize and drops blocks that are still exported. This
  is what lets LinkBuffer views stay valid after `release()` (netpoll makes them invalid).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BLOCK", "DEFAULT_MIN_BLOCK", "BufferCache", "CacheStats", "default_cache"]

DEFAULT_MIN_BLOCK = 4 * 1024
DEFAULT_MAX_BLOCK = 8 * 1024 * 1024  # netpoll's mallocMax: larger blocks are never pooled
DEFAULT_MAX_BYTES_PER_CLASS = 16 * 1024 * 1024


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache's counters."""

    hits: int
    misses: int
    returned: int
    dropped: int
    cached_blocks: int
    cached_bytes: int


class BufferCache:
    """Pools power-of-two `bytearray` blocks between `min_size` and `max_size` bytes.

    `get(n)` returns a block of at least n bytes (exactly n when n is above `max_size`, which is
    never pooled). `put(block)` offers a block back; it is kept only if its size is a size class,
    its class holds fewer than `max_bytes_per_class` bytes, and no memoryview still exports it.
    """

    def __init__(
        self,
        min_size: int = DEFAULT_MIN_BLOCK,
        max_size: int = DEFAULT_MAX_BLOCK,
        max_bytes_per_class: int = DEFAULT_MAX_BYTES_PER_CLASS,
    ) -> None:
        if min_size < 1 or min_size & (min_size - 1):
            raise ValueError(f"min_size must be a positive power of two, got {min_size}")
        if max_size < min_size or max_size & (max_size - 1):
            raise ValueError(f"max_size must be a power of two >= min_size, got {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self._min_shift = min_size.bit_length() - 1
        self._max_shift = max_size.bit_length() - 1
        self._free: list[list[bytearray]] = [[] for _ in range(self._max_shift + 1)]
        self._limit = [max(1, max_bytes_per_class >> s) for s in range(self._max_shift + 1)]
        self.hits = 0
        self.misses = 0
        self.returned = 0
        self.dropped = 0

    def block_size(self, n: int) -> int:
        """The capacity `get(n)` returns: n rounded up to a size class (n itself above max)."""
        if n > self.max_size:
            return n
        shift = (n - 1).bit_length()
        return 1 << (shift if shift > self._min_shift else self._min_shift)

    def get(self, n: int) -> bytearray:
        """A block of `block_size(n)` bytes; its contents are unspecified."""
        if n > self.max_size:
            self.misses += 1
            return bytearray(n)
        shift = (n - 1).bit_length()
        if shift < self._min_shift:
            shift = self._min_shift
        try:
            block = self._free[shift].pop()
        except IndexError:
            self.misses += 1
            return bytearray(1 << shift)
        self.hits += 1
        return block

    def put(self, block: bytearray) -> bool:
        """Offer `block` back; returns whether the cache kept it."""
        size = len(block)
        shift = size.bit_length() - 1
        if size != 1 << shift or not self._min_shift <= shift <= self._max_shift:
            self.dropped += 1
            return False
        free = self._free[shift]
        if len(free) >= self._limit[shift] or not _unexported(block):
            self.dropped += 1
            return False
        free.append(block)
        self.returned += 1
        return True

    def stats(self) -> CacheStats:
        blocks = sum(len(free) for free in self._free)
        nbytes = sum(len(free) << shift for shift, free in enumerate(self._free))
        return CacheStats(self.hits, self.misses, self.returned, self.dropped, blocks, nbytes)

    def clear(self) -> None:
        """Drop every pooled block (counters are kept)."""
        for free in self._free:
            free.clear()


def _unexported(block: bytearray) -> bool:
    """True if no buffer export (memoryview) of `block` is alive; leaves `block` unchanged."""
    try:
        block.append(0)
    except BufferError:
        return False
    del block[-1]
    return True


_default_cache = BufferCache()


def default_cache() -> BufferCache:
    """The process-wide cache that LinkBuffers use unless given another."""
    return _default_cache
