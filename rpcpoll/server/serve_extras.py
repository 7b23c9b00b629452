"""What `rpcpoll serve` adds around the user's handler: the health and describe services,
start-up warnings about the handler, the log format, and signal handling.

- Health (`--no-health` turns it off): the process's `rpcpoll.health.default_health()` is
  registered, with the whole server ("") and the handler's service SERVING; when a graceful
  stop begins (before the server stops accepting) every status turns NOT_SERVING.
- Describe (`--no-describe` turns it off): a `ReflectionService` describing every service the
  process serves, itself included, so `rpcpoll call` / `rpcpoll list` need no local IDL.
- Observability (rpcpoll/observability/serving.py): `--metrics-port` (Prometheus metrics
  middleware and a /metrics endpoint on `--metrics-address`), `--tracing` (OpenTelemetry
  server spans) and `--access-log` (a line per call), installed as the server's middleware.
- Signals: SIGTERM or SIGINT begin a graceful stop; a SIGINT after that (Ctrl-C again) exits
  at once, with status 130, without waiting for in-flight calls.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import click

from ..health.service import SERVER, HealthService, ServingStatus, default_health
from ..observability.serving import ServeObservability, WorkersMetrics, check_packages
from ..reflection.service import ReflectionService
from ..service import AsyncHandler, Handler
from .handler_checks import handler_warnings

__all__ = [
    "FORCED_EXIT_STATUS",
    "ServeExtras",
    "extras_options",
    "log_format",
    "on_stop_signals",
    "warn_about_handler",
]

log = logging.getLogger("rpcpoll.server")

#: The exit status after a second Ctrl-C (128 + SIGINT, as shells report it).
FORCED_EXIT_STATUS = 128 + signal.SIGINT


def log_format(pid: bool) -> str:
    """`rpcpoll serve`'s log line: time, the record's own logger name (`[pid]` with several
    processes), level, message."""
    return f"%(asctime)s %(name)s{'[%(process)d]' if pid else ''} %(levelname)s %(message)s"


def extras_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--no-health`, `--no-describe` and the observability flags (read back with
    `ServeExtras.pop_from`)."""
    command = click.option(
        "--access-log",
        "access_log",
        is_flag=True,
        help="log one line per call on the logger rpcpoll.access (peer, method, status,"
        " duration, sizes)",
    )(command)
    command = click.option(
        "--tracing",
        "tracing",
        is_flag=True,
        help="an OpenTelemetry server span per call, the child of the caller's span (needs"
        " rpcpoll[tracing] and a tracer provider set by the handler's module)",
    )(command)
    command = click.option(
        "--metrics-address",
        "metrics_address",
        default="127.0.0.1",
        show_default=True,
        metavar="HOST",
        help="where --metrics-port listens",
    )(command)
    command = click.option(
        "--metrics-port",
        "metrics_port",
        type=click.IntRange(min=0, max=65535),
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, logged;"
        " with --workers, every worker's; needs rpcpoll[metrics])",
    )(command)
    command = click.option(
        "--no-describe",
        "no_describe",
        is_flag=True,
        help="do not serve rpcpoll.reflection.v1.Reflection (what `rpcpoll call` and"
        " `rpcpoll list` use when they have no local IDL)",
    )(command)
    command = click.option(
        "--no-health",
        "no_health",
        is_flag=True,
        help="do not serve grpc.health.v1.Health (SERVING while up, NOT_SERVING once a"
        " graceful stop begins)",
    )(command)
    return command


@dataclass
class ServeExtras:
    """The services `rpcpoll serve` registers next to the user's handler."""

    health: bool = True
    describe: bool = True
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    tracing: bool = False
    access_log: bool = False
    health_service: HealthService | None = field(default=None, init=False)
    observability: ServeObservability | None = field(default=None, init=False)

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> ServeExtras:
        """Take the `extras_options` values out of a command's keyword arguments."""
        return cls(
            health=not options.pop("no_health", False),
            describe=not options.pop("no_describe", False),
            metrics_port=options.pop("metrics_port", None),
            metrics_address=options.pop("metrics_address", "127.0.0.1"),
            tracing=options.pop("tracing", False),
            access_log=options.pop("access_log", False),
        )

    def argv(self) -> list[str]:
        """The same options again, for a worker's command line (a worker records metrics
        for its supervisor's endpoint and serves none itself)."""
        argv = [flag for flag, on in (("--no-health", not self.health),
                                      ("--no-describe", not self.describe),
                                      ("--tracing", self.tracing),
                                      ("--access-log", self.access_log)) if on]  # fmt: skip
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        return argv

    def check(self) -> None:
        """Exit 2 now (click.UsageError) when a flag's optional package is not installed."""
        try:
            check_packages(metrics=self.metrics_port is not None, tracing=self.tracing)
        except ImportError as exc:
            raise click.UsageError(str(exc)) from None

    def workers_metrics(self) -> WorkersMetrics | None:
        """For a supervisor: the shared metrics directory and endpoint (None without
        --metrics-port); click.ClickException when the endpoint cannot listen."""
        if self.metrics_port is None:
            return None
        try:
            return WorkersMetrics(self.metrics_address, self.metrics_port)
        except OSError as exc:
            where = f"{self.metrics_address}:{self.metrics_port}"
            raise click.ClickException(f"cannot serve metrics on {where}: {exc}") from None

    def middleware(self) -> list[Any]:
        """The server's middleware for the observability flags, outermost first. Raises
        click.UsageError when a flag's optional package is not installed."""
        if self.observability is None:
            try:
                self.observability = ServeObservability(
                    metrics=self.metrics_port is not None,
                    tracing=self.tracing,
                    access_log=self.access_log,
                )
            except ImportError as exc:
                raise click.UsageError(str(exc)) from None
        return self.observability.middleware()

    def serve_metrics(self) -> None:
        """Start this process's /metrics endpoint when --metrics-port is given (not in a
        worker: its supervisor serves every worker's metrics)."""
        if self.metrics_port is None:
            return
        self.middleware()  # the metrics exist
        assert self.observability is not None
        try:
            self.observability.serve_metrics(self.metrics_address, self.metrics_port)
        except OSError as exc:
            where = f"{self.metrics_address}:{self.metrics_port}"
            raise click.ClickException(f"cannot serve metrics on {where}: {exc}") from None

    def close(self) -> None:
        """After the server stopped: the metrics endpoint stops, metrics are flushed."""
        if self.observability is not None:
            self.observability.close()

    def install(self, server: Any, handler: Handler | AsyncHandler) -> None:
        """Register the extra services on `server` (a `Server`, before it starts)."""
        if self.observability is not None:
            self.observability.attach(server)
        served = [handler]
        if self.health:
            health = self.health_service = default_health()
            health.set_status(SERVER, ServingStatus.SERVING)
            health.set_status(type(handler).SERVICE.full_name, ServingStatus.SERVING)
            server.register(health)
            served.append(health)
        if self.describe:
            server.register(ReflectionService(*served))

    def on_stopping(self) -> None:
        """A graceful stop begins: every health status turns NOT_SERVING."""
        if self.health_service is not None:
            self.health_service.enter_shutdown()


def warn_about_handler(handler_class: type[Handler | AsyncHandler]) -> None:
    """Log the start-up warnings about a handler class (rpcpoll/server/handler_checks.py)."""
    for warning in handler_warnings(handler_class):
        log.warning("%s", warning)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop()` (on the main thread); a second SIGINT exits at once."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping and signum == signal.SIGINT:
            log.warning("second interrupt: exiting now, without waiting for in-flight calls")
            logging.shutdown()
            os._exit(FORCED_EXIT_STATUS)
        stopping = True
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
