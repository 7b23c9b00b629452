"""rpcpoll.transport's echo server against a bare epoll server and asyncio streams.

All servers run the same length-prefixed echo protocol (bench/echo_servers.py), one process
each, driven by the same C load generator (bench/loadgen.c, compiled here with gcc). On a
machine with 2+ CPUs the server is pinned to CPU 0 and the load generator to CPU 1.

Scenarios: 1 connection ping-pong (128 B), 128 requests in flight over 4 connections
(pipelined, 128 B), 1 MiB messages on 1 connection. Each (server, scenario) pair runs once per
round, rounds interleaved; the median round is reported.

Run: python bench/bench_transport.py [--seconds S] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
SERVERS = ("bare", "asyncio", "rpcpoll-poller", "rpcpoll-pool")


@dataclass(frozen=True)
class Scenario:
    name: str
    conns: int
    depth: int
    size: int


SCENARIOS = (
    Scenario("ping-pong", 1, 1, 128),
    Scenario("128 in flight", 4, 32, 128),
    Scenario("1 MiB", 1, 1, 1 << 20),
)


def build_loadgen() -> Path:
    source = HERE / "loadgen.c"
    binary = BUILD / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            sys.exit("bench_transport needs a C compiler (gcc or cc) for the load generator")
        subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def pin(cpu: int | None):  # type: ignore[no-untyped-def]
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_ready(command: list[str], cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints "READY <port>" once it listens; (process, "127.0.0.1:port")."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpu))
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        sys.exit(f"{' '.join(command[1:])} did not start: {line}")
    return proc, f"127.0.0.1:{line[1]}"


def start_server(kind: str, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    return start_ready([sys.executable, str(HERE / "echo_servers.py"), kind], cpu)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_once(loadgen: Path, kind: str, sc: Scenario, seconds: float, cpus: tuple) -> dict:
    proc, target = start_server(kind, cpus[0])
    try:
        out = subprocess.run(
            [str(loadgen), target, str(sc.conns), str(sc.depth), str(sc.size), str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            preexec_fn=pin(cpus[1]),
        )
    finally:
        stop_server(proc)
    if out.returncode != 0:
        sys.exit(f"loadgen failed against {kind} ({sc.name}): {out.stderr.strip()} {out.stdout}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    seconds, rounds = (1.0, 1) if args.quick else (args.seconds, args.rounds)
    servers = args.servers.split(",")
    ncpu = len(os.sched_getaffinity(0))
    cpus = (0, 1) if ncpu >= 2 else (None, None)
    loadgen = build_loadgen()
    print(
        f"{ncpu} CPUs; server on CPU {cpus[0]}, load generator on CPU {cpus[1]}; "
        f"{rounds} round(s) of {seconds:g} s; Python {sys.version.split()[0]}"
    )

    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(rounds):
        for sc in SCENARIOS:
            for kind in servers:
                results.setdefault((kind, sc.name), []).append(
                    run_once(loadgen, kind, sc, seconds, cpus)
                )

    def median(kind: str, sc: Scenario) -> dict:
        runs = results[(kind, sc.name)]
        return sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]

    for sc in SCENARIOS:
        print(f"\n{sc.name}: {sc.conns} conn x {sc.depth} in flight, {sc.size} B payload")
        print(
            f"  {'server':<16}{'QPS':>10}{'MB/s':>9}{'p50 us':>9}{'p99 us':>9}"
            f"{'QPS/bare':>10}{'p50/bare':>10}"
        )
        bare = median("bare", sc) if "bare" in servers else None
        for kind in servers:
            r = median(kind, sc)
            qr = r["qps"] / bare["qps"] if bare else float("nan")
            pr = r["p50_us"] / bare["p50_us"] if bare else float("nan")
            print(
                f"  {kind:<16}{r['qps']:>10.0f}{r['mb_per_s']:>9.1f}{r['p50_us']:>9.1f}"
                f"{r['p99_us']:>9.1f}{qr:>10.2f}{pr:>10.2f}"
            )

    if set(SERVERS) <= set(servers):
        pp, pipe, big = SCENARIOS
        m = median
        checks = [
            (
                "128 in flight, poller handlers >= 0.5x bare QPS",
                m("rpcpoll-poller", pipe)["qps"] / m("bare", pipe)["qps"],
                ">=",
                0.5,
            ),
            (
                "128 in flight, pool handlers > asyncio QPS",
                m("rpcpoll-pool", pipe)["qps"] / m("asyncio", pipe)["qps"],
                ">",
                1.0,
            ),
            (
                "ping-pong p50 (poller) <= 1.5x bare",
                m("rpcpoll-poller", pp)["p50_us"] / m("bare", pp)["p50_us"],
                "<=",
                1.5,
            ),
            (
                "ping-pong p50 (pool) <= 1.5x bare",
                m("rpcpoll-pool", pp)["p50_us"] / m("bare", pp)["p50_us"],
                "<=",
                1.5,
            ),
            (
                "1 MiB echo (poller) >= 0.5x bare MB/s",
                m("rpcpoll-poller", big)["mb_per_s"] / m("bare", big)["mb_per_s"],
                ">=",
                0.5,
            ),
            (
                "1 MiB echo (pool) >= 0.5x bare MB/s",
                m("rpcpoll-pool", big)["mb_per_s"] / m("bare", big)["mb_per_s"],
                ">=",
                0.5,
            ),
        ]
        print("\ntargets (ratio, verdict):")
        for label, ratio, op, bound in checks:
            ok = {">=": ratio >= bound, ">": ratio > bound, "<=": ratio <= bound}[op]
            print(f"  {label:<52} {ratio:6.2f}  {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
