"""How much load `rpcpoll bench` drives, against what ghz-like tools drive into grpcio.

ghz is not installed here; the reference is h2load (nghttp2's C HTTP/2 load generator) sending
gRPC frames to grpcio's sync server (a 10-thread pool), which loads grpcio at least as hard as
ghz would. Same shape everywhere: 128 calls in flight over 4 connections, 128 B echo, the
server pinned to CPU 0 and the load to CPU 1, 1 s of warm-up, then `--seconds` measured.

Rows:
- h2load -> grpcio sync server (the "ghz into grpcio" reference);
- `rpcpoll bench` -> `rpcpoll serve`, in order (default) and with --mux (out-of-order calls);
- the alternative design: the generated client with mux=True called from 128 threads, one
  process (what `rpcpoll bench` would be if built on the client instead of raw frames).

    python bench/bench_cli.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

from bench_rpc import grpc_body, start_other, start_rpcpoll  # noqa: E402
from bench_transport import pin, stop_server  # noqa: E402

SIZE = 128


def h2load(target: str, seconds: float, tmp: Path, cpu: int) -> dict[str, Any]:
    body = tmp / "grpc-body.bin"
    body.write_bytes(grpc_body(SIZE))
    command = [
        "h2load", "-D", f"{seconds:g}", "--warm-up-time", "1", "-c", "4", "-m", "32", "-t", "1",
        "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://{target}/echo.EchoService/Echo",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin(cpu)
    )
    found = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", done.stdout)
    if found is None:
        sys.exit(f"h2load failed:\n{done.stdout}\n{done.stderr}")
    return {"qps": float(found.group(1))}


def rpcpoll_bench(target: str, seconds: float, cpu: int, *extra: str) -> dict[str, Any]:
    payload = '{"message": "hi", "payload": "' + "eHh4" * (SIZE // 3) + '"}'
    command = [sys.executable, "-m", "rpcpoll", "bench", target, "echo.EchoService/Echo"]
    command += ["-d", payload, "-c", "128", "--connections", "4", "--format", "json", *extra]
    # warm-up, then the measured run
    subprocess.run([*command, "-z", "1s"], capture_output=True, check=True, preexec_fn=pin(cpu))
    done = subprocess.run(
        [*command, "-z", f"{seconds:g}s"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pin(cpu),
    )
    report = json.loads(done.stdout)
    return {
        "qps": report["qps"],
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "client_cpu": report["client"]["cpu_per_process"][0],
        "errors": sum(report["errors"].values()),
    }


def threaded_mux_client(target: str, seconds: float, cpu: int) -> dict[str, Any]:
    """128 threads calling through one generated client with mux=True, in this process."""
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    os.sched_setaffinity(0, {cpu})
    client = EchoServiceClient(target, mux=True, timeout=5.0)
    request = EchoRequest(message="hi", payload=b"x" * SIZE)
    counts = [0] * 128
    start = time.monotonic()
    warm, end = start + 1.0, start + 1.0 + seconds

    def work(i: int) -> None:
        while True:
            now = time.monotonic()
            if now >= end:
                return
            client.echo(request)
            if now >= warm:
                counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(128)]
    cpu0 = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = time.process_time() - cpu0
    client.close()
    return {"qps": sum(counts) / seconds, "client_cpu": used / (1.0 + seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load is needed (apt-get install nghttp2-client)")
    server_cpu, load_cpu = 0, 1
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'idl'}",
             f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(REPO / "idl" / "echo.proto")],
            check=True,
        )  # fmt: skip
        sys.path.insert(0, str(tmp))
        proc, target = start_other("grpc-sync", tmp, server_cpu)
        try:
            rows["h2load -> grpcio sync"] = h2load(target, args.seconds, tmp, load_cpu)
        finally:
            stop_server(proc)
        proc, target = start_rpcpoll("auto", server_cpu)
        try:
            rows["rpcpoll bench -> rpcpoll serve"] = rpcpoll_bench(target, args.seconds, load_cpu)
            rows["rpcpoll bench --mux -> rpcpoll serve"] = rpcpoll_bench(
                target, args.seconds, load_cpu, "--mux"
            )
            rows["generated client, mux=True, 128 threads"] = threaded_mux_client(
                target, args.seconds, load_cpu
            )
        finally:
            stop_server(proc)
    reference = rows["h2load -> grpcio sync"]["qps"]
    print(f"128 in flight, 4 connections, {SIZE} B echo, server on CPU 0, load on CPU 1")
    for name, row in rows.items():
        extra = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "qps")
        print(f"  {name:<42} {row['qps']:>10,.0f} calls/s  {row['qps'] / reference:6.1f}x  {extra}")


if __name__ == "__main__":
    main()
