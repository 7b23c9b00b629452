"""Decode 4-byte-length-prefixed frames from a LinkBuffer versus a bare bytearray.

Two measurements, each running both contestants in the same process, interleaved:

1. decode: the bytes are already buffered; time only the loop that, per frame, looks at the
   4-byte length (peek), takes the frame as a memoryview (next) and lets go of consumed memory
   (release; the bytearray's equivalent is one trim at the end).
2. stream: the bytes arrive in 64 KiB chunks, as from recv; after each chunk every complete
   frame is decoded. The bytearray appends and trims (`data += chunk`, `del data[:pos]`); the
   LinkBuffer copies each chunk into booked block space (what recv_into does) and releases.

Prints ns per frame for both and the ratio LinkBuffer / bytearray.
Run: python bench/bench_linkbuffer.py [--rounds N | --quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

from rpcpoll.transport import BufferCache, LinkBuffer

SIZES = (128, 1024, 64 * 1024)
STREAM_BYTES = 8 * 1024 * 1024  # per round: enough frames that per-call costs dominate
CHUNK = 64 * 1024  # bytes per simulated recv
BLOCK = 1024 * 1024  # block size booked for received bytes (a connection grows to its messages)


def make_stream(payload: int) -> tuple[bytes, int]:
    frames = max(16, STREAM_BYTES // (payload + 4))
    body = (bytes(range(256)) * (payload // 256 + 1))[:payload]
    return (payload.to_bytes(4, "big") + body) * frames, frames


# ----------------------------------------------------------------------------- decode only


def decode_bytearray(data: bytearray) -> int:
    view = memoryview(data)
    from_bytes = int.from_bytes
    pos = 0
    end = len(data)
    count = 0
    while end - pos >= 4:
        n = from_bytes(view[pos : pos + 4], "big")  # peek 4
        frame = view[pos : pos + 4 + n]  # next 4 + n
        pos += 4 + n
        count += len(frame) > 0
    del frame
    view.release()
    del data[:pos]  # release
    return count


def decode_linkbuffer(buf: LinkBuffer) -> int:
    from_bytes = int.from_bytes
    peek, next_, release = buf.peek, buf.next, buf.release
    count = 0
    available = len(buf)  # like the bytearray loop's `end`: read once per batch
    while available >= 4:
        n = from_bytes(peek(4), "big")
        frame = next_(4 + n)
        release()
        available -= 4 + n
        count += len(frame) > 0
    return count


def fill(buf: LinkBuffer, stream: bytes) -> None:
    view = memoryview(stream)
    pos = 0
    while pos < len(stream):
        space = buf.book(min(CHUNK, len(stream) - pos), BLOCK)
        k = len(space)
        space[:] = view[pos : pos + k]
        del space
        buf.book_ack(k)
        pos += k


# ----------------------------------------------------------------------------- streaming


def stream_bytearray(stream: bytes) -> int:
    data = bytearray()
    from_bytes = int.from_bytes
    source = memoryview(stream)
    count = 0
    for start in range(0, len(stream), CHUNK):
        data += source[start : start + CHUNK]
        view = memoryview(data)
        pos, end = 0, len(data)
        while end - pos >= 4:
            n = from_bytes(view[pos : pos + 4], "big")
            if end - pos < 4 + n:
                break
            frame = view[pos : pos + 4 + n]
            pos += 4 + n
            count += len(frame) > 0
            del frame
        view.release()
        del data[:pos]
    return count


def stream_linkbuffer(stream: bytes, cache: BufferCache) -> int:
    buf = LinkBuffer(cache)
    from_bytes = int.from_bytes
    peek, next_, release = buf.peek, buf.next, buf.release
    source = memoryview(stream)
    count = 0
    for start in range(0, len(stream), CHUNK):
        chunk = source[start : start + CHUNK]
        while chunk:
            space = buf.book(len(chunk), BLOCK)
            k = len(space)
            space[:] = chunk[:k]
            del space
            buf.book_ack(k)
            chunk = chunk[k:]
        available = len(buf)
        while available >= 4:
            n = from_bytes(peek(4), "big")
            if available < 4 + n:
                break
            frame = next_(4 + n)
            release()
            available -= 4 + n
            count += len(frame) > 0
            del frame
    buf.close()
    return count


# ----------------------------------------------------------------------------- driver


def timed(fn: Callable[[], int], expected: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        got = fn()
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    assert got == expected, (got, expected)
    return elapsed / expected * 1e9


def measure(payload: int, rounds: int) -> tuple[float, float, float, float]:
    stream, frames = make_stream(payload)
    cache = BufferCache()
    dec_ba, dec_lb, str_ba, str_lb = [], [], [], []
    for _ in range(rounds):
        data = bytearray(stream)
        buf = LinkBuffer(cache)
        fill(buf, stream)
        dec_ba.append(timed(partial(decode_bytearray, data), frames))
        dec_lb.append(timed(partial(decode_linkbuffer, buf), frames))
        buf.close()
        str_ba.append(timed(partial(stream_bytearray, stream), frames))
        str_lb.append(timed(partial(stream_linkbuffer, stream, cache), frames))
    med = statistics.median
    return med(dec_ba), med(dec_lb), med(str_ba), med(str_lb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"LinkBuffer vs bytearray, median of {rounds} rounds, {os.cpu_count()} CPUs")
    columns = f" {'bytearray':>9} {'LinkBuf':>8} {'ratio':>6} |"
    print(f"{'':>7} | {'decode (ns/frame)':^25}| {'stream (ns/frame)':^25}|")
    print(f"{'frame':>7} |" + columns + columns)
    for payload in SIZES:
        dba, dlb, sba, slb = measure(payload, rounds)
        print(
            f"{payload:>7} | {dba:>9.0f} {dlb:>8.0f} {dlb / dba:>6.2f} |"
            f" {sba:>9.0f} {slb:>8.0f} {slb / sba:>6.2f} |"
        )
    print("ratio = LinkBuffer / bytearray; lower is better; the target is <= 1.5")


if __name__ == "__main__":
    main()
