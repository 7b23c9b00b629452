"""asyncio: rpcpoll's async server and client against grpc.aio and the asyncio limits, in one run.

Server side (128 B echo, 128 in flight as 4 connections x 32, server pinned to CPU 0, load on
CPU 1, `--reps` repetitions with the order rotated, medians of the per-repetition ratios):

- rpcpoll with `async def echo` (`rpcpoll serve bench_aio:AsyncEcho`, its own uvloop event
  loop), driven by bench/loadgen.c replaying a frame captured from the generated client;
- rpcpoll's sync server (`rpcpoll serve`, default mode), the same load;
- grpc.aio's server (bench/rpc_servers.py grpc-aio), driven by h2load.

Client side (this process, pinned to CPU 1; each server on CPU 0):

- the generated async client, one thread, 128 concurrent tasks, against rpcpoll's sync server;
- a hand-written asyncio Protocol that pipelines the captured request frame over one
  connection, 128 in flight (the asyncio limit: no framework at all), same server;
- grpc.aio's client, 128 tasks, against grpcio's sync server;
- one task calling one at a time: the async client against the sync client (p50).

The event loop is uvloop's when installed (`--loop asyncio` for asyncio's own).

    python bench/bench_aio.py [--seconds 3] [--reps 3] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_rpc import (  # noqa: E402
    ADDRESS,
    CLIENT_TIMEOUT,
    capture_client_frame,
    check_rpcpoll_server,
    grpc_python_run,
    h2load_run,
    loadgen_run,
    start_other,
    timed_calls,
)
from bench_transport import build_loadgen, pin, stop_server  # noqa: E402

from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse  # noqa: E402
from rpcpoll.service import CallContext  # noqa: E402

try:
    from rpcpoll.examples.echo_rpc import EchoServiceAsyncHandler as _AsyncBase
except ImportError:  # generated modules from before async handlers
    from rpcpoll.examples.echo_rpc import EchoServiceHandler as _AsyncBase  # type: ignore[assignment]


class AsyncEcho(_AsyncBase):  # type: ignore[misc, valid-type]
    """The async twin of rpcpoll's bundled echo handler."""

    async def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:  # type: ignore[override]
        return EchoResponse(message=request.message, payload=request.payload)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def start_rpcpoll(handler: str | None, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0"]
    if handler:
        command.insert(4, handler)
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=pin(cpu), env=env
    )
    assert proc.stderr is not None
    for _ in range(50):
        match = ADDRESS.search(proc.stderr.readline())
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match["address"]
    proc.kill()
    sys.exit(f"rpcpoll serve {handler or ''} did not start")


# --------------------------------------------------------------------------- async clients


async def rpcpoll_tasks(address: str, tasks: int, seconds: float) -> dict[str, float]:
    from rpcpoll.examples.echo_rpc import EchoServiceAsyncClient

    request = EchoRequest(message="hi", payload=b"x" * 128)
    async with EchoServiceAsyncClient(address, timeout=CLIENT_TIMEOUT) as client:
        await asyncio.gather(*(client.echo(request) for _ in range(tasks)))  # connect, warm up
        return await _closed_loop(lambda: client.echo(request), tasks, seconds)


async def grpc_tasks(address: str, tasks: int, seconds: float) -> dict[str, float]:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    request = echo_pb2.EchoRequest(message="hi", payload=b"x" * 128)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        await asyncio.gather(*(stub.Echo(request) for _ in range(tasks)))
        return await _closed_loop(
            lambda: stub.Echo(request, timeout=CLIENT_TIMEOUT), tasks, seconds
        )


async def _closed_loop(call: Any, tasks: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def one() -> None:
        perf = time.perf_counter
        while True:
            t0 = perf()
            if t0 >= end:
                return
            await call()
            latencies.append(perf() - t0)

    await asyncio.gather(*(one() for _ in range(tasks)))
    latencies.sort()
    return {
        "qps": len(latencies) / seconds,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


class _Pipeline(asyncio.Protocol):
    """Keeps `depth` copies of one request frame in flight; counts the reply frames."""

    def __init__(self, frame: bytes, depth: int, done: asyncio.Future[None], end: float):
        self.frame, self.depth, self.done, self.end = frame, depth, done, end
        self.buffer = bytearray()
        self.completed = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.frame * self.depth)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos, size, replies = 0, len(buffer), 0
        while size - pos >= 4:
            n = int.from_bytes(buffer[pos : pos + 4], "big") + 4
            if size - pos < n:
                break
            pos += n
            replies += 1
        del buffer[:pos]
        self.completed += replies
        if time.perf_counter() < self.end:
            self.transport.write(self.frame * replies)
        elif self.completed and not self.done.done():
            self.done.set_result(None)


async def raw_pipeline(address: str, frame: bytes, depth: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    done: asyncio.Future[None] = loop.create_future()
    warm = _Pipeline(frame, depth, done, time.perf_counter() + 0.5)
    transport, _ = await loop.create_connection(lambda: warm, host, int(port))
    await done
    transport.close()
    done = loop.create_future()
    started = time.perf_counter()
    pipe = _Pipeline(frame, depth, done, started + seconds)
    transport, _ = await loop.create_connection(lambda: pipe, host, int(port))
    await done
    elapsed = time.perf_counter() - started
    transport.close()
    return {"qps": pipe.completed / elapsed, "p50_us": 0.0, "p99_us": 0.0}


async def rpcpoll_one_task(address: str, seconds: float) -> dict[str, float]:
    from rpcpoll.examples.echo_rpc import EchoServiceAsyncClient

    request = EchoRequest(message="hi", payload=b"x" * 128)
    async with EchoServiceAsyncClient(address, timeout=CLIENT_TIMEOUT) as client:
        for _ in range(200):
            await client.echo(request)
        return await _closed_loop(lambda: client.echo(request), 1, seconds)


# --------------------------------------------------------------------------- the run


def run_rep(
    rep: int,
    args: argparse.Namespace,
    tmp: Path,
    loadgen: Path,
    cpus: tuple[int | None, int | None],
) -> dict[str, Any]:
    server_cpu, load_cpu = cpus
    frame = capture_client_frame(128)
    results: dict[str, Any] = {}
    kinds = ["rpcpoll-async", "rpcpoll-sync", "grpc-aio"]
    kinds = kinds[rep % 3 :] + kinds[: rep % 3]
    for kind in kinds:
        if kind == "grpc-aio":
            proc, target = start_other("grpc-aio", tmp, server_cpu)
        else:
            proc, target = start_rpcpoll(
                "bench_aio:AsyncEcho" if kind == "rpcpoll-async" else None, server_cpu
            )
        try:
            if kind == "grpc-aio":
                if shutil.which("h2load"):
                    load = h2load_run(target, 128, args.seconds, 128, tmp, load_cpu)
                else:
                    load = grpc_python_run(target, 128, args.seconds, 128, tmp, load_cpu)
            else:
                reply = check_rpcpoll_server(target, frame, 128)
                load = loadgen_run(
                    loadgen, target, 128, args.seconds, frame, reply, True, tmp, load_cpu
                )
            results[f"server {kind}"] = load
        finally:
            stop_server(proc)
    # client side: rpcpoll's sync server and grpcio's sync server
    proc, target = start_rpcpoll(None, server_cpu)
    try:
        loop = new_loop(args.loop)
        try:
            results["client rpcpoll-async"] = loop.run_until_complete(
                rpcpoll_tasks(target, 128, args.seconds)
            )
            results["client raw-protocol"] = loop.run_until_complete(
                raw_pipeline(target, frame, 128, args.seconds)
            )
            results["one task async"] = loop.run_until_complete(
                rpcpoll_one_task(target, args.seconds)
            )
        finally:
            loop.close()
        from rpcpoll.examples.echo_rpc import EchoServiceClient

        sync_client = EchoServiceClient(target, timeout=CLIENT_TIMEOUT)
        request = EchoRequest(message="hi", payload=b"x" * 128)
        results["one task sync"] = timed_calls(lambda: sync_client.echo(request), 1, args.seconds)
        sync_client.close()
    finally:
        stop_server(proc)
    proc, target = start_other("grpc-sync", tmp, server_cpu)
    try:
        results["client grpc-aio"] = asyncio.run(grpc_tasks(target, 128, args.seconds))
    finally:
        stop_server(proc)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            args.loop = "asyncio"
    # Decided before this process pins itself to CPU 1: the servers it starts would inherit it.
    cpus: tuple[int | None, int | None] = (None, None)
    if len(os.sched_getaffinity(0)) >= 2:
        cpus = (0, 1)
        os.sched_setaffinity(0, {1})
    loadgen = build_loadgen()
    print(
        f"Python {sys.version.split()[0]}, client loop {args.loop}; {args.seconds:g} s per cell,"
        f" {args.reps} repetition(s); server CPU 0, load CPU 1"
    )
    with tempfile.TemporaryDirectory(prefix="bench-aio-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'idl'}",
             f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(REPO / "idl" / "echo.proto")],
            check=True,
        )  # fmt: skip
        sys.path.insert(0, str(tmp))
        reps = [run_rep(i, args, tmp, loadgen, cpus) for i in range(args.reps)]

    def med(key: str, field: str) -> float:
        return statistics.median(rep[key][field] for rep in reps)

    def ratio(a: str, b: str, field: str) -> float:
        return statistics.median(rep[a][field] / rep[b][field] for rep in reps)

    print(f"\n  {'measurement':<28}{'QPS':>10}{'p50 us':>10}{'p99 us':>10}")
    for key in reps[0]:
        print(
            f"  {key:<28}{med(key, 'qps'):>10.0f}{med(key, 'p50_us'):>10.1f}"
            f"{med(key, 'p99_us'):>10.1f}"
        )
    print("\ntargets (median of per-repetition ratios):")
    # (label, measurement, its reference, field, at least, at most)
    srv, cli = "server rpcpoll-async", "client rpcpoll-async"
    checks = [
        ("async server / grpc.aio server QPS >= 25", srv, "server grpc-aio", "qps", 25, None),
        ("async server / sync server QPS >= 0.7", srv, "server rpcpoll-sync", "qps", 0.7, None),
        ("async server / grpc.aio p99 <= 0.1", srv, "server grpc-aio", "p99_us", None, 0.1),
        ("async client / grpc.aio client >= 10", cli, "client grpc-aio", "qps", 10, None),
        ("async client / raw Protocol >= 0.5", cli, "client raw-protocol", "qps", 0.5, None),
        ("one task: async p50 / sync p50 <= 1.3", "one task async", "one task sync", "p50_us",
         None, 1.3),
    ]  # fmt: skip
    for label, a, b, field, at_least, at_most in checks:
        value = ratio(a, b, field)
        ok = value >= at_least if at_least is not None else value <= (at_most or 0)
        print(f"  {label:<50} {value:8.3f}  {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
