"""A hypothesis state machine: random LinkBuffer operations checked against a plain bytes model.

The model is two byte strings: `readable` (flushed, unread) and `pending` (written since the last
flush). Every rule applies the same operation to both and compares the bytes it returns. Views
returned by `next` are kept and re-checked at every step: they must never change, even after
`release()` and block reuse.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from rpcpoll.transport import BufferCache, LinkBuffer, NotEnoughDataError

# A small alphabet half of the time, so that until()/index_byte() find their delimiters often.
small_bytes = st.one_of(
    st.binary(min_size=0, max_size=40),
    st.lists(st.sampled_from(b"ab\n\x00"), max_size=40).map(bytes),
)
# Where a splice or an ack lands: the exact edges are where off-by-one errors live.
fractions = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(min_value=0, max_value=1))
# Above 4 KiB write_binary links instead of copying; keep such payloads rare.
any_bytes = st.one_of(
    small_bytes, small_bytes, small_bytes, st.binary(min_size=4097, max_size=4200)
)


class LinkBufferMachine(RuleBasedStateMachine):
    slices = Bundle("slices")

    def __init__(self) -> None:
        super().__init__()
        self.cache = BufferCache(min_size=8, max_size=1 << 16)
        self.buf = LinkBuffer(self.cache)
        self.readable = bytearray()
        self.pending = bytearray()
        self.held: list[tuple[memoryview, bytes]] = []
        # malloc'd views not yet flushed, with their offset in `pending`
        self.reserved: list[tuple[memoryview, int]] = []

    # ----------------------------------------------------------------- writer rules

    @rule(data=small_bytes)
    def malloc(self, data: bytes) -> None:
        view = self.buf.malloc(len(data))
        assert len(view) == len(data)
        view[:] = data
        if data:
            self.reserved.append((view, len(self.pending)))
        self.pending += data

    @rule(index=st.integers(min_value=0), data=st.data())
    def back_patch_reserved(self, index: int, data: st.DataObject) -> None:
        if not self.reserved:
            return
        view, offset = self.reserved[index % len(self.reserved)]
        new = data.draw(st.binary(min_size=len(view), max_size=len(view)))
        view[:] = new
        self.pending[offset : offset + len(view)] = new

    @rule(data=any_bytes)
    def write_binary(self, data: bytes) -> None:
        assert self.buf.write_binary(data) == len(data)
        self.pending += data

    @rule(value=st.integers(min_value=0, max_value=255))
    def write_byte(self, value: int) -> None:
        self.buf.write_byte(value)
        self.pending.append(value)

    @rule(text=st.text(max_size=10))
    def write_string(self, text: str) -> None:
        encoded = text.encode()
        assert self.buf.write_string(text) == len(encoded)
        self.pending += encoded

    @rule(data=any_bytes, fraction=fractions)
    def write_direct(self, data: bytes, fraction: float) -> None:
        remain = int(len(self.pending) * fraction)
        at = len(self.pending) - remain
        self.buf.write_direct(data, remain)
        if not data:
            return
        self.pending[at:at] = data
        self.reserved = [(v, o + len(data) if o >= at else o) for v, o in self.reserved]
        # a reserved view that the splice cut in two is no longer one contiguous region
        self.reserved = [(v, o) for v, o in self.reserved if not o < at < o + len(v)]

    @rule(fraction=fractions)
    def malloc_ack(self, fraction: float) -> None:
        keep = int(len(self.pending) * fraction)
        self.buf.malloc_ack(keep)
        del self.pending[keep:]
        self.reserved = [(v, o) for v, o in self.reserved if o + len(v) <= keep]

    @rule()
    def flush(self) -> None:
        self.buf.flush()
        self.readable += self.pending
        self.pending.clear()
        self.reserved.clear()

    @rule(data=small_bytes, extra=st.integers(min_value=0, max_value=20))
    def book_and_ack(self, data: bytes, extra: int) -> None:
        space = self.buf.book(len(data) + extra, 64)
        n = min(len(space), len(data))
        space[:n] = data[:n]
        del space
        assert self.buf.book_ack(n) == len(self.readable) + len(self.pending) + n
        self.readable += self.pending + data[:n]
        self.pending.clear()
        self.reserved.clear()

    @rule(flushed=small_bytes, skipped=st.integers(0, 40), unflushed=small_bytes)
    def write_buffer(self, flushed: bytes, skipped: int, unflushed: bytes) -> None:
        other = LinkBuffer(self.cache)
        other.write_binary(flushed)
        other.flush()
        skipped = min(skipped, len(flushed))
        other.skip(skipped)
        other.write_binary(unflushed)
        self.buf.write_buffer(other)
        assert other.closed
        self.pending += flushed[skipped:] + unflushed

    # ----------------------------------------------------------------- reader rules

    @rule(n=st.integers(min_value=-2, max_value=60))
    def next(self, n: int) -> None:
        if n > len(self.readable):
            self._expect_short(lambda: self.buf.next(n))
            return
        view = self.buf.next(n)
        expected = self._consume(n)
        assert bytes(view) == expected
        if expected:
            self.held = [*self.held[-15:], (view, expected)]

    @rule(n=st.integers(min_value=-2, max_value=60))
    def peek(self, n: int) -> None:
        if n > len(self.readable):
            self._expect_short(lambda: self.buf.peek(n))
            return
        assert bytes(self.buf.peek(n)) == bytes(self.readable[: max(n, 0)])

    @rule(n=st.integers(min_value=-2, max_value=60))
    def skip(self, n: int) -> None:
        if n > len(self.readable):
            self._expect_short(lambda: self.buf.skip(n))
            return
        self.buf.skip(n)
        self._consume(n)

    @rule(n=st.integers(min_value=-2, max_value=60))
    def read_binary(self, n: int) -> None:
        if n > len(self.readable):
            self._expect_short(lambda: self.buf.read_binary(n))
            return
        assert self.buf.read_binary(n) == self._consume(n)

    @rule(n=st.integers(min_value=-2, max_value=60))
    def read_string(self, n: int) -> None:
        if n > len(self.readable):
            self._expect_short(lambda: self.buf.read_string(n))
            return
        assert self.buf.read_string(n, "latin-1") == self._consume(n).decode("latin-1")

    @rule()
    def read_byte(self) -> None:
        if not self.readable:
            self._expect_short(self.buf.read_byte)
            return
        assert self.buf.read_byte() == self._consume(1)[0]

    @rule(delim=st.sampled_from(b"ab\n\xff"), skip=st.integers(0, 50))
    def index_byte(self, delim: int, skip: int) -> None:
        expected = self.readable.find(bytes([delim]), skip)
        assert self.buf.index_byte(delim, skip) == expected

    @rule(delim=st.sampled_from(b"ab\n\xff"))
    def until(self, delim: int) -> None:
        at = self.readable.find(bytes([delim]))
        if at < 0:
            self._expect_short(lambda: self.buf.until(delim))
            return
        assert bytes(self.buf.until(delim)) == self._consume(at + 1)

    @rule(target=slices, n=st.integers(min_value=0, max_value=60))
    def slice(self, n: int) -> tuple[LinkBuffer, bytearray]:
        n = min(n, len(self.readable))
        part = self.buf.slice(n)
        expected = bytearray(self._consume(n))
        assert len(part) == n and part.readonly
        return part, expected

    @rule(item=slices, n=st.integers(min_value=0, max_value=20))
    def read_slice(self, item: tuple[LinkBuffer, bytearray], n: int) -> None:
        part, expected = item
        n = min(n, len(expected))
        assert bytes(part.next(n)) == bytes(expected[:n])
        del expected[:n]
        part.release()
        assert bytes(part) == bytes(expected)

    @rule(item=consumes(slices))
    def close_slice(self, item: tuple[LinkBuffer, bytearray]) -> None:
        part, expected = item
        assert bytes(part) == bytes(expected)
        part.close()

    @rule()
    def release(self) -> None:
        self.buf.release()

    @precondition(lambda self: len(self.readable) > 0)
    @rule()
    def get_bytes(self) -> None:
        assert b"".join(self.buf.get_bytes()) == bytes(self.readable)

    # ----------------------------------------------------------------- checks

    @invariant()
    def lengths_match(self) -> None:
        assert len(self.buf) == len(self.readable)
        assert self.buf.malloc_len() == len(self.pending)

    @invariant()
    def held_views_never_change(self) -> None:
        for view, expected in self.held:
            assert bytes(view) == expected

    def teardown(self) -> None:
        assert bytes(self.buf) == bytes(self.readable)
        self.buf.close()

    # ----------------------------------------------------------------- helpers

    def _consume(self, n: int) -> bytes:
        n = max(n, 0)
        taken = bytes(self.readable[:n])
        del self.readable[:n]
        return taken

    def _expect_short(self, call: object) -> None:
        before = len(self.buf)
        try:
            call()  # type: ignore[operator]
        except NotEnoughDataError:
            pass
        else:
            raise AssertionError("a read beyond the readable bytes did not raise")
        assert len(self.buf) == before


LinkBufferMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestLinkBufferModel = LinkBufferMachine.TestCase
