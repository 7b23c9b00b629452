"""LinkBuffer: netpoll's zero-copy linked buffer, in Python.

Theory of operation
-------------------
A LinkBuffer is a singly linked chain of nodes. A node is a window onto storage: a pooled
`bytearray` block (a "managed" node) or a caller's bytes-like object linked without copying (an
"unmanaged" node). Each node has four absolute offsets into its storage::

    off <= end <= malloc <= cap
    read   committed   malloc'd   writable limit (-1: nothing more may be written here)

Four pointers walk the chain, always in this order::

    head -> ... -> read -> ... -> flush -> ... -> write

- `head`..`read`: consumed nodes waiting for `release()` to give their blocks back.
- `read`: where the next read starts (`read.off`).
- `flush`: the last committed node; every node before it is fully committed (`end == malloc`).
- `write`: where `malloc` puts new bytes. Bytes between a node's `end` and `malloc` are written
  but not yet readable; `flush()` commits them.

Threads: one reader thread and one writer thread may use a buffer at once, as a connection does
(the poller writes the input buffer, the handler reads it). The reader only moves `head`/`read`
and node `off`s and increments `_consumed`; the writer only moves `flush`/`write`, node
`end`/`malloc`/`cap` and increments `_flushed`. `len()` is `_flushed - _consumed`, so no counter
is ever written by two threads. `flush()` raises node `end`s before `_flushed`, so a reader that
saw the length also sees the bytes. Never use two readers or two writers at once.

Memory: blocks come from a `BufferCache` and go back when the last node referring to them is
released (slices share blocks through a reference count). Nodes form no reference cycles, so
CPython frees a released node, and its view of the block, at once. Views returned by
`next`/`peek` are plain memoryviews; unlike netpoll's slices they stay valid after `release()`,
because the cache refuses a block while any view into it is alive (that block is then left to
the garbage collector).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

from .buffer_cache import BufferCache, default_cache
from .errors import BufferClosedError, LinkBufferError, NotEnoughDataError, ReadOnlyBufferError

__all__ = ["BINARY_INPLACE_THRESHOLD", "LinkBuffer"]

# write_binary copies payloads up to this size and links larger ones (netpoll's value).
BINARY_INPLACE_THRESHOLD = 4 * 1024
# flush() seals a tail node larger than this, so a big block is not kept alive as the write tail
# by a few trailing bytes (netpoll's "tail node must not be larger than 8KB").
_SEAL_ABOVE = 8 * 1024
# A peek scratch buffer larger than this is dropped at release() instead of kept for reuse.
_SCRATCH_KEEP = 64 * 1024

_EMPTY = memoryview(bytearray())  # writable, so `buf.malloc(0)[:] = b""` works
_REFS_LOCK = threading.Lock()


class _Block:
    """A pooled bytearray shared by the nodes (of one buffer and its slices) that view it."""

    __slots__ = ("buf", "cache", "refs", "view")

    def __init__(self, buf: bytearray, cache: BufferCache) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.cache = cache
        self.refs = 1


class _Node:
    __slots__ = ("block", "cap", "end", "malloc", "next", "off", "view")

    def __init__(
        self, view: memoryview, block: _Block | None, off: int, end: int, malloc: int, cap: int
    ) -> None:
        self.view = view
        self.block = block
        self.off = off
        self.end = end
        self.malloc = malloc
        self.cap = cap
        # The chain ends in None; typed as _Node because traversals only follow links that the
        # committed length guarantees to exist.
        self.next: _Node = None  # type: ignore[assignment]


def _empty_node() -> _Node:
    return _Node(_EMPTY, None, 0, 0, 0, -1)


# Every pointer of a closed buffer points here. Its offsets make every fast path fail
# (end and cap are -1), so closed-state checks live only on the slow paths.
_CLOSED = _Node(_EMPTY, None, 0, -1, 0, -1)
# The write pointer of a buffer whose writer side was sealed (`_seal_writes`): writer fast paths
# fail on it and the slow paths raise, while readers keep reading the real chain.
_SEALED = _Node(_EMPTY, None, 0, -1, 0, -1)


def _unref(blocks: Iterable[_Block]) -> None:
    """Drop one reference to each block; blocks nobody refers to go back to their cache.

    The caller must already have dropped its nodes. The block's own base view is deleted, not
    released: a thread still holding a node (a reader racing a close) keeps the memory alive
    and valid, and the cache's export probe then refuses the block.
    """
    free = []
    with _REFS_LOCK:
        for block in blocks:
            block.refs -= 1
            if block.refs == 0:
                free.append(block)
    for block in free:
        del block.view
        block.cache.put(block.buf)


class LinkBuffer:
    """A chain of pooled blocks with netpoll's Reader and Writer contracts.

    A raw LinkBuffer never blocks: reading more than `len(buf)` bytes raises
    `NotEnoughDataError`; a size <= 0 gives an empty result. Written bytes become readable only
    after `flush()`.
    """

    __slots__ = (
        "_book_node",
        "_book_start",
        "_cache",
        "_closed_why",
        "_consumed",
        "_flush",
        "_flushed",
        "_head",
        "_pending",
        "_read",
        "_readonly",
        "_scratch",
        "_write",
    )

    def __init__(self, cache: BufferCache | None = None) -> None:
        node = _empty_node()
        self._head = self._read = self._flush = self._write = node
        self._cache = cache if cache is not None else default_cache()
        self._flushed = 0  # bytes ever committed (writer-owned)
        self._consumed = 0  # bytes ever consumed (reader-owned)
        self._pending = 0  # malloc'd, not yet committed (writer-owned)
        self._readonly = False
        self._closed_why = ""
        self._scratch: bytearray | None = None
        self._book_node: _Node | None = None
        self._book_start = 0

    # ------------------------------------------------------------------ reader

    def __len__(self) -> int:
        n = self._flushed - self._consumed
        return n if n > 0 else 0

    def is_empty(self) -> bool:
        return len(self) == 0

    def next(self, n: int) -> memoryview:
        """Consume n bytes; a view into the block when they lie in one block, else a copy."""
        node = self._read
        off = node.off
        stop = off + n
        if off < stop <= node.end:
            node.off = stop
            self._consumed += n
            return node.view[off:stop]
        return self._next_slow(n)

    def peek(self, n: int) -> memoryview:
        """The next n bytes without consuming them.

        Across blocks the bytes are copied into one scratch buffer that the next cross-block
        peek overwrites, so memory stays flat however often you peek (netpoll's Peek-OOM fix).
        """
        node = self._read
        off = node.off
        stop = off + n
        if off < stop <= node.end:
            return node.view[off:stop]
        return self._peek_slow(n)

    def readable(self) -> memoryview:
        """The readable bytes that lie in one block, from the read position, without copying
        or consuming them: all `len(self)` bytes when they are in one block, else the first
        block's share; empty when nothing is readable. Consume with `skip`.

        For a reader that decodes a batch of small messages in one pass (rpcpoll's server):
        whatever crosses into the next block it reads with `next`, which copies only then.
        """
        node = self._read
        off = node.off
        end = node.end
        if off < end:
            return node.view[off:end]
        if self._flushed - self._consumed <= 0:
            return _EMPTY[0:0]
        while node.off >= node.end:  # spent nodes before the next readable one
            node = node.next
        return node.view[node.off : node.end]

    def skip(self, n: int) -> None:
        """Consume n bytes without looking at them."""
        node = self._read
        off = node.off
        stop = off + n
        if off < stop <= node.end:
            node.off = stop
            self._consumed += n
            return
        if self._check_read("skip", n):
            self._advance(n)

    def read_binary(self, n: int) -> bytes:
        """Consume n bytes as a fresh `bytes` copy (valid after `release`)."""
        node = self._read
        off = node.off
        stop = off + n
        if off < stop <= node.end:
            data = bytes(node.view[off:stop])
            node.off = stop
            self._consumed += n
            return data
        if not self._check_read("read_binary", n):
            return b""
        return self._gather(n, advance=True)

    def read_string(self, n: int, encoding: str = "utf-8") -> str:
        """Consume n bytes decoded as text; on a decoding error nothing is consumed."""
        if not self._check_read("read_string", n):
            return ""
        node = self._read
        off = node.off
        if off + n <= node.end:
            text = str(node.view[off : off + n], encoding)
        else:
            text = str(self._gather(n, advance=False), encoding)
        self._advance(n)
        return text

    def read_byte(self) -> int:
        """Consume one byte and return it."""
        node = self._read
        off = node.off
        if off < node.end:
            node.off = off + 1
            self._consumed += 1
            return node.view[off]
        self._check_read("read_byte", 1)
        return self._gather(1, advance=True)[0]

    def until(self, delim: int) -> memoryview:
        """Consume up to and including the first `delim` byte (as `next` would return it)."""
        index = self.index_byte(delim)
        if index < 0:
            raise NotEnoughDataError("until", -1, len(self))
        return self.next(index + 1)

    def index_byte(self, delim: int, skip: int = 0) -> int:
        """Offset of the first `delim` at or after `skip` readable bytes, or -1."""
        self._check_open()
        remaining = len(self)  # scan only what was committed when we started
        offset = 0
        node = self._read
        while remaining > 0:
            length = min(node.end - node.off, remaining)
            if length > 0:
                if skip < length:
                    found = _find(node, delim, node.off + skip, node.off + length)
                    if found >= 0:
                        return offset + found - node.off
                    skip = 0
                else:
                    skip -= length
                offset += length
                remaining -= length
            if remaining > 0:
                node = node.next
        return -1

    def slice(self, n: int) -> LinkBuffer:
        """Consume n bytes as a read-only LinkBuffer that shares their blocks, then `release()`.

        The shared blocks return to the cache only when both buffers have released them.
        """
        if not self._check_read("slice", n):
            return LinkBuffer._from_nodes([], 0, self._cache)
        nodes = []
        node = self._read
        remaining = n
        while True:
            take = min(node.end - node.off, remaining)
            if take > 0:
                start = node.off
                nodes.append(_Node(node.view, node.block, start, start + take, start + take, -1))
                node.off = start + take
                remaining -= take
                if remaining == 0:
                    break
            node = node.next
        self._read = node
        self._consumed += n
        with _REFS_LOCK:
            for piece in nodes:
                if piece.block is not None:
                    piece.block.refs += 1
        self.release()
        return LinkBuffer._from_nodes(nodes, n, self._cache)

    def release(self) -> None:
        """Give fully consumed blocks back to the cache (those no slice still shares).

        A block the reader has just emptied is released once a read has moved past it.
        """
        read = self._read
        if read is self._head:  # the per-frame case: nothing behind the read position
            return
        flush = self._flush
        while read.off >= read.end and read is not flush and read.next is not None:
            read = read.next
        self._read = read
        node = self._head
        blocks = []
        while node is not read:
            if node.block is not None:
                blocks.append(node.block)
            node = node.next
        self._head = read
        if self._scratch is not None and len(self._scratch) > _SCRATCH_KEEP:
            self._scratch = None
        _unref(blocks)

    def get_bytes(self, max_views: int | None = None) -> list[memoryview]:
        """Views of the readable bytes, in order, without consuming them (for `sendmsg`)."""
        self._check_open()
        views: list[memoryview] = []
        remaining = len(self)
        node = self._read
        while remaining > 0 and (max_views is None or len(views) < max_views):
            length = min(node.end - node.off, remaining)
            if length > 0:
                views.append(node.view[node.off : node.off + length])
                remaining -= length
            if remaining > 0:
                node = node.next
        return views

    def __bytes__(self) -> bytes:
        """A copy of every readable byte, without consuming them."""
        return b"".join(self.get_bytes())

    # ------------------------------------------------------------------ writer

    def malloc(self, n: int) -> memoryview:
        """Reserve n writable bytes at the end; they become readable at the next `flush()`.

        The view stays writable until then, so it can be filled after later writes: reserve a
        length prefix, write the payload, then back-patch the prefix (see `malloc_len`).
        """
        node = self._write
        start = node.malloc
        stop = start + n
        if start < stop <= node.cap:
            node.malloc = stop
            self._pending += n
            return node.view[start:stop]
        self._check_writable()
        if n <= 0:
            return _EMPTY
        node = self._grow(n)
        node.malloc = n
        self._pending += n
        return node.view[0:n]

    def malloc_len(self) -> int:
        """Bytes written since the last `flush()` (malloc'd, linked or spliced)."""
        self._check_open()
        return self._pending

    def malloc_ack(self, n: int) -> None:
        """Keep the first n bytes written since the last flush and discard the rest."""
        self._check_writable()
        if n < 0 or n > self._pending:
            raise LinkBufferError(f"malloc_ack({n}): {self._pending} bytes are malloc'd")
        node = self._flush
        remaining = n
        while True:
            pending = node.malloc - node.end
            if pending >= remaining or node.next is None:
                node.malloc = node.end + remaining
                break
            remaining -= pending
            node = node.next
        self._drop_after(node)
        self._write = node
        self._pending = n

    def write_binary(self, data: bytes | bytearray | memoryview) -> int:
        """Append `data`: copied if it is at most 4 KiB, otherwise linked without copying.

        A linked buffer must not be modified until the bytes have been read or released.
        """
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")
        n = len(data)
        if n <= BINARY_INPLACE_THRESHOLD:
            node = self._write
            start = node.malloc
            stop = start + n
            if start < stop <= node.cap:
                node.view[start:stop] = data
                node.malloc = stop
                self._pending += n
                return n
            if n <= 0:
                self._check_writable()
                return 0
            self.malloc(n)[:] = data
            return n
        self._check_writable()
        node = _Node(memoryview(data), None, 0, 0, n, -1)
        self._write.next = node
        self._write = node
        self._pending += n
        return n

    def write_string(self, text: str, encoding: str = "utf-8") -> int:
        """Append `text` encoded; returns the number of bytes written."""
        return self.write_binary(text.encode(encoding))

    def write_byte(self, value: int) -> None:
        node = self._write
        start = node.malloc
        if start < node.cap:
            node.view[start] = value
            node.malloc = start + 1
            self._pending += 1
            return
        self.malloc(1)[0] = value

    def write_direct(self, data: bytes | bytearray | memoryview, remain_cap: int) -> None:
        """Splice `data` (not copied) into the malloc'd bytes, before the last `remain_cap`.

        The usual pattern: malloc a region, fill its start, splice a big payload, keep filling
        the region after it. Do not mix with `write_binary`/`write_string` in between.
        """
        self._check_writable()
        view = memoryview(data).cast("B")
        n = len(view)
        if n == 0 or remain_cap < 0:
            return
        if remain_cap > self._pending:
            raise LinkBufferError(f"write_direct: remain_cap {remain_cap} > {self._pending}")
        before = self._pending - remain_cap  # pending bytes that go before the splice
        node = self._flush
        while node.malloc - node.end < before:
            before -= node.malloc - node.end
            node = node.next
        split = node.end + before
        spliced = _Node(view, None, 0, 0, n, -1)
        if split < node.malloc:
            rest = _Node(node.view, node.block, split, split, node.malloc, node.cap)
            if node.block is not None:
                with _REFS_LOCK:
                    node.block.refs += 1
            node.malloc = split
            node.cap = -1
            spliced.next = rest
            rest.next = node.next
        else:
            spliced.next = node.next
        node.next = spliced
        write = spliced
        while write.next is not None:
            write = write.next
        self._write = write
        self._pending += n

    def write_buffer(self, other: LinkBuffer | None) -> None:
        """Link every byte of `other` (readable and malloc'd) after this buffer's, no copy.

        The bytes become readable here at the next `flush()`. `other` is unusable afterwards.
        """
        if other is None:
            return
        if not isinstance(other, LinkBuffer):
            raise TypeError(f"write_buffer needs a LinkBuffer, got {type(other).__name__}")
        if other is self:
            raise LinkBufferError("cannot append a LinkBuffer to itself")
        self._check_writable()
        other._check_open()
        other.release()
        moved = len(other) + other._pending
        first, last = other._read, other._write
        node: _Node | None = first
        while node is not None:
            node.end = node.off  # its readable bytes become pending bytes of this buffer
            node = node.next
        other._head = other._read = other._flush = other._write = _CLOSED
        other._closed_why = "its bytes were appended to another LinkBuffer"
        other._flushed = other._consumed = other._pending = 0
        self._write.next = first
        self._write = last
        self._pending += moved

    def append(self, other: LinkBuffer | None) -> None:
        """netpoll's Append: the same as `write_buffer`."""
        self.write_buffer(other)

    def flush(self) -> None:
        """Make every written byte readable. Idempotent."""
        self._check_writable()
        if self._pending:
            self._commit(seal=True)

    # ------------------------------------------------- connection support (recv_into path)

    def book(self, book_size: int, max_size: int) -> memoryview:
        """Writable space for one `recv_into`: the tail's spare room, or a new max_size block.

        At most `book_size` bytes. Commit what was received with `book_ack`.
        """
        self._check_writable()
        node = self._write
        spare = node.cap - node.malloc
        if spare <= 0:
            node = self._grow(max_size)
            spare = node.cap
        start = node.malloc
        stop = start + min(spare, book_size)
        node.malloc = stop
        self._pending += stop - start
        self._book_node = node
        self._book_start = start
        return node.view[start:stop]

    def book_ack(self, n: int) -> int:
        """Commit the first n booked bytes (what recv_into returned); returns the new length."""
        node = self._book_node
        if node is None or node is not self._write:
            raise LinkBufferError("book_ack without a matching book")
        booked = node.malloc - self._book_start
        if not 0 <= n <= booked:
            raise LinkBufferError(f"book_ack({n}): {booked} bytes were booked")
        node.malloc -= booked - n
        self._pending -= booked - n
        self._book_node = None
        self._commit(seal=False)
        return len(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._read is _CLOSED

    def _seal_writes(self, why: str) -> None:
        """Make every later writer call raise `BufferClosedError(why)`; reads go on.

        For a connection closed while its poller may still be sending this buffer: the
        writer side stops at once, the blocks are released later by `close()`.
        """
        if self._write is not _CLOSED:
            self._closed_why = why
            self._write = _SEALED

    def close(self) -> None:
        """Release every block, readable or not. Every later call raises. Idempotent."""
        if self._read is _CLOSED:
            return
        blocks = []
        node: _Node | None = self._head
        while node is not None:
            if node.block is not None:
                blocks.append(node.block)
            node = node.next
        self._head = self._read = self._flush = self._write = _CLOSED
        if not self._closed_why:
            self._closed_why = "the LinkBuffer is closed"
        self._flushed = self._consumed = self._pending = 0
        self._scratch = None
        _unref(blocks)

    def __enter__(self) -> LinkBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<LinkBuffer closed>"
        kind = " read-only" if self._readonly else ""
        return f"<LinkBuffer{kind} len={len(self)} malloc_len={self._pending}>"

    # ------------------------------------------------------------------ internals

    @classmethod
    def _from_nodes(cls, nodes: list[_Node], length: int, cache: BufferCache) -> LinkBuffer:
        """A read-only buffer over already referenced nodes (what `slice` returns)."""
        buf = cls(cache)
        if nodes:
            for a, b in itertools.pairwise(nodes):
                a.next = b
            buf._head = buf._read = nodes[0]
            buf._flush = buf._write = nodes[-1]
        buf._flushed = length
        buf._readonly = True
        return buf

    def _check_open(self) -> None:
        if self._read is _CLOSED:
            raise BufferClosedError(self._closed_why)

    def _check_writable(self) -> None:
        write = self._write
        if write is _CLOSED or write is _SEALED:
            raise BufferClosedError(self._closed_why)
        if self._readonly:
            raise ReadOnlyBufferError("this LinkBuffer is a read-only slice")

    def _check_read(self, op: str, n: int) -> bool:
        """Validate a read of n bytes: False for n <= 0, raise if closed or short."""
        self._check_open()
        if n <= 0:
            return False
        available = len(self)
        if n > available:
            raise NotEnoughDataError(op, n, available)
        return True

    def _next_slow(self, n: int) -> memoryview:
        if not self._check_read("next", n):
            return _EMPTY
        node = self._read
        while node.off >= node.end:
            node = node.next
        self._read = node
        off = node.off
        if off + n <= node.end:
            node.off = off + n
            self._consumed += n
            return node.view[off : off + n]
        return memoryview(self._gather(n, advance=True))

    def _peek_slow(self, n: int) -> memoryview:
        if not self._check_read("peek", n):
            return _EMPTY
        node = self._read
        while node.off >= node.end:
            node = node.next
        self._read = node
        if node.off + n <= node.end:
            return node.view[node.off : node.off + n]
        scratch = self._scratch
        if scratch is None or len(scratch) < n:
            # Never resize in place: earlier peek views may still export the old buffer.
            scratch = self._scratch = bytearray(max(n, 2 * len(scratch or b"")))
        self._copy_out(scratch, n)
        return memoryview(scratch)[:n]

    def _gather(self, n: int, advance: bool) -> bytes:
        """Copy the next n readable bytes (n must be readable); consume them if `advance`."""
        views = []
        node = self._read
        remaining = n
        while True:
            take = min(node.end - node.off, remaining)
            if take > 0:
                views.append(node.view[node.off : node.off + take])
                remaining -= take
                if remaining == 0:
                    break
            node = node.next
        out = b"".join(views)  # one pass: no zero-fill of a bytearray before copying into it
        del views
        if advance:
            self._advance(n)
        return out

    def _copy_out(self, out: bytearray, n: int) -> None:
        """Copy the next n readable bytes (n must be readable) into `out`, not consuming."""
        pos = 0
        node = self._read
        while True:
            take = min(node.end - node.off, n - pos)
            if take > 0:
                out[pos : pos + take] = node.view[node.off : node.off + take]
                pos += take
            if pos == n:
                return
            node = node.next

    def _advance(self, n: int) -> None:
        """Consume n readable bytes (n must be readable)."""
        self._consumed += n
        node = self._read
        while True:
            take = min(node.end - node.off, n)
            node.off += take
            n -= take
            if n == 0:
                break
            node = node.next
        self._read = node

    def _grow(self, n: int) -> _Node:
        """Append a fresh managed node with room for at least n bytes; it becomes `write`."""
        block = _Block(self._cache.get(n), self._cache)
        node = _Node(block.view, block, 0, 0, 0, len(block.buf))
        self._write.next = node
        self._write = node
        return node

    def _commit(self, seal: bool) -> None:
        node = self._flush
        write = self._write
        delta = 0
        while True:
            pending = node.malloc - node.end
            if pending:
                node.end = node.malloc
                delta += pending
            if node is write:
                break
            node = node.next
        if seal and write.cap > _SEAL_ABOVE:
            write.cap = -1
        self._flush = write
        self._pending = 0
        self._flushed += delta  # last: a reader that sees the length also sees the bytes

    def _drop_after(self, node: _Node) -> None:
        """Unlink and release every node after `node` (uncommitted, never seen by a reader)."""
        blocks = []
        rest: _Node | None = node.next
        node.next = None  # type: ignore[assignment]
        while rest is not None:
            if rest.block is not None:
                blocks.append(rest.block)
            rest = rest.next
        _unref(blocks)


def _find(node: _Node, delim: int, start: int, stop: int) -> int:
    """Absolute index of `delim` in node storage[start:stop], or -1."""
    if node.block is not None:
        return node.block.buf.find(delim, start, stop)
    found = bytes(node.view[start:stop]).find(delim)
    return found + start if found >= 0 else -1
