"""`rpcpoll serve --workers 1` against `--workers 2`, in one run.

Each configuration serves the bundled echo service (`--mode auto`, the default, then
`--mode pool`) and is driven by bench/loadgen.c, the C load generator,
replaying a TTHeader echo frame (128 B payload) over CONNS connections x DEPTH pipelined calls.
While the load runs, the script reads /proc to see how the kernel spread the load generator's
connections over the workers (SO_REUSEPORT hashes each connection's 4-tuple once; nothing
rebalances later) and how much CPU each worker used.

CPUs: with 3 or more, the load generator is pinned to the last CPU and the servers to the
others. With 2 nothing is pinned: the load generator (one C thread, about one core's worth at
these rates) competes with the workers, so 2 workers cannot reach twice the QPS of 1.

Run: python bench/bench_workers.py [--seconds S] [--conns N] [--depth N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rpc import frame_files  # noqa: E402
from bench_transport import build_loadgen, pin  # noqa: E402

SERVING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")
READY = re.compile(r"worker \d+ \(pid (?P<pid>\d+)\) ready")
TICKS = os.sysconf("SC_CLK_TCK")


def start(
    workers: int, mode: str, cpus: set[int] | None
) -> tuple[subprocess.Popen[str], str, list[int]]:
    """`rpcpoll serve --workers N`; (process, address, worker pids) once it serves."""
    command = [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0"]
    command += ["--workers", str(workers), "--log-level", "INFO", "--mode", mode]
    affinity = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=affinity)
    assert proc.stderr is not None
    pids: list[int] = []
    for _ in range(100):
        line = proc.stderr.readline()
        if not line:
            break
        ready = READY.search(line)
        if ready:
            pids.append(int(ready["pid"]))
        serving = SERVING.search(line)
        if serving:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain the log
            return proc, serving["address"], pids or [proc.pid]
    proc.kill()
    proc.wait()
    sys.exit(f"rpcpoll serve --workers {workers} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def established_on(port: int) -> set[int]:
    """Inodes of the established TCP sockets whose local port is `port` (the server ends)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def connections_per_worker(pids: list[int], port: int) -> list[int]:
    """How many of the server ends of established connections on `port` each pid holds."""
    ours = established_on(port)
    counts = []
    for pid in pids:
        held = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in ours:
                held += 1
        counts.append(held)
    return counts


def measure(
    workers: int,
    mode: str,
    args: argparse.Namespace,
    files: tuple[Path, Path],
    loadgen: Path,
    cpus: tuple[set[int] | None, int | None],
) -> dict[str, Any]:
    proc, address, pids = start(workers, mode, cpus[0])
    try:
        port = int(address.rsplit(":", 1)[1])
        command = [str(loadgen), address, str(args.conns), str(args.depth), "0", str(args.seconds)]
        env = {**os.environ, "LOADGEN_REQUEST": str(files[0]), "LOADGEN_REPLY": str(files[1])}
        cpu_before = [cpu_seconds(pid) for pid in pids]
        load = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pin(cpus[1])
        )
        time.sleep(0.5 + min(1.0, args.seconds / 2))  # past the load generator's warm-up
        spread = connections_per_worker(pids, port)
        out, _ = load.communicate(timeout=args.seconds + 60)
        cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    finally:
        stop(proc)
    if load.returncode != 0:
        sys.exit(f"loadgen failed against --workers {workers}: {out.strip()}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result.update(spread=spread, cpu=cpu)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--conns", type=int, default=16, help="load generator connections")
    parser.add_argument("--depth", type=int, default=8, help="pipelined calls per connection")
    args = parser.parse_args()
    ncpu = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) >= 3:
        cpus: tuple[set[int] | None, int | None] = (set(allowed[:-1]), allowed[-1])
        where = f"servers on CPUs {sorted(allowed[:-1])}, load generator on CPU {allowed[-1]}"
    else:
        cpus = (None, None)
        where = "nothing pinned: the load generator competes with the workers for the CPUs"
    loadgen = build_loadgen()
    print(f"os.cpu_count() = {ncpu} ({len(allowed)} usable); {where}")
    print(
        f"load: {args.conns} connections x {args.depth} pipelined = "
        f"{args.conns * args.depth} calls in flight, 128 B echo, {args.seconds:g} s per run; "
        f"Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        files = frame_files(Path(tmp), 128)["ttheader"]
        results = {
            (mode, workers): measure(workers, mode, args, files, loadgen, cpus)
            for mode in ("auto", "pool")
            for workers in (1, 2)
        }
    print(
        f"\n  {'mode':<10}{'workers':>8}{'QPS':>10}{'p50 us':>10}{'p99 us':>10}"
        f"  {'conns per worker':<18}{'CPU s per worker':<20}"
    )
    for (mode, workers), r in results.items():
        cpu = " ".join(f"{c:.2f}" for c in r["cpu"])
        spread = " ".join(str(n) for n in r["spread"])
        print(
            f"  {mode:<10}{workers:>8}{r['qps']:>10.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}"
            f"  {spread:<18}{cpu:<20}"
        )
    print()
    for mode in ("auto", "pool"):
        ratio = results[(mode, 2)]["qps"] / results[(mode, 1)]["qps"]
        print(f"  {mode}: QPS workers 2 / workers 1 = {ratio:.2f}")
    if len(allowed) < 3:
        print(
            f"\n  Note: {len(allowed)} usable CPU(s) shared by the workers and the load generator;"
            " the ratio is a floor, not what 2 workers give on 2 free cores."
        )


if __name__ == "__main__":
    main()
