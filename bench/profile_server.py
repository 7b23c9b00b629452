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
from rpcpoll.protocol.frame import FrameReader, write_reply  # noqa: E402
from rpcpoll.server.dispatch import Dispatcher  # noqa: E402
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
    dispatcher = Dispatcher()
    dispatcher.register(EchoHandler())
    reader_of = FrameReader()

    def fill() -> LinkBuffer:
        buf = LinkBuffer()
        buf.write_binary(data)
        buf.flush()
        return buf

    out = LinkBuffer()

    def drain() -> None:
        out.flush()
        out.skip(len(out))
        out.release()

    request = EchoRequest(message="hi", payload=b"x" * args.size)
    response = EchoResponse(message="hi", payload=b"x" * args.size)
    body = response.to_bytes()
    handler = EchoHandler()

    def stage(name: str) -> Callable[[], None]:
        def work() -> None:
            buf = fill()
            read = reader_of.read_raw
            while True:
                raw = read(buf)
                if raw is None:
                    break
                seq, flags, info, payload = raw
                if name == "frames":
                    continue
                if name == "full":
                    dispatcher.handle_raw(seq, flags, info, payload, out, None)
                    continue
                route = dispatcher.cached_route(info) or dispatcher._learn(info)[0]  # type: ignore[index]
                if name == "route":
                    continue
                req = route.decode(payload)
                if name == "decode":
                    continue
                ctx = CallContext(route.service_name, route.method_name, None, None)
                resp = route.call(req, ctx)
                if name == "handler":
                    continue
                reply = resp.to_bytes()
                if name == "encode":
                    continue
                write_reply(out, seq, reply, None, flags)
            buf.release()
            drain()

        return work

    print(f"{args.batch} frames of {len(frame)} B per batch; ns per request, best of 5")
    rows = []
    previous = 0.0
    for name, label in (
        ("frames", "fill the buffer, split frames (read_raw)"),
        ("route", "+ route from the cached header"),
        ("decode", "+ decode the request (msgspec)"),
        ("handler", "+ CallContext and the handler (builds the response)"),
        ("encode", "+ encode the response (_check + msgspec)"),
        ("write", "+ write the reply frame"),
        ("full", "the server's dispatch as it runs (handle_raw)"),
    ):
        total = per_request(stage(name), args.batch, args.number)
        step = total - previous if name != "full" else total
        rows.append((label, step, total))
        previous = total if name != "full" else previous
    for label, step, total in rows:
        print(f"  {label:<56}{step:>8.0f}{total:>9.0f}")

    # The same pieces in isolation.
    payload = memoryview(request.to_bytes())
    pieces = {
        "msgspec decode of the request": lambda: EchoRequest.from_bytes(payload),
        "EchoResponse(...) construction": lambda: EchoResponse(
            message=request.message, payload=request.payload
        ),
        "response.to_bytes()": response.to_bytes,
        "CallContext(...)": lambda: CallContext("echo.EchoService", "Echo", None, None),
        "handler.echo(request, context)": lambda: handler.echo(request, None),  # type: ignore[arg-type]
        "write_reply": lambda: (write_reply(out, 1, body), drain()),
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
