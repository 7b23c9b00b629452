"""A closed-loop load generator for a grpcio echo server: several processes of grpc.aio.

    python bench/grpc_load.py HOST:PORT --procs P --concurrency C --size N --seconds S \
        --pb-dir DIR

Each of P processes keeps C calls in flight on its own channel (P x C in total) and records
the latency of every call completed after the warm-up. Prints one JSON line like loadgen.c:
{"completed", "seconds", "qps", "p50_us", "p99_us", ...}.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def worker(target: str, concurrency: int, size: int, seconds: float, warmup: float) -> Any:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    latencies = array.array("d")
    request = echo_pb2.EchoRequest(message="hi", payload=b"x" * size)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        await stub.Echo(request)
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + seconds

        async def loop() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                reply = await stub.Echo(request)
                t1 = time.perf_counter()
                if len(reply.payload) != size:
                    raise RuntimeError("bad echo")
                if t0 >= measure_from:
                    latencies.append(t1 - t0)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies


def run_worker(args: argparse.Namespace) -> None:
    latencies = asyncio.run(
        worker(args.target, args.concurrency, args.size, args.seconds, args.warmup)
    )
    with open(args.out, "wb") as out:
        latencies.tofile(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--pb-dir", required=True)
    parser.add_argument("--out", help=argparse.SUPPRESS)  # set for worker processes
    args = parser.parse_args()
    sys.path.insert(0, args.pb_dir)
    if args.out:
        run_worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"w{i}.bin" for i in range(args.procs)]
        argv = [a for a in sys.argv[1:]]
        procs = [
            subprocess.Popen([sys.executable, __file__, *argv, "--out", str(out)]) for out in outs
        ]
        for proc in procs:
            if proc.wait() != 0:
                sys.exit("a load worker failed")
        latencies = array.array("d")
        for out in outs:
            with open(out, "rb") as f:
                latencies.frombytes(f.read())
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[int(p * (len(ordered) - 1))] * 1e6 if ordered else 0.0

    print(
        json.dumps(
            {
                "completed": len(ordered),
                "seconds": args.seconds,
                "qps": len(ordered) / args.seconds,
                "mb_per_s": len(ordered) * args.size / args.seconds / 1e6,
                "p50_us": pct(0.5),
                "p99_us": pct(0.99),
                "p999_us": pct(0.999),
                "max_us": ordered[-1] * 1e6 if ordered else 0.0,
                "errors": 0,
                "procs": args.procs,
                "cpus": len(os.sched_getaffinity(0)),
            }
        )
    )


if __name__ == "__main__":
    main()
