"""What the observability middleware costs a server: the 128-in-flight echo with and without it.

Every variant is `rpcpoll serve bench_middleware:Echo` (the bundled echo handler) pinned to
CPU 0, loaded by bench/loadgen.c on CPU 1 replaying a request frame captured from the
generated client (4 connections x 32 pipelined calls, 128 B payload; every reply checked),
as in bench/bench_rpc.py. In each of `--reps` repetitions every variant runs right next to a
run without middleware (the pair's order alternating between repetitions), and its ratio is
taken to that neighbour, so a burst of other work on the machine spoils one pair, not a whole
repetition; the medians of the ratios are reported.

- none: no middleware (the server's hot path as without this feature);
- metrics: `--metrics-port 0` (ServerMetrics, with its /metrics endpoint idle);
- tracing-api: `--tracing` with the OpenTelemetry API and no SDK (no tracer provider set):
  the middleware's own cost (extract, a non-recording span, context attach/detach);
- tracing-sdk: `--tracing` with the SDK's TracerProvider and no span processor (every span
  sampled and recorded, then dropped: the no-op exporter case without the export thread);
- tracing-batch: the SDK with a BatchSpanProcessor and an exporter that drops the spans;
- tracing-1%: the SDK sampling 1 % of traces (ParentBased(TraceIdRatioBased(0.01))).

    python bench/bench_middleware.py [--seconds 2] [--reps 3] [--variants none,metrics,...]
"""

from __future__ import annotations

import os
import sys

from rpcpoll.examples.echo import EchoHandler

# The serving process imports this module for its handler; BENCH_TRACER (set per variant)
# gives it an OpenTelemetry SDK tracer provider before the server starts.
_TRACER = os.environ.get("BENCH_TRACER")
if _TRACER:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class _DropSpans(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if _TRACER == "ratio":
        _provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    else:
        _provider = TracerProvider()
    if _TRACER == "batch":
        _provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    trace.set_tracer_provider(_provider)


class Echo(EchoHandler):
    """The bundled echo handler, served from this module (so BENCH_TRACER applies)."""


# (name, `rpcpoll serve` flags, BENCH_TRACER)
VARIANTS: list[tuple[str, list[str], str | None]] = [
    ("none", [], None),
    ("metrics", ["--metrics-port", "0"], None),
    ("tracing-api", ["--tracing"], None),
    ("tracing-sdk", ["--tracing"], "sdk"),
    ("tracing-batch", ["--tracing"], "batch"),
    ("tracing-1%", ["--tracing"], "ratio"),
]
TARGETS = {"metrics": 0.85, "tracing-sdk": 0.70, "tracing-batch": 0.70}  # issue 15


def main() -> None:
    import argparse
    import statistics
    import subprocess
    import tempfile
    import threading
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from bench_rpc import ADDRESS, capture_client_frame, check_rpcpoll_server, loadgen_run
    from bench_transport import build_loadgen, pin, stop_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default=",".join(name for name, _, _ in VARIANTS))
    args = parser.parse_args()
    chosen = [v for v in VARIANTS if v[0] in args.variants.split(",")]
    if chosen[0][0] != "none":
        sys.exit("--variants must start with none (the reference)")
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    server_cpu, load_cpu = (0, 1) if two_cpus else (None, None)
    if two_cpus:
        os.sched_setaffinity(0, {1})
    loadgen = build_loadgen()
    frame = capture_client_frame(128)

    def start(flags: list[str], tracer: str | None) -> tuple[subprocess.Popen[str], str]:
        command = [sys.executable, "-m", "rpcpoll", "serve", "bench_middleware:Echo",
                   "--address", "127.0.0.1:0", *flags]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("BENCH_TRACER", None)
        if tracer:
            env["BENCH_TRACER"] = tracer
        proc = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=pin(server_cpu)
        )
        assert proc.stderr is not None
        for _ in range(50):
            match = ADDRESS.search(proc.stderr.readline())
            if match:
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                return proc, match["address"]
        proc.kill()
        sys.exit(f"rpcpoll serve {' '.join(flags)} did not start")

    print(
        f"Python {sys.version.split()[0]}; 128 in flight (4 x 32), 128 B echo; {args.seconds:g} s"
        f" per cell, {args.reps} repetition(s); server CPU {server_cpu}, load CPU {load_cpu}"
    )
    pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-middleware-") as tmp_name:
        tmp = Path(tmp_name)

        def measure(flags: list[str], tracer: str | None) -> dict[str, float]:
            proc, target = start(flags, tracer)
            try:
                reply = check_rpcpoll_server(target, frame, 128)
                return loadgen_run(
                    loadgen, target, 128, args.seconds, frame, reply, True, tmp, load_cpu
                )
            finally:
                stop_server(proc)

        reference = chosen[0]
        for rep in range(args.reps):
            line = []
            for name, flags, tracer in chosen[1:]:
                if rep % 2 == 0:
                    none, measured = measure(*reference[1:]), measure(flags, tracer)
                else:
                    measured, none = measure(flags, tracer), measure(*reference[1:])
                pairs.setdefault(name, []).append((measured, none))
                line.append(f"{name} {measured['qps']:,.0f}/{none['qps']:,.0f}")
            print(f"  rep {rep + 1} (calls/s with/without): " + ", ".join(line))

    print(f"\n  {'variant':<16}{'calls/s':>10}{'p50 us':>9}{'p99 us':>9}{'vs none':>9}  target")
    nones = [none for runs in pairs.values() for _, none in runs]
    print(
        f"  {'none':<16}{statistics.median(n['qps'] for n in nones):>10,.0f}"
        f"{statistics.median(n['p50_us'] for n in nones):>9.1f}"
        f"{statistics.median(n['p99_us'] for n in nones):>9.1f}{1.0:>9.3f}"
    )
    for name, runs in pairs.items():
        qps = statistics.median(m["qps"] for m, _ in runs)
        p50 = statistics.median(m["p50_us"] for m, _ in runs)
        p99 = statistics.median(m["p99_us"] for m, _ in runs)
        ratio = statistics.median(m["qps"] / n["qps"] for m, n in runs)
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            met = "met" if ratio >= target else "NOT met"
            verdict = f">= {target:.2f} (overhead <= {1 - target:.0%}): {met}"
        print(f"  {name:<16}{qps:>10,.0f}{p50:>9.1f}{p99:>9.1f}{ratio:>9.3f}  {verdict}")


if __name__ == "__main__":
    main()
