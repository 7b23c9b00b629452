"""rpcpoll's echo service against grpcio's and a hand-written asyncio server, in one run.

Server side: each server runs alone in its own process (pinned to CPU 0 on a 2+ CPU machine)
under a load generator on the other CPU:
- rpcpoll (in each server mode: auto, the default; pool; poller) and the
  hand-written asyncio Protocol + msgpack server are driven by bench/loadgen.c, a C program
  that replays a pre-encoded request frame: 1 call in flight on 1 connection, then 128 in
  flight as 4 connections x 32 pipelined calls;
- grpcio (sync server with a 16-thread pool, and grpc.aio) is driven by bench/grpc_load.py,
  grpc.aio clients in 1 process (1 in flight) or 2 processes x 64 calls (128 in flight). A
  Python load generator costs more per call than the C one; the latency table below therefore
  also measures both stacks from their own generated Python clients.

Client side: the generated rpcpoll client and grpcio's generated stub, each calling its own
server (rpcpoll's in each mode; grpc.aio) from 1 and from 8 threads of this process, which is
pinned to the load generators' CPU.

Run: python bench/bench_rpc.py [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_transport import build_loadgen, pin, start_ready, stop_server  # noqa: E402

SIZES = (128, 1024)
RPCPOLL = ("rpcpoll-auto", "rpcpoll-pool", "rpcpoll-poller")
GRPC = ("grpc-sync", "grpc-aio")
ALL = (*RPCPOLL, *GRPC, "asyncio-msgpack")
# The client benchmark calls each stack's own server: rpcpoll's in both modes, and grpc.aio.
CLIENT_SERVERS = ("rpcpoll-auto", "rpcpoll-pool", "rpcpoll-poller", "grpc-aio")
ADDRESS = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")


# --------------------------------------------------------------------------- set-up


def compile_grpc(out: Path) -> None:
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'idl'}"]
    outputs = [f"--python_out={out}", f"--grpc_python_out={out}"]
    subprocess.run([*protoc, *outputs, str(REPO / "idl" / "echo.proto")], check=True)


def frame_files(tmp: Path, size: int) -> dict[str, tuple[Path, Path]]:
    """Request and expected-reply bytes for the C load generator, per protocol."""
    import msgpack

    from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse
    from rpcpoll.protocol.frame import RequestTemplate, write_reply
    from rpcpoll.transport import LinkBuffer

    def dump(name: str, data: bytes) -> Path:
        path = tmp / f"{name}-{size}.bin"
        path.write_bytes(data)
        return path

    request = EchoRequest(message="hi", payload=b"x" * size)
    buf = LinkBuffer()
    RequestTemplate("echo.EchoService", "Echo").write(buf, 1, request.to_bytes())
    buf.flush()
    tt_request = bytes(buf)
    buf = LinkBuffer()
    write_reply(buf, 1, EchoResponse(message="hi", payload=b"x" * size).to_bytes())
    buf.flush()
    tt_reply = bytes(buf)
    body = msgpack.packb({1: "hi", 2: b"x" * size})
    plain = len(body).to_bytes(4, "big") + body
    return {
        "ttheader": (dump("tt-req", tt_request), dump("tt-rep", tt_reply)),
        "msgpack": (dump("mp", plain), dump("mp", plain)),
    }


def start_server(kind: str, pb_dir: Path, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    if kind in RPCPOLL:
        command = [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0"]
        command += ["--mode", kind.removeprefix("rpcpoll-")]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=pin(cpu))
        assert proc.stderr is not None
        for _ in range(50):
            match = ADDRESS.search(proc.stderr.readline())
            if match:
                threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain logs
                return proc, match["address"]
        proc.kill()
        sys.exit(f"{kind} did not start")
    command = [sys.executable, str(HERE / "rpc_servers.py"), kind, "--pb-dir", str(pb_dir)]
    return start_ready(command, cpu)


# --------------------------------------------------------------------------- server side


def load(
    kind: str,
    target: str,
    inflight: int,
    size: int,
    seconds: float,
    files: dict[str, tuple[Path, Path]],
    pb_dir: Path,
    loadgen: Path,
    cpu: int | None,
) -> dict[str, Any]:
    if kind in GRPC:
        procs, concurrency = (1, 1) if inflight == 1 else (2, inflight // 2)
        command = [sys.executable, str(HERE / "grpc_load.py"), target, "--procs", str(procs)]
        command += ["--concurrency", str(concurrency), "--size", str(size)]
        command += ["--seconds", str(seconds), "--pb-dir", str(pb_dir)]
        env = dict(os.environ)
    else:
        conns, depth = (1, 1) if inflight == 1 else (4, inflight // 4)
        request, reply = files["msgpack" if kind == "asyncio-msgpack" else "ttheader"]
        command = [str(loadgen), target, str(conns), str(depth), "0", str(seconds)]
        env = {**os.environ, "LOADGEN_REQUEST": str(request), "LOADGEN_REPLY": str(reply)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 120, preexec_fn=pin(cpu)
    )
    if done.returncode != 0:
        sys.exit(f"load against {kind} failed: {done.stderr.strip()} {done.stdout.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- client side


def rpcpoll_caller(address: str, size: int) -> Callable[[], Any]:
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    client = EchoServiceClient(address, timeout=10)
    request = EchoRequest(message="hi", payload=b"x" * size)
    return lambda: client.echo(request)


def grpc_caller(address: str, size: int) -> Callable[[], Any]:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    stub = echo_pb2_grpc.EchoServiceStub(grpc.insecure_channel(address))
    request = echo_pb2.EchoRequest(message="hi", payload=b"x" * size)
    return lambda: stub.Echo(request, timeout=10)


def calls_per_second(call: Callable[[], Any], threads: int, seconds: float) -> dict[str, float]:
    for _ in range(100):
        call()  # connect and warm up
    latencies: list[list[float]] = [[] for _ in range(threads)]
    end = time.perf_counter() + seconds

    def work(mine: list[float]) -> None:
        perf = time.perf_counter
        while True:
            t0 = perf()
            if t0 >= end:
                return
            call()
            mine.append(perf() - t0)

    workers = [threading.Thread(target=work, args=(mine,)) for mine in latencies]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ordered = sorted(x for mine in latencies for x in mine)
    return {
        "qps": len(ordered) / seconds,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
    }


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 128 B only")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    sizes = (128,) if args.quick else SIZES
    ncpu = len(os.sched_getaffinity(0))
    server_cpu, load_cpu = (0, 1) if ncpu >= 2 else (None, None)
    if load_cpu is not None:
        # The client-side measurements run in this process: on the load generators' CPU, never
        # on the server's (servers and load generators are pinned as they start).
        os.sched_setaffinity(0, {load_cpu})
    loadgen = build_loadgen()
    print(
        f"{ncpu} CPUs; servers on CPU {server_cpu}, load generators on CPU {load_cpu}; "
        f"{seconds:g} s per measurement; Python {sys.version.split()[0]}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp_name:
        tmp = Path(tmp_name)
        compile_grpc(tmp)
        sys.path.insert(0, str(tmp))
        server: dict[tuple[str, int, int], dict[str, Any]] = {}
        client: dict[tuple[str, int, int], dict[str, float]] = {}
        for size in sizes:
            files = frame_files(tmp, size)
            for kind in ALL:
                proc, target = start_server(kind, tmp, server_cpu)
                try:
                    for inflight in (1, 128):
                        server[(kind, size, inflight)] = load(
                            kind, target, inflight, size, seconds, files, tmp, loadgen, load_cpu
                        )
                    if kind in CLIENT_SERVERS:
                        make = rpcpoll_caller if kind.startswith("rpcpoll") else grpc_caller
                        for threads in (1, 8):
                            client[(kind, size, threads)] = calls_per_second(
                                make(target, size), threads, seconds
                            )
                finally:
                    stop_server(proc)
        report(server, client, sizes)


def report(
    server: dict[tuple[str, int, int], dict[str, Any]],
    client: dict[tuple[str, int, int], dict[str, float]],
    sizes: tuple[int, ...],
) -> None:
    for size in sizes:
        for inflight in (1, 128):
            print(f"\nserver side, {size} B payload, {inflight} in flight")
            print(f"  {'server':<17}{'QPS':>10}{'p50 us':>10}{'p99 us':>10}")
            for kind in ALL:
                r = server[(kind, size, inflight)]
                print(f"  {kind:<17}{r['qps']:>10.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
        print(f"\nclient side, {size} B payload (generated client -> its own server)")
        print(
            f"  {'client -> server':<30}{'threads':>8}{'calls/s':>10}{'p50 us':>10}{'p99 us':>10}"
        )
        for kind in CLIENT_SERVERS:
            name = f"{'grpcio' if kind in GRPC else 'rpcpoll'} -> {kind}"
            for threads in (1, 8):
                r = client[(kind, size, threads)]
                print(
                    f"  {name:<30}{threads:>8}{r['qps']:>10.0f}{r['p50_us']:>10.1f}"
                    f"{r['p99_us']:>10.1f}"
                )

    print("\ntargets (ratio, verdict):")
    for size in sizes:
        best = max(GRPC, key=lambda k: server[(k, size, 128)]["qps"])
        g128 = server[(best, size, 128)]
        fastest = min(GRPC, key=lambda k: server[(k, size, 1)]["p50_us"])
        g1 = server[(fastest, size, 1)]
        for kind in RPCPOLL:
            r = server[(kind, size, 128)]
            verdict(f"{size} B, 128 in flight: {kind} / {best} QPS >= 20", r["qps"] / g128["qps"])
            verdict(
                f"{size} B, 128 in flight: {kind} / {best} p99 <= 0.1",
                r["p99_us"] / g128["p99_us"],
                at_most=0.1,
            )
            verdict(
                f"{size} B, 1 in flight: {kind} / {fastest} p50 <= 0.25",
                server[(kind, size, 1)]["p50_us"] / g1["p50_us"],
                at_most=0.25,
            )
        grpc_client = {threads: client[("grpc-aio", size, threads)] for threads in (1, 8)}
        for kind in RPCPOLL:
            for threads in (1, 8):
                verdict(
                    f"{size} B, client, {threads} thread(s), server {kind}: calls/s >= 3x grpcio",
                    client[(kind, size, threads)]["qps"] / grpc_client[threads]["qps"],
                    at_least=3,
                )
        hand_written = server[("asyncio-msgpack", size, 128)]["qps"]
        for kind in RPCPOLL:
            verdict(
                f"{size} B, 128 in flight: {kind} / asyncio-msgpack QPS (>= 0.6, else profile)",
                server[(kind, size, 128)]["qps"] / hand_written,
                at_least=0.6,
            )


def verdict(
    label: str, ratio: float, at_least: float | None = 20, at_most: float | None = None
) -> None:
    ok = ratio <= at_most if at_most is not None else ratio >= (at_least or 0)
    print(f"  {label:<78} {ratio:7.3f}  {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
