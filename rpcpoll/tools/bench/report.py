"""`rpcpoll bench`'s summary: the load processes' results merged, as text or JSON.

Latencies are kept per microsecond (a count per distinct value), so percentiles are exact to
the microsecond whatever the run's length.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .worker import Result

__all__ = ["SATURATED_CPU", "Summary", "histogram", "percentile", "render_text", "summarize"]

#: A load process using more than this share of one core is the bottleneck (or close to it).
SATURATED_CPU = 0.9
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_BAR = 40


@dataclass
class Summary:
    method: str
    address: str
    ok: int
    errors: dict[str, int]
    seconds: float
    latency_us: dict[int, int]
    processes: int
    connections: int
    concurrency: int
    cpu: list[float]  # per process: CPU seconds / wall seconds
    messages: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def saturated(self) -> bool:
        return any(share >= SATURATED_CPU for share in self.cpu)

    def to_json(self) -> dict[str, Any]:
        counts = self.latency_us
        total = sum(counts.values())
        latency: dict[str, float | None] = {"min": None, "mean": None, "max": None}
        if total:
            latency["min"] = min(counts) / 1000
            latency["mean"] = sum(us * n for us, n in counts.items()) / total / 1000
            latency["max"] = max(counts) / 1000
        for p in PERCENTILES:
            value = percentile(counts, p)
            latency[f"p{p:g}"] = None if value is None else value / 1000
        return {
            "method": self.method,
            "address": self.address,
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "seconds": round(self.seconds, 6),
            "qps": round(self.qps, 1),
            "latency_ms": latency,
            "histogram": [
                {"le_ms": edge / 1000, "count": count} for edge, count in histogram(counts)
            ],
            "client": {
                "processes": self.processes,
                "connections": self.connections,
                "concurrency": self.concurrency,
                "cpu_per_process": [round(share, 3) for share in self.cpu],
                "saturated": self.saturated,
            },
            "messages": self.messages,
        }


def summarize(
    results: Sequence[Result],
    *,
    method: str,
    address: str,
    connections: int,
    concurrency: int,
) -> Summary:
    ok = sum(result.ok for result in results)
    errors: dict[str, int] = {}
    latency: dict[int, int] = {}
    for result in results:
        for name, count in result.errors.items():
            errors[name] = errors.get(name, 0) + count
        for us, count in result.latency_us.items():
            latency[us] = latency.get(us, 0) + count
    started = min((r.started_ns for r in results), default=0)
    ended = max((r.ended_ns for r in results), default=0)
    cpu = [r.cpu_seconds / max(1e-9, (r.ended_ns - r.started_ns) / 1e9) for r in results]
    messages = sorted({message for result in results for message in result.messages})
    return Summary(
        method, address, ok, errors, (ended - started) / 1e9, latency, len(results),
        connections, concurrency, cpu, messages,
    )  # fmt: skip


def percentile(counts: dict[int, int], p: float) -> int | None:
    """The smallest latency (µs) at or below which p percent of the calls fall."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(total * p / 100))
    seen = 0
    for us in sorted(counts):
        seen += counts[us]
        if seen >= rank:
            return us
    return max(counts)


def histogram(counts: dict[int, int], buckets: int = 10) -> list[tuple[float, int]]:
    """(upper edge in µs, calls) for `buckets` log-spaced buckets from the fastest call to
    the slowest (latencies are long-tailed: linear buckets would put almost all in one)."""
    if not counts:
        return []
    low, high = max(1, min(counts)), max(1, max(counts))
    if high <= low:
        return [(float(high), sum(counts.values()))]
    ratio = (high / low) ** (1 / buckets)
    edges = [low * ratio ** (i + 1) for i in range(buckets)]
    edges[-1] = float(high)
    filled = [0] * buckets
    for us, count in counts.items():
        filled[min(buckets - 1, bisect.bisect_left(edges, us))] += count
    return list(zip(edges, filled, strict=True))


def render_text(summary: Summary, bar: str = "#") -> str:
    """The human summary (what ghz prints, plus the client's own load)."""
    lines = [f"Summary of {summary.method} at {summary.address}:"]
    error_count = sum(summary.errors.values())
    lines.append(f"  Calls:        {summary.calls:,} ({summary.ok:,} OK, {error_count:,} errors)")
    lines.append(f"  Total:        {summary.seconds:.2f} s")
    lines.append(f"  Requests/sec: {summary.qps:,.1f}")
    counts = summary.latency_us
    total = sum(counts.values())
    if total:
        mean = sum(us * n for us, n in counts.items()) / total
        lines.append(
            f"  Latency:      fastest {_ms(min(counts))}, average {_ms(mean)},"
            f" slowest {_ms(max(counts))}"
        )
        lines += ["", "Latency distribution:"]
        for p in PERCENTILES:
            value = percentile(counts, p)
            lines.append(f"  p{p:<5g} {_ms(value or 0):>12}")
        lines += ["", "Latency histogram (ms):"]
        rows = histogram(counts)
        most = max(count for _edge, count in rows) or 1
        for edge, count in rows:
            width = round(_BAR * count / most)
            lines.append(f"  {edge / 1000:10.3f} [{count:>9,}] |{bar * width}")
    lines += ["", "Status codes:"]
    lines.append(f"  {'OK':<32} {summary.ok:>12,}")
    for name, count in sorted(summary.errors.items(), key=lambda item: -item[1]):
        lines.append(f"  {name:<32} {count:>12,}")
    for message in summary.messages:
        lines.append(f"  ({message})")
    cpu = ", ".join(f"{share:.0%}" for share in summary.cpu)
    lines += [
        "",
        f"Client: {summary.processes} process(es), {summary.connections} connection(s),"
        f" {summary.concurrency} calls in flight; CPU per process: {cpu} of a core",
    ]
    if summary.saturated:
        lines.append(saturation_warning(summary))
    return "\n".join(lines)


def saturation_warning(summary: Summary) -> str:
    busiest = max(summary.cpu, default=0.0)
    return (
        f"WARNING: rpcpoll bench was saturated (a load process used {busiest:.0%} of a core):"
        " these figures may measure the client, not the server; add processes with -j"
        " if cores are free"
    )


def _ms(us: float) -> str:
    return f"{us / 1000:.3f} ms"
