"""What `rpcpoll serve` builds from `--metrics-port`, `--tracing` and `--access-log`.

- `ServeObservability`: a serving process's middleware list (tracing outermost, so that the
  span is current for the others, then metrics, then the access log), the open-connections
  gauge, and the /metrics endpoint of a single process.
- `MetricsEndpoint`: /metrics over HTTP (prometheus_client's server on a daemon thread).
- `WorkersMetrics`: the supervisor's side of `--workers N` with metrics: a temporary
  PROMETHEUS_MULTIPROC_DIR given to every worker (each writes its metrics there: see
  rpcpoll/observability/metrics.py), read by a MultiProcessCollector for the supervisor's
  endpoint, a dead worker's live gauges dropped (`worker_exited`), removed on `close()`.

Nothing here imports prometheus_client or OpenTelemetry unless the flag that needs it is on;
a missing package raises ImportError naming the extra to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

__all__ = [
    "MULTIPROC_ENV",
    "MetricsEndpoint",
    "ServeObservability",
    "WorkersMetrics",
    "check_packages",
]

log = logging.getLogger("rpcpoll.server")

#: prometheus_client's switch to multiprocess mode (read when it is first imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsEndpoint:
    """Serve `registry` (default: prometheus_client's) at http://ADDRESS:PORT/metrics until
    `close()`. Port 0 picks a free port (`port` says which). Raises OSError if it cannot
    listen."""

    def __init__(self, address: str, port: int, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, start_http_server

        self._httpd, self._thread = start_http_server(port, address, registry or REGISTRY)
        self.address = address
        self.port: int = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class WorkersMetrics:
    """The supervisor's side of `--workers N --metrics-port P` (module docs): the shared
    directory and the endpoint serving what every worker wrote there. Raises OSError when
    the endpoint cannot listen (the directory is then removed)."""

    def __init__(self, address: str, port: int) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = tempfile.mkdtemp(prefix="rpcpoll-metrics-")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.path)  # type: ignore[no-untyped-call]
        try:
            self.endpoint = MetricsEndpoint(address, port, registry)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        log.info("metrics on %s (every worker's)", self.endpoint.url)

    def environment(self) -> dict[str, str]:
        """The workers' environment: this process's, with PROMETHEUS_MULTIPROC_DIR set (an
        inherited value is replaced: the directory must start empty and be ours to remove)."""
        return {**os.environ, MULTIPROC_ENV: self.path}

    def worker_exited(self, pid: int) -> None:
        """Drop the live gauges (in flight, connections) of a worker that exited; its counters
        and histograms stay, so totals never go down when a worker restarts."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """After the workers exited: stop the endpoint, remove the directory."""
        self.endpoint.close()
        shutil.rmtree(self.path, ignore_errors=True)


def check_packages(*, metrics: bool, tracing: bool) -> None:
    """Import what the flags need now (ImportError naming the extra), before anything runs."""
    if metrics:
        from . import metrics as _metrics  # noqa: F401
    if tracing:
        from . import tracing as _tracing  # noqa: F401


class ServeObservability:
    """A serving process's observability, from the `rpcpoll serve` flags (module docs)."""

    def __init__(self, *, metrics: bool, tracing: bool, access_log: bool) -> None:
        self.metrics: Any = None  # a ServerMetrics
        self._tracing = tracing
        self._middleware: list[Any] = []
        if tracing:
            from .tracing import ServerTracing

            self._middleware.append(ServerTracing())
        if metrics:
            from .metrics import ServerMetrics

            self.metrics = ServerMetrics()
            self._middleware.append(self.metrics)
        if access_log:
            from .access_log import ACCESS_LOGGER, AccessLog

            # Asked for by name: shown even when --log-level hides other INFO lines.
            logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
            self._middleware.append(AccessLog())
        self._endpoint: MetricsEndpoint | None = None

    def middleware(self) -> list[Any]:
        """The server's middleware list, outermost first."""
        return list(self._middleware)

    def attach(self, server: Any) -> None:
        """Report `server`'s open connections; warn when tracing has nowhere to send spans."""
        if self.metrics is not None:
            self.metrics.track_connections(server)
        if self._tracing:
            from opentelemetry import trace

            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                log.warning(
                    "--tracing: no OpenTelemetry tracer provider is set, so spans are dropped;"
                    " set one in the handler's module (docs/operating.md, Tracing)"
                )

    def serve_metrics(self, address: str, port: int) -> MetricsEndpoint:
        """Start this process's /metrics endpoint (closed by `close()`)."""
        self._endpoint = MetricsEndpoint(address, port)
        log.info("metrics on %s", self._endpoint.url)
        return self._endpoint

    def close(self) -> None:
        """After the server stopped: stop the endpoint, flush the metrics a last time."""
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self.metrics is not None:
            self.metrics.close()
