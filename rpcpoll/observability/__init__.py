"""Observability middleware: Prometheus metrics, OpenTelemetry tracing and an access log.

Each is an `rpcpoll.middleware.Middleware` with a sync and an async face, for servers
(`Server(middleware=[...])`) and clients (`middleware=[...]` on a generated client):

- `rpcpoll.observability.metrics`: `ServerMetrics`, `ClientMetrics` (needs prometheus_client:
  `pip install 'rpcpoll[metrics]'`);
- `rpcpoll.observability.tracing`: `ServerTracing`, `ClientTracing` (needs opentelemetry-api:
  `pip install 'rpcpoll[tracing]'`);
- `rpcpoll.observability.access_log`: `AccessLog` (no dependency).

The optional dependencies are imported by those modules only, never by `import rpcpoll` or
by this package. docs/operating.md lists the metric names, span attributes and log format.
"""

from __future__ import annotations

from .access_log import AccessLog

__all__ = ["AccessLog"]
