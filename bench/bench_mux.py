"""Multiplexed connections against the plain pool, in one run.

One rpcpoll echo server process (pinned to CPU 0 on a 2+ CPU machine; `--mode auto`, the
default, or pool or poller) is called from one client process
(pinned to CPU 1) by N threads, each making blocking calls back to back, so N calls are in
flight:
- "pool": the default client, one pooled connection per calling thread;
- "mux2": `mux=2`, every thread's calls over 2 multiplexed connections.

The generated client is synchronous, so a thread has one call in flight: 128 calls in flight
take 128 threads. Both 16 and 128 threads are measured.

Run: python bench/bench_mux.py [--seconds S] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rpc import calls_per_second, start_server  # noqa: E402
from bench_transport import stop_server  # noqa: E402

THREADS = (16, 128)
CLIENTS = {"pool": {}, "mux2": {"mux": 2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=128, help="payload bytes")
    parser.add_argument("--mode", default="auto", choices=("auto", "pool", "poller"))
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    server_cpu, client_cpu = (0, 1) if cpus >= 2 else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    kind = f"rpcpoll-{args.mode}"
    print(f"{cpus} CPUs; server ({kind}) on CPU {server_cpu}, client on CPU {client_cpu}")
    print(f"payload {args.size} B, {args.seconds:.0f} s per measurement\n")
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    proc, address = start_server(kind, HERE, server_cpu)
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for threads in THREADS:
            for name, options in CLIENTS.items():
                client: Any = EchoServiceClient(address, timeout=10, **options)
                request = EchoRequest(message="hi", payload=b"x" * args.size)
                try:
                    results[name, threads] = calls_per_second(
                        partial(client.echo, request), threads, args.seconds
                    )
                finally:
                    client.close()
    finally:
        stop_server(proc)
    print(f"{'threads':>7} {'client':>6} {'QPS':>9} {'p50 µs':>8} {'p99 µs':>8}")
    for (name, threads), row in results.items():
        print(
            f"{threads:>7} {name:>6} {row['qps']:>9.0f} {row['p50_us']:>8.0f} {row['p99_us']:>8.0f}"
        )
    print()
    for threads in THREADS:
        pool, mux = results["pool", threads], results["mux2", threads]
        print(
            f"{threads} threads: mux2/pool QPS {mux['qps'] / pool['qps']:.2f}x,"
            f" p99 {mux['p99_us'] / pool['p99_us']:.2f}x"
        )


if __name__ == "__main__":
    main()
