"""Prometheus metrics middleware: `ServerMetrics` and `ClientMetrics` (sync and async faces).

Names follow grpc-prometheus with an `rpcpoll_` prefix (docs/operating.md, Metrics), for a
server (`rpcpoll_server_...`) and a client (`rpcpoll_client_...`):

    ..._started_total            counter    rpc_type, rpc_service, rpc_method
    ..._handled_total            counter    ... and rpc_code ("OK", "NOT_FOUND", ...)
    ..._handling_seconds         histogram  ... and rpc_code (DEFAULT_BUCKETS)
    ..._calls_in_flight          gauge      rpc_type, rpc_service, rpc_method
    ..._msg_received_total       counter    the same, streaming kinds only
    ..._msg_sent_total           counter    the same, streaming kinds only
    rpcpoll_server_connections   gauge      open connections (`track_connections(server)`)

Theory of operation. prometheus_client's metric objects take a lock per update, and the five
updates a call needs cost more than an echo call itself (measured: ~1.8 us against ~3.2 us).
So calls are counted in plain per-thread tables instead (`_Recorder`): each thread writes only
its own counters, lock-free, and the numbers are summed when they are read. A call costs one
counter increment when it starts and, when it ends, one bucket increment and one addition to
the sum; handled counts and in-flight gauges are derived from those (handled = the histogram's
count, in flight = started - handled).

How the numbers reach Prometheus:

- one process: a collector registered in `registry` sums the tables at each scrape (exact);
- prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, as `rpcpoll serve
  --workers N` does for its workers): a thread adds what changed since its last look to
  prometheus_client metrics every `flush_interval` seconds (their values live in the shared
  directory, where the supervisor's MultiProcessCollector reads them), and once more on
  `close()`. A scrape then lags the calls by at most `flush_interval`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rpcpoll.observability.metrics needs prometheus_client: pip install 'rpcpoll[metrics]'"
    ) from exc

from ..middleware import Endpoint, Middleware, status_of
from ..protocol.status import StatusCode
from ._calls import call_status, observe_call, observe_call_async

__all__ = ["DEFAULT_BUCKETS", "LABELS", "ClientMetrics", "ServerMetrics"]

#: Latency buckets (seconds): grpc-prometheus's defaults (Prometheus's DefBuckets, 5 ms to
#: 10 s) below which four sub-millisecond ones are added, because rpcpoll calls commonly take
#: tens to hundreds of microseconds and would all land in the first default bucket.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: The labels of every per-method metric; histograms and handled counters add `rpc_code`.
#: Prefixed (as grpc-prometheus prefixes `grpc_`) so that they do not collide with the target
#: labels Prometheus adds, such as `service` from Kubernetes discovery.
LABELS = ("rpc_type", "rpc_service", "rpc_method")
CODE_LABEL = "rpc_code"

_perf = time.perf_counter
_Key = tuple[str, str]  # (service, method)


class _Cell:
    """One method's counts in one thread's table (or a sum of tables).

    `codes` maps a status to its histogram: a list of per-bucket counts (not cumulative, the
    last bucket +Inf) followed by the sum of the durations. `ok` is `codes[OK]`, at hand."""

    __slots__ = ("codes", "kind", "ok", "received", "sent", "started")

    def __init__(self, kind: str, buckets: int) -> None:
        self.kind = kind
        self.started = 0
        self.received = 0
        self.sent = 0
        self.ok: list[float] = [0] * buckets + [0.0]
        self.codes: dict[StatusCode, list[float]] = {StatusCode.OK: self.ok}

    def histogram(self, code: StatusCode) -> list[float]:
        counts = self.codes.get(code)
        if counts is None:
            counts = self.codes[code] = [0] * (len(self.ok) - 1) + [0.0]
        return counts

    def add(self, other: _Cell) -> None:
        self.started += other.started
        self.received += other.received
        self.sent += other.sent
        for code, counts in list(other.codes.items()):
            mine = self.histogram(code)
            for i, value in enumerate(counts):
                mine[i] += value


class _ThreadTable(threading.local):
    """Each thread's own table of cells, made on the thread's first call."""

    def __init__(self, recorder: _Recorder) -> None:
        self.cells: dict[_Key, _Cell] = {}
        recorder.adopt(self.cells)


class _Recorder:
    """Per-thread tables of `_Cell`s, and their sum for readers (module docs)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # bucket upper bounds, +Inf last
        self._lock = threading.Lock()  # guards the table list and the retired sum
        self._tables: list[tuple[threading.Thread, dict[_Key, _Cell]]] = []
        self._retired: dict[_Key, _Cell] = {}  # the counts of threads that ended
        self.local = _ThreadTable(self)

    def adopt(self, cells: dict[_Key, _Cell]) -> None:
        with self._lock:
            self._retire_ended()
            self._tables.append((threading.current_thread(), cells))

    def cell(self, context: Any) -> _Cell:
        """The current thread's cell for the context's method (made if missing)."""
        cells = self.local.cells
        key = (context.service, context.method)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(context.kind, len(self.bounds))
        return cell

    def totals(self) -> dict[_Key, _Cell]:
        """The sum of every thread's cells, per method (the threads keep counting)."""
        with self._lock:
            self._retire_ended()
            sources = [self._retired, *(cells for _thread, cells in self._tables)]
            totals: dict[_Key, _Cell] = {}
            for cells in sources:
                # list(): a thread may add a method meanwhile; the copy is made under the GIL.
                for key, cell in list(cells.items()):
                    total = totals.get(key)
                    if total is None:
                        total = totals[key] = _Cell(cell.kind, len(self.bounds))
                    total.add(cell)
        return totals

    def _retire_ended(self) -> None:
        """Fold the tables of ended threads into `_retired` (with the lock held): worker
        pools start and end threads, and the table list must not grow with them."""
        live = []
        for thread, cells in self._tables:
            if thread.is_alive():
                live.append((thread, cells))
                continue
            for key, cell in cells.items():
                retired = self._retired.get(key)
                if retired is None:
                    retired = self._retired[key] = _Cell(cell.kind, len(self.bounds))
                retired.add(cell)
        self._tables = live


class _Metrics(Middleware):
    """The middleware of `ServerMetrics` and `ClientMetrics` (module docs)."""

    side: ClassVar[str]
    #: whether requests are the messages this side receives (a server) or sends (a client)
    _requests_received: ClassVar[bool]

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        multiprocess: bool | None = None,
        flush_interval: float = 1.0,
    ) -> None:
        """`registry`: where the metrics are registered (None: nowhere, e.g. to collect them
        yourself with `collect()`). `buckets`: latency bucket upper bounds in seconds.
        `multiprocess`: count through prometheus_client's multiprocess files (default: when
        PROMETHEUS_MULTIPROC_DIR is set), flushed every `flush_interval` seconds."""
        bounds = tuple(sorted(float(bound) for bound in buckets))
        if not bounds or bounds[-1] != math.inf:
            bounds += (math.inf,)
        self.prefix = f"rpcpoll_{self.side}"
        self._bounds = bounds
        self._first = bounds[0]
        self._recorder = _Recorder(bounds)
        self._table = self._recorder.local
        self._connections: Callable[[], int] | None = None
        self._registry = registry
        self._collector: _Collector | None = None
        self._flusher: _Flusher | None = None
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if multiprocess:
            self._flusher = _Flusher(self, flush_interval)
        else:
            self._collector = _Collector(self)
            if registry is not None:
                registry.register(self._collector)

    # ------------------------------------------------------------------ the middleware

    def __call__(self, request: Any, context: Any, next: Endpoint) -> Any:
        if context.kind != "unary":
            return observe_call(self._stream(context), request, context, next)
        try:
            cell = self._table.cells[context.service, context.method]
        except KeyError:
            cell = self._recorder.cell(context)
        cell.started += 1
        started = _perf()
        try:
            response = next(request, context)
        except BaseException as exc:
            elapsed = _perf() - started
            counts = cell.histogram(status_of(exc))
            counts[bisect_left(self._bounds, elapsed)] += 1
            counts[-1] += elapsed
            raise
        elapsed = _perf() - started
        ok = cell.ok
        # Most calls fit the first bucket: one comparison instead of a bisection.
        ok[0 if elapsed <= self._first else bisect_left(self._bounds, elapsed)] += 1
        ok[-1] += elapsed
        return response

    async def call_async(self, request: Any, context: Any, next: Endpoint) -> Any:
        if context.kind != "unary":
            return await observe_call_async(self._stream(context), request, context, next)
        try:
            cell = self._table.cells[context.service, context.method]
        except KeyError:
            cell = self._recorder.cell(context)
        cell.started += 1
        started = _perf()
        try:
            response = await next(request, context)
        except BaseException as exc:
            elapsed = _perf() - started
            counts = cell.histogram(status_of(exc))
            counts[bisect_left(self._bounds, elapsed)] += 1
            counts[-1] += elapsed
            raise
        elapsed = _perf() - started
        ok = cell.ok
        # Most calls fit the first bucket: one comparison instead of a bisection.
        ok[0 if elapsed <= self._first else bisect_left(self._bounds, elapsed)] += 1
        ok[-1] += elapsed
        return response

    def _stream(self, context: Any) -> _StreamCall:
        self._recorder.cell(context).started += 1
        return _StreamCall(self._recorder, context, self._requests_received)

    # ------------------------------------------------------------------ reading

    def track_connections(self, server: Any) -> None:
        """Report `len(server.connections())` (a `Server`) as `rpcpoll_server_connections`."""
        connections = server.connections
        self._connections = lambda: len(connections())

    def collect(self) -> list[Metric]:
        """The metric families as they are now (what a scrape of `registry` shows)."""
        return list(_families(self, self._recorder.totals()))

    def flush(self) -> None:
        """Multiprocess mode: write what changed to the shared files now."""
        if self._flusher is not None:
            self._flusher.flush()

    def close(self) -> None:
        """Stop reporting: unregister from `registry` (one process) or flush a last time
        and stop the flushing thread (multiprocess)."""
        if self._collector is not None and self._registry is not None:
            self._registry.unregister(self._collector)
            self._registry = None
        if self._flusher is not None:
            self._flusher.close()


class ServerMetrics(_Metrics):
    """Prometheus metrics of the calls a server handles (module docs); install it with
    `Server(middleware=[ServerMetrics()])` and call `track_connections(server)`."""

    side = "server"
    _requests_received = True


class ClientMetrics(_Metrics):
    """Prometheus metrics of the calls a client makes (module docs); install it with
    `middleware=[ClientMetrics()]` on a generated client or a channel."""

    side = "client"
    _requests_received = False


class _StreamCall:
    """One streaming call: its messages and its end are counted in the table of the thread
    that sees them (a stream may be consumed on another thread than the one that opened it)."""

    __slots__ = ("_context", "_received", "_recorder", "_started")

    def __init__(self, recorder: _Recorder, context: Any, requests_received: bool) -> None:
        self._recorder = recorder
        self._context = context
        self._received = requests_received
        self._started = _perf()

    def request(self, message: Any) -> None:
        cell = self._recorder.cell(self._context)
        if self._received:
            cell.received += 1
        else:
            cell.sent += 1

    def response(self, message: Any) -> None:
        cell = self._recorder.cell(self._context)
        if self._received:
            cell.sent += 1
        else:
            cell.received += 1

    def end(self, error: BaseException | None) -> None:
        elapsed = _perf() - self._started
        counts = self._recorder.cell(self._context).histogram(call_status(error))
        counts[bisect_left(self._recorder.bounds, elapsed)] += 1
        counts[-1] += elapsed


# ---------------------------------------------------------------------- exposition


def _help(side: str) -> dict[str, str]:
    where = "on the server" if side == "server" else "by the client"
    return {
        "started": f"RPCs started {where} (streams: opened).",
        "handled": f"RPCs completed {where}, by status code.",
        "handling_seconds": f"Latency of RPCs {where} until their status was known, seconds.",
        "calls_in_flight": f"RPCs started {where} and not yet completed.",
        "msg_received": f"Stream messages received {where} (streaming RPCs only).",
        "msg_sent": f"Stream messages sent {where} (streaming RPCs only).",
        "connections": "Connections open on the server.",
    }


def _families(metrics: _Metrics, totals: dict[_Key, _Cell]) -> Iterator[Metric]:
    prefix, text, bounds = metrics.prefix, _help(metrics.side), metrics._bounds
    labels, coded = list(LABELS), [*LABELS, CODE_LABEL]
    started = CounterMetricFamily(f"{prefix}_started", text["started"], labels=labels)
    handled = CounterMetricFamily(f"{prefix}_handled", text["handled"], labels=coded)
    seconds = HistogramMetricFamily(
        f"{prefix}_handling_seconds", text["handling_seconds"], labels=coded
    )
    in_flight = GaugeMetricFamily(
        f"{prefix}_calls_in_flight", text["calls_in_flight"], labels=labels
    )
    received = CounterMetricFamily(f"{prefix}_msg_received", text["msg_received"], labels=labels)
    sent = CounterMetricFamily(f"{prefix}_msg_sent", text["msg_sent"], labels=labels)
    les = [floatToGoString(bound) for bound in bounds]  # type: ignore[no-untyped-call]
    for (service, method), total in sorted(totals.items()):
        values = [total.kind, service, method]
        started.add_metric(values, total.started)
        finished = 0
        for code, counts in sorted(total.codes.items()):
            cumulative, buckets = 0, []
            for le, count in zip(les, counts, strict=False):  # counts end with the sum
                cumulative += int(count)
                buckets.append((le, cumulative))
            if code is not StatusCode.OK or cumulative:
                handled.add_metric([*values, code.name], cumulative)
                seconds.add_metric([*values, code.name], buckets, counts[-1])
            finished += cumulative
        # A reader may see a call's end before its start (they can be counted on different
        # threads, read one after the other): never report fewer than none in flight.
        in_flight.add_metric(values, max(0, total.started - finished))
        if total.kind != "unary":
            received.add_metric(values, total.received)
            sent.add_metric(values, total.sent)
    yield from (started, handled, seconds, in_flight, received, sent)
    if metrics._connections is not None:
        yield GaugeMetricFamily(
            f"{prefix}_connections", text["connections"], value=metrics._connections()
        )


class _Collector:
    """Registered in a prometheus_client registry: the sums at each scrape."""

    def __init__(self, metrics: _Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        # Names only, so that registering checks clashes without reading anything.
        return list(_families(self._metrics, {}))

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics.collect())


class _Flusher:
    """Multiprocess mode: what changed since the last flush is added to prometheus_client
    metrics (not registered anywhere: their values live in PROMETHEUS_MULTIPROC_DIR), every
    `interval` seconds on a daemon thread and on `close()`."""

    def __init__(self, metrics: _Metrics, interval: float) -> None:
        prefix, text, bounds = metrics.prefix, _help(metrics.side), metrics._bounds
        coded = (*LABELS, CODE_LABEL)
        self._metrics = metrics
        self._started = Counter(f"{prefix}_started", text["started"], LABELS, registry=None)
        self._handled = Counter(f"{prefix}_handled", text["handled"], coded, registry=None)
        self._seconds = Histogram(
            f"{prefix}_handling_seconds", text["handling_seconds"], coded,
            buckets=bounds, registry=None,
        )  # fmt: skip
        # livesum: the supervisor adds up the workers alive (mark_process_dead drops the rest).
        self._in_flight = Gauge(
            f"{prefix}_calls_in_flight", text["calls_in_flight"], LABELS,
            registry=None, multiprocess_mode="livesum",
        )  # fmt: skip
        self._received = Counter(
            f"{prefix}_msg_received", text["msg_received"], LABELS, registry=None
        )
        self._sent = Counter(f"{prefix}_msg_sent", text["msg_sent"], LABELS, registry=None)
        self._connections = Gauge(
            f"{prefix}_connections", text["connections"],
            registry=None, multiprocess_mode="livesum",
        )  # fmt: skip
        self._last: dict[_Key, _Cell] = {}
        self._lock = threading.Lock()  # one flush at a time (the thread's and close()'s)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="rpcpoll-metrics-flush", daemon=True
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            totals = self._metrics._recorder.totals()
            for key, total in totals.items():
                self._flush_method(key, total, self._last.get(key))
            self._last = totals
            if self._metrics._connections is not None:
                self._connections.set(self._metrics._connections())

    def _flush_method(self, key: _Key, total: _Cell, last: _Cell | None) -> None:
        values = (total.kind, *key)
        if last is None:
            last = _Cell(total.kind, len(total.ok) - 1)
        if total.started > last.started:
            self._started.labels(*values).inc(total.started - last.started)
        finished = 0
        for code, counts in total.codes.items():
            before = last.histogram(code)
            finished += int(sum(counts[:-1]))
            deltas = [int(now - then) for now, then in zip(counts[:-1], before[:-1], strict=True)]
            if not any(deltas):
                continue
            coded = (*values, code.name)
            self._handled.labels(*coded).inc(sum(deltas))
            _add_to_histogram(self._seconds.labels(*coded), deltas, counts[-1] - before[-1])
        self._in_flight.labels(*values).set(max(0, total.started - finished))
        if total.received > last.received:
            self._received.labels(*values).inc(total.received - last.received)
        if total.sent > last.sent:
            self._sent.labels(*values).inc(total.sent - last.sent)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()
        self._connections.set(0)


def _add_to_histogram(child: Any, bucket_counts: list[int], total: float) -> None:
    """Add many observations to a prometheus_client histogram child at once.

    prometheus_client has no public call for this (only `observe`, one value at a time), so
    this adds to the child's values directly: `_buckets` (per-bucket counts, not cumulative,
    in the order of the bounds, +Inf last) and `_sum`, as `observe` itself does. Its layout
    has not changed since prometheus_client 0.1; the multiprocess tests would see it change.
    """
    buckets = child._buckets
    if len(buckets) != len(bucket_counts):
        raise RuntimeError("prometheus_client's histogram layout changed: cannot flush")
    for value, count in zip(buckets, bucket_counts, strict=True):
        if count:
            value.inc(count)
    child._sum.inc(total)
