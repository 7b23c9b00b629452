"""Streaming rpcs: rpcpoll against grpcio and against its own transport, in one run.

Every server runs in its own process pinned to CPU 0 (bench/stream_servers.py); every client
in its own process pinned to CPU 1 (this script with --client). `--reps` repetitions measure
each cell in turn; ratios are taken within a repetition and the median ratio is reported.
The service is bench/streambench.proto, compiled by `rpcpoll gen` and by grpc_tools.protoc
into a temporary directory.

(a) Server streaming of 1 KiB chunks: messages/s of rpcpoll's sync server read by rpcpoll's
    sync client, against grpcio's sync server (10 threads) read by grpcio's client. Target:
    rpcpoll >= 20x grpcio.
(b) Bidi ping-pong over one stream (rpcpoll's sync client and server, 128 B chunks): the p50
    of a send + receive round trip, against the p50 of a unary Ping through the same sync
    client (pooled) to the same server. Target: stream p50 <= 1.5x unary p50.
(c) Client-streaming upload of 100 MB in 64 KiB chunks (rpcpoll sync client and server):
    MB/s, against a raw socket echo of the same bytes, as 64 KiB length-prefixed frames,
    through rpcpoll's transport (bench/echo_servers.py rpcpoll-poller; the client writes from
    one thread and reads the echo in another). Target: upload >= 0.5x echo. The one-way
    reference (a transport server that discards the frames) is printed too.

    python bench/bench_stream.py [--reps 3] [--seconds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_transport import pin, start_ready, stop_server  # noqa: E402

CHUNK = 1024  # (a)
PING = 128  # (b)
UPLOAD = 100 * 1000 * 1000  # (c): 100 MB
UPLOAD_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- clients


def download_rpcpoll(target: str, seconds: float) -> dict[str, float]:
    from streambench_rpc import DownloadRequest, StreamBenchClient

    with StreamBenchClient(target, timeout=600.0) as client:
        for _ in client.download(DownloadRequest(count=20_000, size=CHUNK)):
            pass  # warm-up
        return timed_download(
            lambda count: client.download(DownloadRequest(count=count, size=CHUNK)), seconds
        )


def download_grpc(target: str, seconds: float) -> dict[str, float]:
    import grpc
    import streambench_pb2 as pb
    import streambench_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.StreamBenchStub(channel)
        for _ in stub.Download(pb.DownloadRequest(count=2_000, size=CHUNK)):
            pass
        return timed_download(
            lambda count: stub.Download(pb.DownloadRequest(count=count, size=CHUNK)), seconds
        )


def timed_download(start: Any, seconds: float) -> dict[str, float]:
    """Messages/s of one stream read for about `seconds` (sized from a short probe)."""
    probe = 5_000
    t0 = time.perf_counter()
    for _ in start(probe):
        pass
    rate = probe / (time.perf_counter() - t0)
    count = max(probe, int(rate * seconds))
    t0 = time.perf_counter()
    got = 0
    for chunk in start(count):
        got += 1
        if len(chunk.data) != CHUNK:
            raise SystemExit("a chunk of the wrong size")
    elapsed = time.perf_counter() - t0
    if got != count:
        raise SystemExit(f"got {got} of {count} chunks")
    return {"msgs_per_s": got / elapsed, "messages": got}


def pingpong_rpcpoll(target: str, seconds: float) -> dict[str, float]:
    from streambench_rpc import Chunk, StreamBenchClient

    chunk = Chunk(data=b"x" * PING)
    with StreamBenchClient(target, timeout=600.0) as client:
        call = client.ping_pong()
        send = call.send

        def stream_round() -> None:
            send(chunk)
            next(call)

        stream = timed(stream_round, seconds)
        call.close_send()
        for _ in call:
            pass
        unary = timed(lambda: client.ping(chunk), seconds)
    return {"stream_p50_us": stream["p50_us"], "stream_p99_us": stream["p99_us"],
            "unary_p50_us": unary["p50_us"], "unary_p99_us": unary["p99_us"]}  # fmt: skip


def timed(call: Any, seconds: float) -> dict[str, float]:
    for _ in range(2000):
        call()
    latencies = []
    perf = time.perf_counter
    end = perf() + seconds
    while True:
        t0 = perf()
        if t0 >= end:
            break
        call()
        latencies.append(perf() - t0)
    latencies.sort()
    return {
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def chunks(data: bytes, total: int) -> Iterator[Any]:
    from streambench_rpc import Chunk

    chunk = Chunk(data=data)
    for _ in range(total // len(data)):
        yield chunk


def upload_rpcpoll(target: str, total: int) -> dict[str, float]:
    from streambench_rpc import StreamBenchClient

    data = b"x" * UPLOAD_CHUNK
    with StreamBenchClient(target, timeout=600.0) as client:
        client.upload(chunks(data, total // 20))  # warm-up
        t0 = time.perf_counter()
        summary = client.upload(chunks(data, total))
        elapsed = time.perf_counter() - t0
    sent = total // UPLOAD_CHUNK * UPLOAD_CHUNK
    if summary.size != sent:
        raise SystemExit(f"the server counted {summary.size} of {sent} bytes")
    return {"mb_per_s": sent / elapsed / 1e6}


def raw_frames(total: int) -> tuple[bytes, int]:
    frame = UPLOAD_CHUNK.to_bytes(4, "big") + b"x" * UPLOAD_CHUNK
    return frame, total // UPLOAD_CHUNK


def upload_echo(target: str, total: int) -> dict[str, float]:
    """Write the frames from one thread, read their echo in this one: MB/s one way."""
    import socket

    frame, count = raw_frames(total)
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run(frames: int) -> float:
            writer = threading.Thread(target=lambda: [sock.sendall(frame) for _ in range(frames)])
            t0 = time.perf_counter()
            writer.start()
            expected, got = frames * len(frame), 0
            buf = bytearray(1 << 20)
            while got < expected:
                n = sock.recv_into(buf)
                if not n:
                    raise SystemExit("the echo server closed the connection")
                got += n
            writer.join()
            return time.perf_counter() - t0

        run(count // 20)
        elapsed = run(count)
    return {"mb_per_s": count * UPLOAD_CHUNK / elapsed / 1e6}


def upload_discard(target: str, total: int) -> dict[str, float]:
    import socket

    frame, count = raw_frames(total)
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run(frames: int) -> float:
            t0 = time.perf_counter()
            for _ in range(frames):
                sock.sendall(frame)
            sock.sendall(b"\0\0\0\0")
            answer = b""
            while len(answer) < 8:
                answer += sock.recv(8 - len(answer))
            if int.from_bytes(answer, "big") != frames * UPLOAD_CHUNK:
                raise SystemExit("the discard server counted the wrong number of bytes")
            return time.perf_counter() - t0

        run(count // 20)
        elapsed = run(count)
    return {"mb_per_s": count * UPLOAD_CHUNK / elapsed / 1e6}


CLIENTS = {
    "download-rpcpoll": lambda target, args: download_rpcpoll(target, args.seconds),
    "download-grpc": lambda target, args: download_grpc(target, args.seconds),
    "pingpong-rpcpoll": lambda target, args: pingpong_rpcpoll(target, args.seconds),
    "upload-rpcpoll": lambda target, args: upload_rpcpoll(target, args.upload),
    "upload-echo": lambda target, args: upload_echo(target, args.upload),
    "upload-discard": lambda target, args: upload_discard(target, args.upload),
}


# --------------------------------------------------------------------------- the run


def start_server(kind: str, gen_dir: Path, cpu: int | None) -> tuple[Any, str]:
    if kind == "echo":
        return start_ready([sys.executable, str(HERE / "echo_servers.py"), "rpcpoll-poller"], cpu)
    command = [sys.executable, str(HERE / "stream_servers.py"), kind, "--gen-dir", str(gen_dir)]
    return start_ready(command, cpu)


def run_client(
    kind: str, target: str, gen_dir: Path, args: argparse.Namespace, cpu: int | None
) -> dict[str, float]:
    command = [sys.executable, __file__, "--client", kind, "--target", target]
    command += ["--gen-dir", str(gen_dir), "--seconds", str(args.seconds)]
    command += ["--upload", str(args.upload)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=pin(cpu))
    if done.returncode != 0:
        raise SystemExit(f"client {kind} against {target} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


CELLS = (  # (name, server, client)
    ("download rpcpoll", "rpcpoll", "download-rpcpoll"),
    ("download grpcio", "grpc-sync", "download-grpc"),
    ("ping-pong rpcpoll", "rpcpoll", "pingpong-rpcpoll"),
    ("upload rpcpoll", "rpcpoll", "upload-rpcpoll"),
    ("upload echo (transport)", "echo", "upload-echo"),
    ("upload discard (transport)", "discard", "upload-discard"),
)


def run_rep(
    rep: int, args: argparse.Namespace, gen_dir: Path, cpus: tuple[Any, Any]
) -> dict[str, dict[str, float]]:
    cells = list(CELLS)
    shift = rep % len(cells)
    results: dict[str, dict[str, float]] = {}
    for name, server, client in cells[shift:] + cells[:shift]:
        proc, target = start_server(server, gen_dir, cpus[0])
        try:
            results[name] = run_client(client, target, gen_dir, args, cpus[1])
        finally:
            stop_server(proc)
        print(f"  rep {rep + 1}: {name:<28} {json.dumps(results[name])}", flush=True)
    return results


def report(reps: list[dict[str, dict[str, float]]]) -> None:
    def med(cell: str, field: str) -> float:
        return statistics.median(rep[cell][field] for rep in reps)

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> tuple[float, list[float]]:
        values = [rep[a[0]][a[1]] / rep[b[0]][b[1]] for rep in reps]
        return statistics.median(values), values

    pp = "ping-pong rpcpoll"
    print("\nmedians")
    print(
        f"  (a) download, 1 KiB chunks: rpcpoll {med('download rpcpoll', 'msgs_per_s'):.0f} msg/s,"
        f" grpcio {med('download grpcio', 'msgs_per_s'):.0f} msg/s"
    )
    print(
        f"  (b) ping-pong, 128 B: stream p50 {med(pp, 'stream_p50_us'):.1f} us"
        f" (p99 {med(pp, 'stream_p99_us'):.1f}), unary p50 {med(pp, 'unary_p50_us'):.1f} us"
        f" (p99 {med(pp, 'unary_p99_us'):.1f})"
    )
    print(
        f"  (c) upload, 64 KiB chunks: rpcpoll {med('upload rpcpoll', 'mb_per_s'):.0f} MB/s,"
        f" transport echo {med('upload echo (transport)', 'mb_per_s'):.0f} MB/s,"
        f" transport discard {med('upload discard (transport)', 'mb_per_s'):.0f} MB/s"
    )
    print("\ntargets (median of per-repetition ratios; each repetition's in brackets):")
    checks = (
        ("(a) download: rpcpoll / grpcio msg/s >= 20",
         ratio(("download rpcpoll", "msgs_per_s"), ("download grpcio", "msgs_per_s")), 20, None),
        ("(b) ping-pong: stream p50 / unary p50 <= 1.5",
         ratio(("ping-pong rpcpoll", "stream_p50_us"), ("ping-pong rpcpoll", "unary_p50_us")),
         None, 1.5),
        ("(c) upload: rpcpoll / transport echo MB/s >= 0.5",
         ratio(("upload rpcpoll", "mb_per_s"), ("upload echo (transport)", "mb_per_s")), 0.5, None),
        ("    upload: rpcpoll / transport discard MB/s (information)",
         ratio(("upload rpcpoll", "mb_per_s"), ("upload discard (transport)", "mb_per_s")),
         None, None),
    )  # fmt: skip
    for label, (value, values), at_least, at_most in checks:
        each = ", ".join(f"{v:.2f}" for v in values)
        if at_least is None and at_most is None:
            verdict = ""
        elif at_least is not None:
            verdict = "met" if value >= at_least else "NOT met"
        else:
            verdict = "met" if value <= (at_most or 0) else "NOT met"
        print(f"  {label:<58} {value:7.2f}  [{each}]  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median of ratios)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--upload", type=int, default=UPLOAD, help="bytes per upload")
    parser.add_argument("--quick", action="store_true", help="1 repetition of 1 s, 20 MB")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--gen-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # one measurement, in a process of its own
        sys.path.insert(0, args.gen_dir)
        print(json.dumps(CLIENTS[args.client](args.target, args)))
        return
    if args.quick:
        args.reps, args.seconds, args.upload = 1, 1.0, 20 * 1000 * 1000
    ncpu = len(os.sched_getaffinity(0))
    cpus = (0, 1) if ncpu >= 2 else (None, None)
    print(
        f"{ncpu} CPUs; servers on CPU {cpus[0]}, clients on CPU {cpus[1]}; {args.reps}"
        f" repetition(s), {args.seconds:g} s per measurement, uploads of {args.upload / 1e6:g}"
        f" MB; Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp_name:
        gen_dir = Path(tmp_name)
        proto = HERE / "streambench.proto"
        subprocess.run(
            [sys.executable, "-m", "rpcpoll", "gen", str(proto), "-o", str(gen_dir)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={gen_dir}",
             f"--grpc_python_out={gen_dir}", str(proto)],
            check=True,
        )  # fmt: skip
        reps = [run_rep(i, args, gen_dir, cpus) for i in range(args.reps)]
    report(reps)


if __name__ == "__main__":
    main()
