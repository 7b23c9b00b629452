"""What `rpcpoll serve` adds around the user's handler: the health and describe services,
start-up warnings about the handler, the log format, and signal handling.

- Health (`--no-health` turns it off): the process's `rpcpoll.health.default_health()` is
  registered, with the whole server ("") and the handler's service SERVING; when a graceful
  stop begins (before the server stops accepting) every status turns NOT_SERVING.
- Describe (`--no-describe` turns it off): a `ReflectionService` describing every service the
  process serves, itself included, so `rpcpoll call` / `rpcpoll list` need no local IDL.
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
    """`--no-health` and `--no-describe` (read back with `ServeExtras.pop_from`)."""
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
    health_service: HealthService | None = field(default=None, init=False)

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> ServeExtras:
        """Take the `extras_options` values out of a command's keyword arguments."""
        return cls(
            health=not options.pop("no_health", False),
            describe=not options.pop("no_describe", False),
        )

    def argv(self) -> list[str]:
        """The same options again, for a worker's command line."""
        return [flag for flag, off in (("--no-health", not self.health),
                                       ("--no-describe", not self.describe)) if off]  # fmt: skip

    def install(self, server: Any, handler: Handler | AsyncHandler) -> None:
        """Register the extra services on `server` (a `Server`, before it starts)."""
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
