"""Where a server spends its time per request, stage by stage, without sockets.

A batch of request frames captured from the generated client (`timeout=1.0`, so the header
carries a deadline) sits in a LinkBuffer, as `recv_into` leaves it; the server's own code then
runs over it, once per stage added, and the differences give the cost of each stage in
nanoseconds per request. The socket work (recv, sendmsg, epoll) is what bench_rpc.py adds on
top. The same is done for the bare epoll+msgpack loop's per-frame Python.

    python bench/profile_server.py [--batch 32] [--size 128] [--number 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rpc import capture_client_frame, with_seq  # noqa: E402

from rpcpoll.examples.echo import EchoHandler  # noqa: E402
from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse  # noqa: E402
from rpcpoll.protocol.frame import FIXED_HEADER, FIXED_SIZE, MAGIC, REPLY_HEAD  # noqa: E402
from rpcpoll.server.server import Server, _ConnState  # noqa: E402
from rpcpoll.service import CallContext  # noqa: E402
from rpcpoll.transport import LinkBuffer  # noqa: E402


def per_request(batch_work: Callable[[], None], batch: int, number: int) -> float:
    """Best of 5 runs: nanoseconds per request of `batch_work` over a batch of `batch`."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(number):
            batch_work()
        best = min(best, time.perf_counter() - started)
    return best / number / batch * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="frames per read batch")
    parser.add_argument("--size", type=int, default=128, help="payload bytes")
    parser.add_argument("--number", type=int, default=2000, help="batches per timing run")
    args = parser.parse_args()
    frame = capture_client_frame(args.size)
    data = b"".join(with_seq(frame, seq) for seq in range(1, args.batch + 1))
    server = Server("127.0.0.1:0", EchoHandler(), mode="poller")
    dispatcher = server.dispatcher
    state = _ConnState()
    unpack = FIXED_HEADER.unpack_from

    def fill() -> LinkBuffer:
        buf = LinkBuffer()
        buf.write_binary(data)
        buf.flush()
        return buf

    request = EchoRequest(message="hi", payload=b"x" * args.size)
    response = EchoResponse(message="hi", payload=b"x" * args.size)
    handler = EchoHandler()
    fill().readable()  # warm the header cache
    dispatcher._learn(bytes(memoryview(frame)[FIXED_SIZE : FIXED_SIZE + 4 * frame[13]]))

    def stage(name: str) -> Callable[[], None]:
        def work() -> None:
            buf = fill()
            view = buf.readable()
            out = bytearray()
            now = time.monotonic()
            if name == "full":
                buf.skip(server._serve_frames(view, state, None, out, None, now))  # type: ignore[arg-type]
                buf.release()
                return
            size, pos = len(view), 0
            while size - pos >= FIXED_SIZE:
                length, _magic, flags, seq, words = unpack(view, pos)
                end = pos + 4 + length
                body = pos + FIXED_SIZE + (words << 2)
                info = bytes(view[pos + FIXED_SIZE : body])
                payload = view[body:end]
                pos = end
                if name == "frames":
                    continue
                route, _timeout_ms, metadata = dispatcher.by_header[info]
                if name == "route":
                    continue
                req = route.decode(payload)
                if name == "decode":
                    continue
                ctx = CallContext(route.service_name, route.method_name, metadata, now + 1.0)
                resp = route.call(req, ctx)
                if name == "handler":
                    continue
                start = len(out)
                out += REPLY_HEAD
                resp.encode_into(out, -1)
                FIXED_HEADER.pack_into(out, start, len(out) - start - 4, MAGIC, flags, seq, 1)
            buf.skip(pos)
            buf.release()

        return work

    print(f"{args.batch} frames of {len(frame)} B per batch; ns per request, best of 5")
    rows = []
    previous = 0.0
    for name, label in (
        ("frames", "fill a LinkBuffer, split the frames"),
        ("route", "+ route from the cached header"),
        ("decode", "+ decode the request (msgspec)"),
        ("handler", "+ CallContext and the handler (builds the response)"),
        ("encode", "+ reply header and encode_into (_check + msgspec)"),
        ("full", "the server's frame loop as it runs (_serve_frames)"),
    ):
        total = per_request(stage(name), args.batch, args.number)
        step = total - previous if name != "full" else total
        rows.append((label, step, total))
        previous = total if name != "full" else previous
    for label, step, total in rows:
        print(f"  {label:<56}{step:>8.0f}{total:>9.0f}")

    # The same pieces in isolation.
    payload = memoryview(request.to_bytes())
    scratch = bytearray()
    pieces = {
        "EchoRequest.from_bytes(memoryview)": lambda: EchoRequest.from_bytes(payload),
        "EchoResponse(...) construction": lambda: EchoResponse(
            message=request.message, payload=request.payload
        ),
        "response.to_bytes()": response.to_bytes,
        "response.encode_into(bytearray, -1)": lambda: (
            response.encode_into(scratch, -1),
            scratch.clear(),
        ),
        "CallContext(...)": lambda: CallContext("echo.EchoService", "Echo"),
        "handler.echo(request, context)": lambda: handler.echo(request, None),  # type: ignore[arg-type]
    }
    print("\npieces, ns per call:")
    for label, work in pieces.items():
        print(f"  {label:<56}{per_request(work, 1, args.number * 10):>8.0f}")

    import msgpack

    bare = msgpack.packb({1: "hi", 2: b"x" * args.size})
    bare_frames = b"".join(len(bare).to_bytes(4, "big") + bare for _ in range(args.batch))
    unpackb, packb = msgpack.unpackb, msgpack.packb

    def bare_batch() -> None:
        inbuf = bytearray(bare_frames)
        pos, end, replies = 0, len(inbuf), []
        while end - pos >= 4:
            n = int.from_bytes(inbuf[pos : pos + 4], "big")
            if end - pos < 4 + n:
                break
            req = unpackb(inbuf[pos + 4 : pos + 4 + n], strict_map_key=False)
            reply = packb({1: req.get(1, ""), 2: req.get(2, b"")})
            replies.append(len(reply).to_bytes(4, "big"))
            replies.append(reply)
            pos += 4 + n
        del inbuf[:pos]
        b"".join(replies)

    print(
        f"\nbare epoll+msgpack loop, its per-frame Python: "
        f"{per_request(bare_batch, args.batch, args.number):.0f} ns per request"
    )


if __name__ == "__main__":
    main()
