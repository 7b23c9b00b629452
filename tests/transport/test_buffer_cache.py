"""The size-class block cache behind LinkBuffer (netpoll's mcache)."""

from __future__ import annotations

import pytest

from rpcpoll.transport import BufferCache


def test_sizes_round_up_to_power_of_two_classes_with_a_minimum() -> None:
    cache = BufferCache(min_size=4096, max_size=1 << 20)
    assert [cache.block_size(n) for n in (1, 4096, 4097, 8192, 100_000)] == [
        4096,
        4096,
        8192,
        8192,
        131072,
    ]
    assert len(cache.get(5000)) == 8192
    assert len(cache.get((1 << 20) + 1)) == (1 << 20) + 1  # above max: exact, never pooled


def test_hits_and_misses_are_counted() -> None:
    cache = BufferCache()
    block = cache.get(100)
    assert cache.stats().misses == 1 and cache.stats().hits == 0
    assert cache.put(block)
    assert cache.get(4000) is block
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.returned) == (1, 1, 1)


def test_put_refuses_blocks_that_are_not_size_classes() -> None:
    cache = BufferCache(min_size=4096, max_size=1 << 16)
    assert not cache.put(bytearray(5000))
    assert not cache.put(bytearray(2048))  # below the minimum class
    assert not cache.put(bytearray(1 << 17))  # above the maximum class
    assert cache.stats().dropped == 3 and cache.stats().cached_blocks == 0


def test_put_refuses_a_block_that_a_memoryview_still_exports() -> None:
    cache = BufferCache()
    block = cache.get(4096)
    view = memoryview(block)[10:20]
    assert not cache.put(block)
    del view
    assert cache.put(block)
    assert len(block) == 4096  # the export probe leaves the block unchanged


def test_each_class_is_bounded() -> None:
    cache = BufferCache(min_size=4096, max_size=1 << 16, max_bytes_per_class=3 * 4096)
    blocks = [bytearray(4096) for _ in range(5)]
    kept = [cache.put(b) for b in blocks]
    assert kept == [True, True, True, False, False]
    stats = cache.stats()
    assert stats.cached_blocks == 3 and stats.cached_bytes == 3 * 4096
    cache.clear()
    assert cache.stats().cached_blocks == 0


@pytest.mark.parametrize("bad", [0, 3, 1000])
def test_configuration_must_use_powers_of_two(bad: int) -> None:
    with pytest.raises(ValueError):
        BufferCache(min_size=bad)
