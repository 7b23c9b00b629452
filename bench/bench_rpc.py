"""Unary RPC speed, server and client side: rpcpoll against a bare epoll+msgpack loop and grpcio.

Everything runs in one run, with the server pinned to CPU 0 and the load on CPU 1, so that the
ratios hold on a shared, noisy machine. Each of `--reps` repetitions measures every server in
turn (the order rotates between repetitions); ratios are taken within a repetition, and the
median ratio is reported.

Server side (the echo service of idl/echo.proto, 128 B and 1 KiB payloads; 1 call in flight on
1 connection, then 128 in flight as 4 connections x 32 pipelined calls):

- rpcpoll: `rpcpoll serve` in its default mode (other modes with --modes), driven by
  bench/loadgen.c replaying a request frame **captured from the generated client**
  (`EchoServiceClient(address, timeout=1.0)`: its header carries the deadline a real client
  sends), with a fresh sequence number per request; every reply is checked byte for byte.
- bare: the pure-Python limit, one thread on select.epoll doing length-prefixed msgpack echo
  (bench/rpc_servers.py bare-msgpack), driven by the same C load generator.
- grpcio: the sync server (a 10-thread pool), driven by h2load (nghttp2's C HTTP/2 load
  generator, Debian's nghttp2-client) sending gRPC frames; without h2load, by
  bench/grpc_load.py (grpc.aio clients in Python, which cannot load grpcio fully: the ratio is
  then flattering and says so).

Before the load, one call and 64 pipelined calls go to each rpcpoll and bare server from a
plain socket and must come back with the right sequence numbers and fields.

Client side (one thread, one call at a time, 3 s): the generated rpcpoll client against
`rpcpoll serve`; a raw-socket client that sends the same captured frame and reads the reply
(the Python limit for a client); grpcio's generated stub against grpcio's sync server. Then 16
threads calling through the pool (one connection per concurrent caller) and through `mux=True`.

    python bench/bench_rpc.py [--seconds 3] [--reps 3] [--modes auto,pool] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
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
ADDRESS = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")
SEQ_OFFSET = 8  # where a TTHeader frame keeps its sequence number
CLIENT_TIMEOUT = 1.0  # the timeout the captured client frames carry


# --------------------------------------------------------------------------- frames


def capture_client_frame(size: int) -> bytes:
    """The request frame the generated client sends for an echo of `size` payload bytes."""
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceClient
    from rpcpoll.protocol.frame import write_reply
    from rpcpoll.transport import LinkBuffer

    listener = socket.create_server(("127.0.0.1", 0))
    captured: list[bytes] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            head = recv_exactly(conn, 4)
            frame = head + recv_exactly(conn, int.from_bytes(head, "big"))
            captured.append(frame)
            buf = LinkBuffer()
            seq = int.from_bytes(frame[SEQ_OFFSET : SEQ_OFFSET + 4], "big")
            write_reply(buf, seq, EchoResponse().to_bytes())
            buf.flush()
            conn.sendall(bytes(buf))

    thread = threading.Thread(target=serve_one)
    thread.start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    with EchoServiceClient(address, timeout=CLIENT_TIMEOUT) as client:
        client.echo(EchoRequest(message="hi", payload=b"x" * size))
    thread.join()
    listener.close()
    return captured[0]


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        chunks += chunk
    return bytes(chunks)


def with_seq(frame: bytes, seq: int) -> bytes:
    return frame[:SEQ_OFFSET] + seq.to_bytes(4, "big") + frame[SEQ_OFFSET + 4 :]


def check_rpcpoll_server(target: str, request: bytes, size: int) -> bytes:
    """One call, then 64 pipelined ones, from a plain socket: every reply must carry its
    request's sequence number and the echoed fields. Returns the reply frame of seq 1."""
    from rpcpoll.examples.echo_rpc import EchoResponse
    from rpcpoll.protocol.frame import MessageType, decode_frame

    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        replies = []
        for batch in ([1], list(range(2, 66))):
            sock.sendall(b"".join(with_seq(request, seq) for seq in batch))
            for seq in batch:
                head = recv_exactly(sock, 4)
                raw = head + recv_exactly(sock, int.from_bytes(head, "big"))
                frame = decode_frame(raw)
                response = EchoResponse.from_bytes(frame.payload)
                if (
                    frame.message_type is not MessageType.REPLY
                    or frame.seq_id != seq
                    or (response.message, response.payload) != ("hi", b"x" * size)
                ):
                    sys.exit(f"rpcpoll at {target} answered seq {seq} wrongly: {frame}")
                replies.append(raw)
    return with_seq(replies[0], 1)


def bare_frames(size: int) -> bytes:
    import msgpack

    body = msgpack.packb({1: "hi", 2: b"x" * size})
    return len(body).to_bytes(4, "big") + body


def check_bare_server(target: str, frame: bytes) -> None:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for batch in (1, 64):
            sock.sendall(frame * batch)
            for _ in range(batch):
                head = recv_exactly(sock, 4)
                if head + recv_exactly(sock, int.from_bytes(head, "big")) != frame:
                    sys.exit(f"the bare server at {target} answered wrongly")


# --------------------------------------------------------------------------- servers


def start_rpcpoll(mode: str, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0"]
    if mode != "auto":
        command += ["--mode", mode]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=pin(cpu))
    assert proc.stderr is not None
    for _ in range(50):
        match = ADDRESS.search(proc.stderr.readline())
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain the logs
            return proc, match["address"]
    proc.kill()
    sys.exit(f"rpcpoll serve --mode {mode} did not start")


def start_other(kind: str, pb_dir: Path, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, str(HERE / "rpc_servers.py"), kind, "--pb-dir", str(pb_dir)]
    return start_ready(command, cpu)


# --------------------------------------------------------------------------- loads


def loadgen_run(
    loadgen: Path,
    target: str,
    inflight: int,
    seconds: float,
    request: bytes,
    reply: bytes,
    seq: bool,
    tmp: Path,
    cpu: int | None,
) -> dict[str, Any]:
    conns, depth = (1, 1) if inflight == 1 else (4, inflight // 4)
    (tmp / "request.bin").write_bytes(request)
    (tmp / "reply.bin").write_bytes(reply)
    env = {
        **os.environ,
        "LOADGEN_REQUEST": str(tmp / "request.bin"),
        "LOADGEN_REPLY": str(tmp / "reply.bin"),
    }
    if seq:
        env["LOADGEN_SEQ_OFFSET"] = str(SEQ_OFFSET)
    command = [str(loadgen), target, str(conns), str(depth), "0", str(seconds), "1"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 60, preexec_fn=pin(cpu)
    )
    if done.returncode != 0:
        sys.exit(f"loadgen against {target} failed: {done.stderr.strip()} {done.stdout.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def grpc_body(size: int) -> bytes:
    import echo_pb2

    message = echo_pb2.EchoRequest(message="hi", payload=b"x" * size).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_run(
    target: str, inflight: int, seconds: float, size: int, tmp: Path, cpu: int | None
) -> dict[str, Any]:
    conns, depth = (1, 1) if inflight == 1 else (4, inflight // 4)
    body, log = tmp / "grpc-body.bin", tmp / "h2load.log"
    body.write_bytes(grpc_body(size))
    log.unlink(missing_ok=True)
    command = [
        "h2load", "-D", f"{seconds:g}", "--warm-up-time", "1", "-c", str(conns),
        "-m", str(depth), "-t", "1", "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "--log-file", str(log), f"http://{target}/echo.EchoService/Echo",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin(cpu)
    )
    found = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", done.stdout)
    failed = re.search(r"(\d+) failed, (\d+) errored", done.stdout)
    if done.returncode != 0 or found is None or (failed and failed.group(1) != "0"):
        sys.exit(f"h2load against {target} failed:\n{done.stdout}\n{done.stderr}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: int(row[0]))
    started = int(rows[0][0]) if rows else 0
    latencies = sorted(int(row[2]) for row in rows if int(row[0]) - started >= 1_000_000)
    latencies = latencies or sorted(int(row[2]) for row in rows)
    return {
        "qps": float(found.group(1)),
        "p50_us": float(latencies[len(latencies) // 2]),
        "p99_us": float(latencies[int(len(latencies) * 0.99)]),
    }


def grpc_python_run(
    target: str, inflight: int, seconds: float, size: int, pb_dir: Path, cpu: int | None
) -> dict[str, Any]:
    procs, concurrency = (1, 1) if inflight == 1 else (2, inflight // 2)
    command = [sys.executable, str(HERE / "grpc_load.py"), target, "--procs", str(procs)]
    command += ["--concurrency", str(concurrency), "--size", str(size)]
    command += ["--seconds", str(seconds), "--pb-dir", str(pb_dir)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, preexec_fn=pin(cpu)
    )
    if done.returncode != 0:
        sys.exit(f"grpc_load against {target} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- clients


def timed_calls(call: Callable[[], Any], threads: int, seconds: float) -> dict[str, float]:
    for _ in range(200):
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


def rpcpoll_client(address: str, size: int, **options: Any) -> tuple[Callable[[], Any], Any]:
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    client = EchoServiceClient(address, timeout=CLIENT_TIMEOUT, **options)
    request = EchoRequest(message="hi", payload=b"x" * size)
    return (lambda: client.echo(request)), client


def raw_socket_client(address: str, request: bytes) -> tuple[Callable[[], Any], Any]:
    """Send the captured frame, read the reply frame: no framework at all."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv_into, buf = sock.recv_into, bytearray(1 << 16)
    view = memoryview(buf)

    def call() -> None:
        sock.sendall(request)
        got = recv_into(buf)
        while got < 4 or got < 4 + int.from_bytes(buf[:4], "big"):
            got += recv_into(view[got:])

    return call, sock


def grpc_client(address: str, size: int) -> tuple[Callable[[], Any], Any]:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    channel = grpc.insecure_channel(address)
    stub = echo_pb2_grpc.EchoServiceStub(channel)
    request = echo_pb2.EchoRequest(message="hi", payload=b"x" * size)
    return (lambda: stub.Echo(request, timeout=CLIENT_TIMEOUT)), channel


# --------------------------------------------------------------------------- the run


def run_rep(
    rep: int,
    args: argparse.Namespace,
    sizes: tuple[int, ...],
    tmp: Path,
    loadgen: Path,
    cpus: tuple[int | None, int | None],
    use_h2load: bool,
) -> dict[tuple[str, ...], dict[str, float]]:
    server_cpu, load_cpu = cpus
    rpcpoll_kinds = [f"rpcpoll-{mode}" for mode in args.modes]
    kinds = ["bare", *rpcpoll_kinds, "grpc-sync"]
    shift = rep % len(kinds)
    kinds = kinds[shift:] + kinds[:shift]
    results: dict[tuple[str, ...], dict[str, float]] = {}
    for size in sizes:
        client_frame = capture_client_frame(size)
        for kind in kinds:
            if kind == "bare":
                proc, target = start_other("bare-msgpack", tmp, server_cpu)
            elif kind == "grpc-sync":
                proc, target = start_other("grpc-sync", tmp, server_cpu)
            else:
                proc, target = start_rpcpoll(kind.removeprefix("rpcpoll-"), server_cpu)
            try:
                for inflight in (1, 128):
                    if kind == "bare":
                        frame = bare_frames(size)
                        check_bare_server(target, frame)
                        r = loadgen_run(
                            loadgen, target, inflight, args.seconds, frame, frame, False, tmp,
                            load_cpu,
                        )  # fmt: skip
                    elif kind == "grpc-sync":
                        if use_h2load:
                            r = h2load_run(target, inflight, args.seconds, size, tmp, load_cpu)
                        else:
                            r = grpc_python_run(target, inflight, args.seconds, size, tmp, load_cpu)
                    else:
                        reply = check_rpcpoll_server(target, client_frame, size)
                        r = loadgen_run(
                            loadgen, target, inflight, args.seconds, client_frame, reply, True,
                            tmp, load_cpu,
                        )  # fmt: skip
                    results[("server", kind, str(size), str(inflight))] = r
                if kind == "grpc-sync":
                    call, handle = grpc_client(target, size)
                    results[("client", "grpcio", str(size))] = timed_calls(call, 1, args.seconds)
                    handle.close()
                elif kind == f"rpcpoll-{args.modes[0]}":
                    call, handle = rpcpoll_client(target, size)
                    results[("client", "rpcpoll", str(size))] = timed_calls(call, 1, args.seconds)
                    handle.close()
                    call, handle = raw_socket_client(target, client_frame)
                    results[("client", "raw", str(size))] = timed_calls(call, 1, args.seconds)
                    handle.close()
                    for name, options in (("pool", {}), ("mux", {"mux": True})):
                        call, handle = rpcpoll_client(target, size, **options)
                        results[("client16", name, str(size))] = timed_calls(call, 16, args.seconds)
                        handle.close()
            finally:
                stop_server(proc)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median of ratios)")
    parser.add_argument(
        "--modes", default="auto", help="rpcpoll server modes, comma-separated (first: default)"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="payload sizes")
    parser.add_argument("--quick", action="store_true", help="1 repetition of 1 s, 128 B only")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.quick:
        args.seconds, args.reps, sizes = 1.0, 1, (128,)
    ncpu = len(os.sched_getaffinity(0))
    cpus = (0, 1) if ncpu >= 2 else (None, None)
    if cpus[1] is not None:
        os.sched_setaffinity(0, {cpus[1]})  # the client measurements: on the load CPU
    use_h2load = shutil.which("h2load") is not None
    loadgen = build_loadgen()
    print(
        f"{ncpu} CPUs; servers on CPU {cpus[0]}, load on CPU {cpus[1]}; {args.seconds:g} s per "
        f"cell (after 1 s of warm-up), {args.reps} repetition(s); Python "
        f"{sys.version.split()[0]}; grpc load: {'h2load' if use_h2load else 'grpc_load.py'}"
    )
    if not use_h2load:
        print("  (no h2load: `apt-get install nghttp2-client`; grpcio's figures are then low)")

    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'idl'}",
             f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(REPO / "idl" / "echo.proto")],
            check=True,
        )  # fmt: skip
        sys.path.insert(0, str(tmp))
        reps = [run_rep(i, args, sizes, tmp, loadgen, cpus, use_h2load) for i in range(args.reps)]
    report(reps, args.modes, sizes)


def report(
    reps: list[dict[tuple[str, ...], dict[str, float]]], modes: list[str], sizes: tuple[int, ...]
) -> None:
    def med(key: tuple[str, ...], field: str) -> float:
        return statistics.median(rep[key][field] for rep in reps)

    def ratio(a: tuple[str, ...], b: tuple[str, ...], field: str) -> float:
        return statistics.median(rep[a][field] / rep[b][field] for rep in reps)

    kinds = ["bare", *(f"rpcpoll-{m}" for m in modes), "grpc-sync"]
    for size in sizes:
        for inflight in (1, 128):
            print(f"\nserver side, {size} B, {inflight} in flight (medians)")
            print(f"  {'server':<16}{'QPS':>10}{'p50 us':>10}{'p99 us':>10}{'QPS/bare':>10}")
            for kind in kinds:
                key = ("server", kind, str(size), str(inflight))
                bare = ("server", "bare", str(size), str(inflight))
                print(
                    f"  {kind:<16}{med(key, 'qps'):>10.0f}{med(key, 'p50_us'):>10.1f}"
                    f"{med(key, 'p99_us'):>10.1f}{ratio(key, bare, 'qps'):>10.3f}"
                )
        print(f"\nclient side, {size} B, one thread, one call at a time (medians)")
        print(f"  {'client -> server':<34}{'calls/s':>10}{'p50 us':>10}{'p99 us':>10}")
        for name, label in (
            ("rpcpoll", f"rpcpoll -> rpcpoll-{modes[0]}"),
            ("raw", f"raw socket -> rpcpoll-{modes[0]}"),
            ("grpcio", "grpcio -> grpc-sync"),
        ):
            key = ("client", name, str(size))
            print(
                f"  {label:<34}{med(key, 'qps'):>10.0f}{med(key, 'p50_us'):>10.1f}"
                f"{med(key, 'p99_us'):>10.1f}"
            )
        for name in ("pool", "mux"):
            key = ("client16", name, str(size))
            print(
                f"  {'16 threads, ' + name:<34}{med(key, 'qps'):>10.0f}{med(key, 'p50_us'):>10.1f}"
                f"{med(key, 'p99_us'):>10.1f}"
            )

    print("\ntargets (median of per-repetition ratios):")
    mode = f"rpcpoll-{modes[0]}"
    for size in sizes:
        s = str(size)
        verdict(
            f"{s} B, server, 128 in flight: {mode} / bare QPS >= 0.5",
            ratio(("server", mode, s, "128"), ("server", "bare", s, "128"), "qps"),
            at_least=0.5,
        )
        verdict(
            f"{s} B, server, 1 in flight: {mode} / bare p50 <= 1.15",
            ratio(("server", mode, s, "1"), ("server", "bare", s, "1"), "p50_us"),
            at_most=1.15,
        )
        verdict(
            f"{s} B, server, 128 in flight: {mode} / grpc-sync QPS (information)",
            ratio(("server", mode, s, "128"), ("server", "grpc-sync", s, "128"), "qps"),
        )
        verdict(
            f"{s} B, client, 1 thread: rpcpoll / grpcio calls/s >= 4",
            ratio(("client", "rpcpoll", s), ("client", "grpcio", s), "qps"),
            at_least=4,
        )
        verdict(
            f"{s} B, client, 1 thread: rpcpoll / raw socket calls/s >= 0.6",
            ratio(("client", "rpcpoll", s), ("client", "raw", s), "qps"),
            at_least=0.6,
        )
        verdict(
            f"{s} B, client, 16 threads: mux / pool calls/s >= 1.5",
            ratio(("client16", "mux", s), ("client16", "pool", s), "qps"),
            at_least=1.5,
        )


def verdict(
    label: str, value: float, at_least: float | None = None, at_most: float | None = None
) -> None:
    if at_least is None and at_most is None:
        print(f"  {label:<62} {value:8.3f}")
        return
    ok = value <= at_most if at_most is not None else value >= (at_least or 0)
    print(f"  {label:<62} {value:8.3f}  {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
