"""`rpcpoll serve`: run a handler class in a Server until SIGTERM or SIGINT."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

import click

from ..service import Handler
from .server import Server

__all__ = ["load_handler", "serve_command"]

DEFAULT_HANDLER = "rpcpoll.examples.echo:EchoHandler"
log = logging.getLogger("rpcpoll.server")


def load_handler(spec: str) -> type[Handler]:
    """Import "package.module:ClassName" (the current directory is importable, as for python -m)
    and check that it is a generated handler class."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        message = f"expected module:HandlerClass, got {spec!r}"
        raise click.BadParameter(message, param_hint="HANDLER")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"cannot import {module_name!r}: {exc}"
        raise click.BadParameter(message, param_hint="HANDLER") from None
    handler = getattr(module, class_name, None)
    if handler is None:
        raise click.BadParameter(f"{module_name!r} has no {class_name!r}", param_hint="HANDLER")
    if not (isinstance(handler, type) and issubclass(handler, Handler)) or not hasattr(
        handler, "SERVICE"
    ):
        raise click.BadParameter(
            f"{spec} is not a subclass of a generated handler (an SHandler from rpcpoll gen)",
            param_hint="HANDLER",
        )
    return handler


@click.command("serve")
@click.argument("handler", required=False, default=DEFAULT_HANDLER)
@click.option("--address", default=None, help="HOST:PORT to listen on [default: 127.0.0.1:8888]")
@click.option("--unix", "unix_path", default=None, help="listen on this Unix socket path instead")
@click.option(
    "--exit-wait",
    type=float,
    default=5.0,
    show_default=True,
    help="seconds in-flight calls get to finish on SIGTERM/SIGINT",
)
@click.option(
    "--on-poller",
    is_flag=True,
    help="run calls on the poller thread (fastest; only for handlers that never block)",
)
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def serve_command(
    handler: str,
    address: str | None,
    unix_path: str | None,
    exit_wait: float,
    on_poller: bool,
    log_level: str,
) -> None:
    """Serve HANDLER (module:Class, a subclass of a generated SHandler).

    Without HANDLER, serves the bundled echo service (idl/echo.proto). Stops gracefully on
    SIGTERM or SIGINT: no new connections, in-flight calls get --exit-wait seconds, exit 0.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s rpcpoll %(levelname)s %(message)s"
    )
    if address and unix_path:
        raise click.UsageError("give --address or --unix, not both")
    handler_class = load_handler(handler)
    target = f"unix:{unix_path}" if unix_path else (address or "127.0.0.1:8888")
    server = Server(target, handler_class(), exit_wait=exit_wait, run_on_poller=on_poller)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {target}: {exc}") from None
    service = handler_class.SERVICE.full_name
    log.info("serving %s (%s) on %s", service, handler, server.address)
    while not stop.wait(0.5):
        pass
    log.info("shutting down: waiting up to %.1f s for in-flight calls", exit_wait)
    finished = server.shutdown(exit_wait)
    log.info("stopped%s", "" if finished else " (some calls did not finish in time)")
