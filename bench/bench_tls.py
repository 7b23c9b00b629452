"""TLS: rpcpoll echo over TLS vs plaintext (same run), vs grpcio with TLS, and a handshake storm.

    .venv/bin/python bench/bench_tls.py [--seconds 3] [--size 128] [--storm 1000]

- **Throughput** at 128 in flight (4 connections x 32 pipelined), 128-byte payloads: the
  frames the generated client sends (captured once), replayed by `tls_load.py`, a small
  Python load generator (stdlib ssl, one thread per connection, keeping 32 requests in
  flight, counting reply bytes; bench/loadgen.c has no TLS). It drives `rpcpoll serve` with
  `--tls-cert` and without, so the TLS/plaintext ratio comes from one load generator; the C
  loadgen's plaintext figure is shown too, to tell whether the Python one is the limit.
- **grpcio with TLS**: its sync server (10 threads) with `grpc.ssl_server_credentials`,
  loaded by h2load over https (ALPN h2), 4 connections x 32 streams.
- **Handshake storm**: N connections handshake at once (asyncio in another process) while
  one established TLS connection measures its round trips; p50/p99 calm and during.

Servers on core 0, load on core 1 (`sched_setaffinity`). Targets (issue 14): TLS >= 0.5x
plaintext, >= 10x grpcio with TLS; the storm must not stall established connections.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))  # pki.py: certificates made at run time

from bench_rpc import (  # noqa: E402
    ADDRESS,
    SEQ_OFFSET,
    capture_client_frame,
    check_rpcpoll_server,
    grpc_body,
    loadgen_run,
)
from bench_transport import build_loadgen, pin, start_ready, stop_server  # noqa: E402

GRPC_TLS_SERVER = """
import sys, signal, threading
from concurrent import futures
sys.path.insert(0, sys.argv[1])
import grpc, echo_pb2, echo_pb2_grpc
class Echo(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request, context):
        return echo_pb2.EchoResponse(message=request.message, payload=request.payload)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
key, chain = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
creds = grpc.ssl_server_credentials([(key, chain)])
port = server.add_secure_port("127.0.0.1:0", creds)
server.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print("READY", port, flush=True)
while not stop.wait(0.5):
    pass
server.stop(1).wait()
"""

STORM = """
import asyncio, ssl, sys, time
port, cafile, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
async def one(context, done):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="localhost")
    done.append(time.perf_counter())
    writer.close()
async def main():
    context = ssl.create_default_context(cafile=cafile)
    done = []
    started = time.perf_counter()
    results = await asyncio.gather(*(one(context, done) for _ in range(count)),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    print(len(done), len(failed), time.perf_counter() - started, repr(failed[:1]))
asyncio.run(main())
"""


def start_rpcpoll(args: list[str], cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0", *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=pin(cpu))
    assert proc.stderr is not None
    for _ in range(50):
        match = ADDRESS.search(proc.stderr.readline())
        if match:
            import threading

            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match["address"]
    proc.kill()
    sys.exit("rpcpoll serve did not start")


def tls_load(
    target: str, request: bytes, reply_len: int, cafile: str | None, seconds: float, cpu: int
) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "tls_load.py"), target, "--seconds", str(seconds)]
    command += ["--reply-len", str(reply_len), "--request-hex", request.hex()]
    if cafile is not None:
        command += ["--cafile", cafile]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin(cpu)
    )
    if done.returncode != 0:
        sys.exit(f"tls_load against {target} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def h2load_tls(target: str, seconds: float, size: int, tmp: Path, cpu: int) -> float:
    body = tmp / "grpc-body.bin"
    body.write_bytes(grpc_body(size))
    command = [
        "h2load", "-D", f"{seconds:g}", "--warm-up-time", "1", "-c", "4", "-m", "32", "-t", "1",
        "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"https://{target}/echo.EchoService/Echo",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin(cpu)
    )
    found = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", done.stdout)
    failed = re.search(r"(\d+) failed, (\d+) errored", done.stdout)
    if done.returncode != 0 or found is None or (failed and failed.group(1) != "0"):
        sys.exit(f"h2load against grpcio at {target} failed:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def round_trips(conn: Any, seconds: float) -> list[float]:
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        conn.write(b"p" * 64)
        conn.next(64)
        conn.release()
        times.append(time.perf_counter() - started)
    return times


def storm(count: int, cafile: str, cpus: tuple[int, int], cert: str, key: str) -> dict[str, Any]:
    """Established-connection round trips (transport echo, TLS) before and during a storm."""
    from rpcpoll.transport import dial_connection

    server_code = f"""
import sys, threading
sys.path.insert(0, {str(REPO)!r})
from rpcpoll.transport import EventLoop, ServerTLS, create_listener
def echo(ctx, conn):
    reader = conn.reader()
    data = bytes(reader.next(len(reader)))
    reader.release()
    conn.writer().write_binary(data)
    conn.flush()
tls = ServerTLS.from_files({cert!r}, {key!r})
loop = EventLoop(echo, ssl=tls, run_on_poller=True, max_connections=5000)
listener = create_listener("tcp", "127.0.0.1:0", backlog=4096)
print("READY", listener.address[1], flush=True)
loop.serve(listener)
"""
    proc, target = start_ready([sys.executable, "-c", server_code], cpus[0])
    from rpcpoll.transport import client_context

    try:
        conn = dial_connection("tcp", target, 5.0, ssl=client_context(cafile), direct=True)
        conn.set_read_timeout(5.0)
        calm = round_trips(conn, 1.0)
        port = target.rsplit(":", 1)[1]
        stormer = subprocess.Popen(
            [sys.executable, "-c", STORM, port, cafile, str(count)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pin(cpus[1]),
        )
        during: list[float] = []
        while stormer.poll() is None:
            during += round_trips(conn, 0.05)
        out = (stormer.stdout.read() if stormer.stdout else "").split()
        conn.close()
    finally:
        stop_server(proc)
    done, failed, took = int(out[0]), int(out[1]), float(out[2])
    return {
        "connections": count,
        "handshaken": done,
        "failed": failed,
        "storm_s": took,
        "calm_p50_ms": statistics.median(calm) * 1e3,
        "calm_p99_ms": sorted(calm)[int(len(calm) * 0.99)] * 1e3,
        "storm_p50_ms": statistics.median(during) * 1e3 if during else 0.0,
        "storm_p99_ms": sorted(during)[int(len(during) * 0.99)] * 1e3 if during else 0.0,
        "storm_max_ms": max(during) * 1e3 if during else 0.0,
        "samples": len(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--storm", type=int, default=1000)
    args = parser.parse_args()
    cpus = (0, 1)
    from pki import CertAuthority

    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp_name:
        tmp = Path(tmp_name)
        ca = CertAuthority(tmp, "bench CA")
        issued = ca.issue("localhost")
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'idl'}",
             f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(REPO / "idl" / "echo.proto")],
            check=True,
        )  # fmt: skip
        sys.path.insert(0, str(tmp))
        request = capture_client_frame(args.size)
        results: dict[str, Any] = {}

        proc, target = start_rpcpoll([], cpus[0])
        try:
            reply = check_rpcpoll_server(target, request, args.size)
            results["plain_c"] = loadgen_run(
                build_loadgen(), target, 128, args.seconds, request, reply, True, tmp, cpus[1]
            )["qps"]
            results["plain_py"] = tls_load(
                target, request, len(reply), None, args.seconds, cpus[1]
            )["qps"]
        finally:
            stop_server(proc)

        proc, target = start_rpcpoll(["--tls-cert", issued.cert, "--tls-key", issued.key], cpus[0])
        try:
            results["tls_py"] = tls_load(
                target, request, len(reply), ca.cert, args.seconds, cpus[1]
            )["qps"]
        finally:
            stop_server(proc)

        if shutil.which("h2load"):
            code = [sys.executable, "-c", GRPC_TLS_SERVER, str(tmp), issued.key, issued.cert]
            proc, target = start_ready(code, cpus[0])
            try:
                results["grpc_tls"] = h2load_tls(target, args.seconds, args.size, tmp, cpus[1])
            finally:
                stop_server(proc)
        results["storm"] = storm(args.storm, ca.cert, cpus, issued.cert, issued.key)

    plain, tls = results["plain_py"], results["tls_py"]
    print(f"echo, {args.size} B payload, 4 conns x 32 in flight, {args.seconds:g} s each")
    print(f"  plaintext, C loadgen       {results['plain_c']:>10,.0f} calls/s")
    print(f"  plaintext, tls_load.py     {plain:>10,.0f} calls/s")
    print(f"  TLS,       tls_load.py     {tls:>10,.0f} calls/s  ({tls / plain:.2f}x plaintext)")
    if "grpc_tls" in results:
        grpc = results["grpc_tls"]
        print(
            f"  grpcio TLS, h2load         {grpc:>10,.0f} calls/s  (rpcpoll TLS {tls / grpc:.1f}x)"
        )
    s = results["storm"]
    print(
        f"handshake storm: {s['handshaken']}/{s['connections']} handshakes in {s['storm_s']:.2f} s"
        f" ({s['failed']} failed); established round trip p50/p99 calm"
        f" {s['calm_p50_ms']:.2f}/{s['calm_p99_ms']:.2f} ms, during"
        f" {s['storm_p50_ms']:.2f}/{s['storm_p99_ms']:.2f} ms (max {s['storm_max_ms']:.1f} ms,"
        f" {s['samples']} samples)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    _ = SEQ_OFFSET
    main()
