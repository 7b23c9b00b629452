"""LinkBuffer behaviour, ported from netpoll's nocopy_linkbuffer_test.go plus Python specifics.

Most tests use a cache with tiny blocks so that a few bytes already span several blocks.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from rpcpoll.transport import (
    BufferCache,
    BufferClosedError,
    LinkBuffer,
    LinkBufferError,
    NotEnoughDataError,
    ReadOnlyBufferError,
)


def tiny(min_size: int = 8) -> LinkBuffer:
    return LinkBuffer(BufferCache(min_size=min_size, max_size=1 << 20))


def filled(data: bytes, min_size: int = 8) -> LinkBuffer:
    buf = tiny(min_size)
    buf.malloc(len(data))[:] = data
    buf.flush()
    return buf


# --------------------------------------------------------------- netpoll's TestLinkBuffer


def test_reads_on_empty_buffer_raise_and_malloc_is_invisible_until_flush() -> None:
    buf = tiny(128)
    assert len(buf) == 0 and buf.is_empty()
    with pytest.raises(NotEnoughDataError):
        buf.next(10)
    buf.malloc(128)
    assert buf.is_empty()
    with pytest.raises(NotEnoughDataError):
        buf.peek(10)
    buf.flush()
    assert len(buf) == 128

    assert len(buf.next(28)) == 28
    assert len(buf) == 100
    assert len(buf.peek(90)) == 90
    assert len(buf) == 100
    buf.release()

    booked = buf.book(1024, 8192)
    assert len(booked) == 1024
    assert len(buf) == 100
    buf.malloc_ack(1024)
    assert len(buf) == 100 and buf.malloc_len() == 1024
    buf.flush()
    assert len(buf) == 1124 and buf.malloc_len() == 0

    assert len(buf.get_bytes(max_views=16)) == 2
    buf.skip(1024)
    assert len(buf) == 100


def test_not_enough_data_error_says_what_was_asked() -> None:
    buf = filled(b"abc")
    with pytest.raises(NotEnoughDataError) as info:
        buf.read_binary(5)
    assert (info.value.wanted, info.value.available) == (5, 3)
    assert "5" in str(info.value) and "3" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert bytes(buf) == b"abc"  # a failed read consumes nothing


def test_get_bytes_returns_every_readable_byte_and_links_large_binaries() -> None:
    buf = LinkBuffer()
    payloads = [bytes([i]) * (10**i) for i in range(7)]  # 1 B .. 1 MB
    for payload in payloads:
        assert buf.write_binary(payload) == len(payload)
    buf.flush()
    views = buf.get_bytes()
    assert sum(len(v) for v in views) == sum(len(p) for p in payloads)
    assert b"".join(views) == b"".join(payloads)
    # payloads above 4 KiB were linked, not copied: the views point into the caller's objects
    linked = {id(v.obj) for v in views}
    assert {id(p) for p in payloads if len(p) > 4096} <= linked


@pytest.mark.parametrize("n", [0, -1, -2, -3, -4])
def test_invalid_sizes_give_empty_results(n: int) -> None:
    buf = tiny(128)
    assert len(buf.malloc(n)) == 0 and buf.malloc_len() == 0
    assert buf.write_string("") == 0
    assert buf.write_binary(b"") == 0
    buf.write_direct(b"", n)
    buf.append(None)
    if n == 0:
        buf.malloc_ack(n)
    else:
        with pytest.raises(LinkBufferError):
            buf.malloc_ack(n)
    buf.flush()
    assert buf.malloc_len() == 0 and len(buf) == 0
    assert len(buf.next(n)) == 0
    assert len(buf.peek(n)) == 0
    buf.skip(n)
    assert buf.read_string(n) == ""
    assert buf.read_binary(n) == b""
    assert len(buf.slice(n)) == 0
    buf.release()


# ------------------------------------------------------------------ multi-block behaviour


def test_malloc_takes_power_of_two_blocks_and_reads_span_them() -> None:
    cache = BufferCache(min_size=8, max_size=1 << 20)
    buf = LinkBuffer(cache)
    first = buf.malloc(15)
    first[:] = bytes(range(15))
    second = buf.malloc(7)  # does not fit in the 16-byte block: a new 8-byte block
    second[:] = bytes(range(15, 22))
    assert cache.stats().misses == 2
    assert len(buf) == 0
    buf.flush()
    assert len(buf) == 22

    head = buf.next(13)
    assert bytes(head) == bytes(range(13))
    assert head.obj is first.obj  # one block: a view, not a copy
    assert bytes(buf.peek(4)) == bytes([13, 14, 15, 16])
    assert bytes(buf.peek(3)) == bytes([13, 14, 15])
    assert bytes(buf.peek(5)) == bytes([13, 14, 15, 16, 17])
    assert bytes(buf.peek(6)) == bytes([13, 14, 15, 16, 17, 18])
    assert len(buf) == 9
    spanning = buf.next(8)
    assert bytes(spanning) == bytes(range(13, 21))
    assert spanning.obj is not first.obj and spanning.obj is not second.obj  # a copy
    buf.skip(1)
    assert len(buf) == 0


def test_cross_block_peek_reuses_one_scratch_buffer() -> None:
    buf = LinkBuffer()
    for i in range(100):
        buf.malloc(8192)[:] = bytes([i]) * 8192
    buf.flush()
    scratch = buf.peek(8193).obj
    for _ in range(1024):
        view = buf.peek(8193)
        assert view.obj is scratch
    assert bytes(view[-2:]) == b"\x00\x01"
    assert len(buf) == 100 * 8192


def test_readable_is_one_block_of_unread_bytes_without_a_copy() -> None:
    buf = tiny(8)
    assert bytes(buf.readable()) == b""
    for chunk in (b"abcdefgh", b"ijkl"):  # 8-byte blocks: two blocks
        buf.malloc(len(chunk))[:] = chunk
        buf.flush()
    first = buf.readable()
    assert bytes(first) == b"abcdefgh" and len(buf) == 12  # the first block only, not consumed
    buf.skip(3)
    assert bytes(buf.readable()) == b"defgh"
    buf.skip(5)  # the first block is spent: the next one is readable
    view = buf.readable()
    assert bytes(view) == b"ijkl"
    buf.release()
    assert bytes(view) == b"ijkl"  # views stay valid after release, as next()'s do
    buf.skip(4)
    assert bytes(buf.readable()) == b"" and len(buf) == 0


def test_readable_views_the_block_itself() -> None:
    buf = filled(b"0123456789", min_size=64)
    view = buf.readable()
    assert view.obj is buf.next(10).obj  # the same block, not a copy


def test_peek_scratch_grows_without_invalidating_earlier_views() -> None:
    buf = filled(bytes(range(64)))
    small = buf.peek(9)  # spans two 8-byte blocks
    big = buf.peek(40)
    assert bytes(small) == bytes(range(9))
    assert bytes(big) == bytes(range(40))


def test_index_byte_and_until_across_blocks() -> None:
    buf = filled(b"first line\nsecond\nrest")
    assert buf.index_byte(ord("\n")) == 10
    assert buf.index_byte(ord("\n"), skip=11) == 17
    assert buf.index_byte(ord("!")) == -1
    assert bytes(buf.until(ord("\n"))) == b"first line\n"
    assert bytes(buf.until(ord("\n"))) == b"second\n"
    with pytest.raises(NotEnoughDataError):
        buf.until(ord("\n"))
    assert bytes(buf) == b"rest"


def test_index_byte_sees_what_a_concurrent_writer_flushed() -> None:
    buf = LinkBuffer()
    flushed = threading.Semaphore(0)
    loops = 1000

    def writer() -> None:
        for _ in range(loops):
            message = buf.malloc(1002)
            message[:] = b"x" * 1002
            message[500] = message[1001] = ord("\n")
            buf.flush()
            flushed.release()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for i in range(loops):
            assert flushed.acquire(timeout=10)
            last = i * 1002
            assert buf.index_byte(ord("\n"), last) == 500 + last
            assert buf.index_byte(ord("\n"), 500 + last) == 500 + last
            assert buf.index_byte(ord("\n"), 501 + last) == 1001 + last
    finally:
        thread.join(timeout=10)
    assert not thread.is_alive()


# ------------------------------------------------------------------------------ slices


def test_slice_shares_blocks_until_both_release_them() -> None:
    cache = BufferCache(min_size=8, max_size=1 << 20)
    source = LinkBuffer(cache)
    booked = source.book(8192, 8192)
    booked[:] = bytes(i % 251 for i in range(8192))
    source.book_ack(8192)
    source.malloc(7)[:] = b"ABCDEFG"
    source.flush()
    del booked

    buf = LinkBuffer(cache)
    buf.write_buffer(source)
    buf.flush()
    assert len(buf) == 8192 + 7
    assert bytes(buf.next(5)) == bytes(range(5))

    part = buf.slice(4)
    assert part.readonly and len(part) == 4
    assert len(buf) == 8192 - 2

    returned = cache.stats().returned
    assert bytes(part.next(4)) == bytes(range(5, 9))
    part.release()
    part.close()
    assert cache.stats().returned == returned  # the parent still uses the 8 KiB block

    buf.skip(len(buf))
    buf.release()
    buf.close()
    assert cache.stats().returned > returned  # now nobody does


def test_slice_bytes_survive_parent_reuse_of_its_tail_block() -> None:
    buf = tiny()
    buf.write_byte(1)
    buf.flush()
    first = buf.slice(1)
    buf.write_byte(2)  # same tail block, next offset
    buf.flush()
    assert first.read_byte() == 1
    assert buf.read_byte() == 2


def test_slice_spanning_blocks_and_parent_release() -> None:
    data = bytes(range(50))
    buf = filled(data)
    buf.skip(3)
    part = buf.slice(30)
    assert len(part) == 30 and len(buf) == 17
    buf.skip(17)
    buf.release()
    for i in range(20):  # churn the cache so released blocks would be reused
        buf.malloc(8)[:] = bytes([200 + i]) * 8
    buf.flush()
    assert bytes(part) == data[3:33]
    assert part.read_binary(30) == data[3:33]


def test_slice_is_read_only() -> None:
    part = filled(b"hello").slice(5)
    for write in (
        lambda: part.malloc(1),
        lambda: part.write_binary(b"x"),
        lambda: part.write_string("x"),
        lambda: part.write_byte(1),
        lambda: part.write_direct(b"x", 0),
        lambda: part.write_buffer(LinkBuffer()),
        lambda: part.malloc_ack(0),
        lambda: part.flush(),
    ):
        with pytest.raises(ReadOnlyBufferError):
            write()
    assert bytes(part) == b"hello"


# ------------------------------------------------------------------------------ writer


def test_write_buffer_links_buffers_in_order_and_consumes_the_source() -> None:
    buf1, buf2, buf3 = LinkBuffer(), LinkBuffer(), LinkBuffer()
    buf2.malloc(1)[0] = 2
    buf2.flush()
    buf3.malloc(1)[0] = 3
    buf3.flush()
    buf1.write_buffer(buf2)
    buf1.append(buf3)
    assert len(buf1) == 0 and buf1.malloc_len() == 2  # readable only after flush
    buf1.flush()
    assert bytes(buf1) == b"\x02\x03"
    for used in (buf2, buf3):
        assert used.closed and len(used) == 0
        with pytest.raises(BufferClosedError):
            used.next(1)
        with pytest.raises(BufferClosedError):
            used.malloc(1)


def test_write_buffer_moves_partly_read_and_unflushed_bytes_after_pending_ones() -> None:
    source = filled(b"0123456789")
    source.skip(4)
    source.write_binary(b"pending")  # malloc'd in the source, not flushed
    target = tiny()
    target.write_binary(b"<")
    target.write_buffer(source)
    target.write_binary(b">")
    target.flush()
    assert bytes(target) == b"<456789pending>"


def test_append_rejects_other_writers_and_itself() -> None:
    buf = LinkBuffer()
    with pytest.raises(TypeError):
        buf.append(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(LinkBufferError):
        buf.append(buf)


def test_flush_is_idempotent() -> None:
    buf = LinkBuffer()
    head = buf.malloc(4)
    head[:] = b"\x01\x00\x02\x00"  # malloc does not zero: cached blocks hold old bytes
    buf.flush()
    buf.flush()
    assert bytes(buf) == b"\x01\x00\x02\x00"
    buf.skip(2)
    buf.flush()
    assert bytes(buf) == b"\x02\x00"
    buf.malloc(2)[:] = b"\x03\x00"
    buf.flush()
    assert bytes(buf) == b"\x02\x00\x03\x00"


def test_small_write_binary_copies_so_the_caller_may_reuse_its_buffer() -> None:
    source = bytearray(16)
    buf = tiny()
    buf.write_binary(source[:9])
    buf.flush()
    buf.write_binary(b"\x01")
    buf.malloc(1)[0] = 2
    buf.flush()
    assert source == bytearray(16)  # nothing was written through to the caller's memory
    source[:9] = b"X" * 9
    assert bytes(buf) == bytes(9) + b"\x01\x02"


def test_large_write_binary_links_without_copying() -> None:
    payload = bytearray(b"z" * 5000)
    buf = LinkBuffer()
    buf.write_binary(payload)
    buf.flush()
    (view,) = buf.get_bytes()
    assert view.obj is payload
    with pytest.raises(BufferError):
        payload.append(0)  # linked memory is pinned, so it cannot be resized under the buffer
    assert buf.read_binary(5000) == bytes(payload)


def test_write_binary_accepts_memoryviews_of_any_format() -> None:
    import array

    words = array.array("I", [1, 2, 3])
    buf = LinkBuffer()
    assert buf.write_binary(memoryview(words)) == 12
    buf.flush()
    assert bytes(buf) == words.tobytes()


def test_write_direct_splices_buffers_inside_the_malloced_region() -> None:
    buf = LinkBuffer(BufferCache(min_size=32, max_size=1 << 20))
    region = buf.malloc(32)
    region[0:2] = b"ab"
    buf.write_direct(b"cdef", 30)
    region[2:3] = b"g"
    buf.write_direct(b"hijkl", 29)
    region[3:4] = b"m"
    buf.write_direct(b"nopqrst", 28)
    region[4:5] = b"u"
    buf.write_direct(b"vwxyz", 27)
    region[5:] = b"abcdefghijklmnopqrstuvwxyza"
    buf.write_direct(b"abcdefghijklmnopqrstuvwxyz", 0)
    buf.flush()
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    assert bytes(buf) == alphabet + alphabet + b"a" + alphabet


@pytest.mark.parametrize("remain", [0, 1, 5, 6])
def test_write_direct_at_every_position_of_the_pending_bytes(remain: int) -> None:
    buf = LinkBuffer(BufferCache(min_size=8, max_size=1 << 20))
    buf.write_binary(b"old")
    buf.flush()
    buf.malloc(6)[:] = b"ABCDEF"  # shares the flushed block
    buf.write_direct(b"++", remain)
    buf.flush()
    at = 6 - remain
    assert bytes(buf) == b"old" + b"ABCDEF"[:at] + b"++" + b"ABCDEF"[at:]


def test_malloc_ack_keeps_the_first_bytes_including_spliced_ones() -> None:
    block = 7 * 1024
    buf = LinkBuffer()
    region = buf.malloc(4 + block)
    region[:4] = b"head"
    spliced = bytes(range(256)) * (block // 256)
    buf.write_direct(spliced, block)
    buf.malloc_ack(4 + block)  # drops the region's unused tail
    buf.flush()
    buf.malloc(4)[:] = b"tail"
    buf.flush()
    assert buf.read_binary(8 + block) == b"head" + spliced + b"tail"
    assert len(buf) == 0


def test_write_direct_then_malloc_ack_then_more_writes() -> None:
    # netpoll's origin node + data node + new node + normal node layout
    buf = LinkBuffer()
    region = buf.malloc(8192)
    region[:4096] = b"a" * 4096
    buf.write_direct(b"b" * 512, 8192 - 4096)
    region[4096:4112] = b"c" * 16
    buf.malloc_ack(4096 + 512 + 16)
    buf.flush()
    buf.malloc(4096)[:] = b"d" * 4096
    buf.flush()
    assert len(buf) == 4096 + 512 + 16 + 4096
    assert buf.read_binary(4096) == b"a" * 4096
    assert buf.read_binary(512) == b"b" * 512
    assert buf.read_binary(16) == b"c" * 16
    assert buf.read_binary(4096) == b"d" * 4096


def test_malloc_ack_rejects_more_than_was_malloced() -> None:
    buf = LinkBuffer()
    buf.malloc(3)
    with pytest.raises(LinkBufferError):
        buf.malloc_ack(4)


def test_reserved_bytes_can_be_back_patched_before_flush() -> None:
    buf = LinkBuffer()
    start = buf.malloc_len()
    prefix = buf.malloc(4)  # reserve the length
    buf.write_string("small header|")
    buf.write_binary(b"L" * 10_000)  # linked, not copied
    size = buf.malloc_len() - start - 4
    prefix[:] = size.to_bytes(4, "big")
    buf.flush()
    length = int.from_bytes(buf.peek(4), "big")
    assert length == 13 + 10_000
    frame = buf.next(4 + length)
    assert bytes(frame[4:17]) == b"small header|"


def test_writer_and_reader_methods_after_close_raise() -> None:
    buf = filled(b"data")
    buf.close()
    buf.close()  # idempotent
    assert buf.closed
    for call in (
        lambda: buf.malloc(1),
        lambda: buf.malloc_ack(0),
        lambda: buf.malloc_len(),
        lambda: buf.write_binary(b"x"),
        lambda: buf.write_string("x"),
        lambda: buf.write_byte(1),
        lambda: buf.write_direct(b"x", 0),
        lambda: buf.write_buffer(LinkBuffer()),
        lambda: buf.flush(),
        lambda: buf.next(1),
        lambda: buf.peek(1),
        lambda: buf.skip(1),
        lambda: buf.read_byte(),
        lambda: buf.read_binary(1),
        lambda: buf.slice(1),
        lambda: buf.until(0),
        lambda: buf.get_bytes(),
    ):
        with pytest.raises(BufferClosedError):
            call()
    assert len(buf) == 0
    buf.release()  # harmless


def test_copying_reads_survive_release_and_block_reuse() -> None:
    buf = filled(b"0123456789abcdef")
    text = buf.read_string(10)
    raw = buf.read_binary(6)
    buf.release()
    for _ in range(10):
        buf.malloc(8)[:] = b"########"
    buf.flush()
    assert (text, raw) == ("0123456789", b"abcdef")


def test_read_string_consumes_nothing_when_decoding_fails() -> None:
    buf = filled(b"\xff\xfeok")
    with pytest.raises(UnicodeDecodeError):
        buf.read_string(4)
    assert len(buf) == 4
    assert buf.read_string(4, encoding="latin-1") == "\xff\xfeok"


def test_views_stay_valid_after_release_because_viewed_blocks_are_not_recycled() -> None:
    cache = BufferCache(min_size=8, max_size=1 << 20)
    buf = LinkBuffer(cache)
    buf.malloc(8)[:] = b"AAAAAAAA"
    buf.malloc(8)[:] = b"BBBBBBBB"
    buf.flush()
    held = buf.next(8)
    buf.skip(8)
    buf.release()
    for _ in range(20):
        buf.malloc(8)[:] = b"CCCCCCCC"
        buf.flush()
        buf.skip(8)
        buf.release()
    assert bytes(held) == b"AAAAAAAA"
    assert cache.stats().dropped >= 1  # the viewed block went to the GC, not to the pool


def test_blocks_return_to_the_cache_over_many_cycles() -> None:
    cache = BufferCache()
    buf = LinkBuffer(cache)
    payload = bytes(range(256)) * 4  # 1 KiB: four messages per 4 KiB block
    for _ in range(100):  # warm up
        buf.write_binary(payload)
        buf.flush()
        assert buf.read_binary(len(payload)) == payload
        buf.release()
    warm = cache.stats()
    for i in range(10_000):
        buf.write_binary(payload)
        if i % 3 == 0:
            buf.write_binary(b"x" * 5000)  # linked, not pooled
        buf.flush()
        frame = buf.next(len(payload))
        assert frame == payload
        del frame
        if i % 3 == 0:
            buf.skip(5000)
        buf.release()
    after = cache.stats()
    assert after.misses == warm.misses  # every block came from the pool
    assert after.hits > warm.hits + 2000
    assert after.cached_blocks <= warm.cached_blocks + 2
    buf.close()


def test_book_and_get_bytes_feed_recv_into_and_sendmsg() -> None:
    left, right = socket.socketpair()
    try:
        outgoing = LinkBuffer()
        outgoing.write_string("hello ")
        outgoing.write_binary(b"w" * 6000)  # linked
        outgoing.write_string(" bye")
        outgoing.flush()
        total = len(outgoing)
        while len(outgoing):
            sent = left.sendmsg(outgoing.get_bytes(max_views=32))
            outgoing.skip(sent)
            outgoing.release()

        incoming = LinkBuffer()
        while len(incoming) < total:
            space = incoming.book(8192, 8192)
            received = right.recv_into(space)
            del space
            incoming.book_ack(received)
        assert incoming.read_binary(total) == b"hello " + b"w" * 6000 + b" bye"
    finally:
        left.close()
        right.close()


def test_book_ack_validates_its_argument() -> None:
    buf = LinkBuffer()
    with pytest.raises(LinkBufferError):
        buf.book_ack(1)
    buf.book(10, 4096)
    with pytest.raises(LinkBufferError):
        buf.book_ack(11)
    assert buf.book_ack(3) == 3


def test_one_reader_and_one_writer_thread_see_a_consistent_stream() -> None:
    buf = LinkBuffer(BufferCache(min_size=64, max_size=1 << 20))
    total = 300_000
    errors: list[BaseException] = []

    def expected(start: int, n: int) -> bytes:
        return bytes((start + i) % 251 for i in range(n))

    def writer() -> None:
        written, step = 0, 0
        try:
            while written < total:
                n = min(total - written, (step * 37) % 700 + 1)
                data = expected(written, n)
                kind = step % 3
                if kind == 0:
                    buf.malloc(n)[:] = data
                elif kind == 1:
                    buf.write_binary(data)
                else:
                    buf.write_binary(data * 1)  # a fresh bytes object, sometimes > 4 KiB linked
                written += n
                step += 1
                if step % 4 == 0 or written == total:
                    buf.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    read, step = 0, 0
    deadline = time.monotonic() + 60
    try:
        while read < total and time.monotonic() < deadline:
            available = len(buf)
            if available == 0:
                if not thread.is_alive() and len(buf) == 0:
                    break
                time.sleep(0)  # let the writer run
                continue
            n = min(available, (step * 53) % 900 + 1)
            kind = step % 4
            if kind == 0:
                got = bytes(buf.next(n))
            elif kind == 1:
                got = bytes(buf.peek(n))
                buf.skip(n)
            elif kind == 2:
                got = bytes(buf.slice(n))
            else:
                got = buf.read_binary(n)
            assert got == expected(read, n)
            read += n
            step += 1
            buf.release()
    finally:
        thread.join(timeout=30)
    assert not errors
    assert read == total and len(buf) == 0


def test_repr_and_context_manager() -> None:
    with LinkBuffer() as buf:
        buf.write_string("abc")
        buf.flush()
        assert "len=3" in repr(buf)
    assert buf.closed and "closed" in repr(buf)
