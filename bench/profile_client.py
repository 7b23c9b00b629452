"""Where the sync client spends its time per call, against a raw socket doing the same I/O.

`rpcpoll serve` runs on CPU 0, this process on CPU 1. Three measurements of one thread calling
one at a time (128 B echo, `timeout=1.0` as in bench_rpc.py):

1. a raw socket sending the frame the generated client sends and reading the reply (the I/O
   floor: two syscalls and the server's time);
2. the generated client (`EchoServiceClient.echo`), without a profiler;
3. the same calls under cProfile: the functions with the most own time, in µs per call.
   cProfile inflates Python-level calls (roughly 2x here), so read its column for shares,
   and the difference of 1 and 2 for the absolute cost of the framework.

Then the client's pieces timed alone, without sockets: building the request, writing its
frame (the cached header template), decoding the reply header and the response.

    python bench/profile_client.py [--seconds 3] [--top 20]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rpc import (  # noqa: E402
    CLIENT_TIMEOUT,
    capture_client_frame,
    raw_socket_client,
    start_rpcpoll,
    timed_calls,
)
from bench_transport import stop_server  # noqa: E402

from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceClient  # noqa: E402


def per_call_us(statement: object, number: int = 20_000) -> float:
    """Best of 5: microseconds per call of `statement` (a callable)."""
    timer = timeit.Timer(statement)  # type: ignore[arg-type]
    return min(timer.repeat(5, number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    server_cpu = None
    if len(os.sched_getaffinity(0)) >= 2:
        server_cpu = 0
        os.sched_setaffinity(0, {1})
    frame = capture_client_frame(128)
    proc, address = start_rpcpoll("auto", server_cpu)
    try:
        raw_call, raw_sock = raw_socket_client(address, frame)
        raw = timed_calls(raw_call, 1, args.seconds)
        raw_sock.close()
        client = EchoServiceClient(address, timeout=CLIENT_TIMEOUT)
        request = EchoRequest(message="hi", payload=b"x" * 128)
        framed = timed_calls(lambda: client.echo(request), 1, args.seconds)
        calls = int(framed["qps"] * args.seconds / 2)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            client.echo(request)
        profiler.disable()
        client.close()
    finally:
        stop_server(proc)

    raw_us, framed_us = 1e6 / raw["qps"], 1e6 / framed["qps"]
    print("one thread, one call at a time, 128 B echo (server on CPU 0, client on CPU 1)")
    for label, result in (("raw socket (the I/O floor)", raw), ("generated client", framed)):
        us = 1e6 / result["qps"]
        print(f"  {label:<34}{us:7.1f} µs per call  p50 {result['p50_us']:.1f} µs")
    print(f"  {'the client framework':<34}{framed_us - raw_us:7.1f} µs per call")

    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(filename).name}:{line}({name})" if line else name
        rows.append((tottime / calls * 1e6, ncalls / calls, where))
    rows.sort(reverse=True)
    total = sum(row[0] for row in rows)
    print(f"\nunder cProfile: {total:.1f} µs per call in all; own time per call, top {args.top}")
    print(f"  {'µs':>6} {'calls':>6}  function")
    for own, count, where in rows[: args.top]:
        print(f"  {own:6.2f} {count:6.1f}  {where}")

    from rpcpoll.client.longconn import reply_of
    from rpcpoll.protocol.frame import FIXED_HEADER, FIXED_SIZE, RequestTemplate, write_reply
    from rpcpoll.transport import LinkBuffer

    template = RequestTemplate("echo.EchoService", "Echo")
    payload = request.to_bytes()
    buf = LinkBuffer()

    def write_request() -> None:
        template.write(buf, 1, payload, 1000, None, 0)
        buf.flush()
        buf.skip(len(buf))
        buf.release()

    response = EchoResponse(message="hi", payload=b"x" * 128)
    out = LinkBuffer()
    write_reply(out, 1, response.to_bytes())
    out.flush()
    reply_frame = bytes(out.next(len(out)))
    _length, _magic, _flags, _seq, words = FIXED_HEADER.unpack_from(reply_frame)
    info = bytes(reply_frame[FIXED_SIZE : FIXED_SIZE + words * 4])
    body = memoryview(bytes(reply_frame[FIXED_SIZE + words * 4 :]))

    print("\nthe client's pieces alone (µs per call, best of 5):")
    pieces = {
        "EchoRequest(...)": lambda: EchoRequest(message="hi", payload=b"x" * 128),
        "request.to_bytes() (checks + msgspec)": request.to_bytes,
        "request frame: template, LinkBuffer, flush": write_request,
        "reply header parsed (reply_of, cached)": lambda: reply_of(info, body),
        "EchoResponse.from_bytes(payload view)": lambda: EchoResponse.from_bytes(body),
    }
    for label, work in pieces.items():
        print(f"  {label:<44}{per_call_us(work):6.2f}")


if __name__ == "__main__":
    main()
