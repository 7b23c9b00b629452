"""`rpcpoll serve`: run a handler class in a Server until SIGTERM or SIGINT.

Three ways to run, sharing handler loading, logging, signal handling and the `ServeLifecycle`
hooks: one process (`--workers 1`, the default), a supervisor of N worker processes on one
address (`--workers N`, see rpcpoll/server/supervisor.py and docs/workers.md), and one of those
workers (the hidden `--worker-fd`, set only by the supervisor).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import click

from ..discovery.base import DEFAULT_WEIGHT, DiscoveryError
from ..service import Handler
from .registration import Registration, open_registry
from .server import DEFAULT_MODE, MODES, Server
from .supervisor import Supervisor, SupervisorLink, WorkerLaunch

__all__ = ["ServeLifecycle", "load_handler", "serve_command"]

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


class ServeLifecycle:
    """What `rpcpoll serve` does when the service comes up and when it starts going down,
    whatever the process model. Both hooks run on the main thread.

    `on_ready(address)`: the service accepts calls on `address` (with --workers N: in every
    worker). Logs "serving SERVICE (HANDLER) on ADDRESS", the line users and tests wait for.
    Registering the address with a registry belongs here.

    `on_stopping()`: a graceful stop begins; called before the server (or any worker) stops
    accepting, and only after `on_ready`. Deregistering belongs here, so that clients stop
    choosing this address while in-flight calls finish.
    """

    def __init__(
        self,
        service: str,
        handler: str,
        workers: int,
        registration: Registration | None = None,
    ) -> None:
        self.service = service
        self.handler = handler
        self.workers = workers
        self.registration = registration

    def on_ready(self, address: str) -> None:
        if self.registration is not None:  # registered before "serving": then it is findable
            try:
                self.registration.publish(address)
            except (DiscoveryError, ValueError) as exc:
                self.registration.registry.close()
                self.registration = None
                raise click.ClickException(f"cannot register {self.service}: {exc}") from None
        if self.workers > 1:
            log.info(
                "serving %s (%s) on %s with %d workers",
                self.service,
                self.handler,
                address,
                self.workers,
            )
        else:
            log.info("serving %s (%s) on %s", self.service, self.handler, address)

    def on_stopping(self) -> None:
        if self.registration is not None:
            self.registration.withdraw()


@click.command("serve")
@click.argument("handler", required=False, default=DEFAULT_HANDLER)
@click.option("--address", default=None, help="HOST:PORT to listen on [default: 127.0.0.1:8888]")
@click.option("--unix", "unix_path", default=None, help="listen on this Unix socket path instead")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="processes serving the address (SO_REUSEPORT; see docs/workers.md)",
)
@click.option(
    "--exit-wait",
    type=float,
    default=5.0,
    show_default=True,
    help="seconds in-flight calls get to finish on SIGTERM/SIGINT",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="where calls run: on the poller until a handler blocks (auto), on a thread pool"
    " (pool), or always on the poller (poller: only for handlers that never block)",
)
@click.option("--on-poller", is_flag=True, help="the same as --mode poller")
@click.option(
    "--registry",
    default=None,
    metavar="URL",
    help="publish the address in this registry while serving (etcd://HOST:PORT[?prefix=P])",
)
@click.option(
    "--service-name",
    default=None,
    help="the name to register under [default: the proto service's full name]",
)
@click.option(
    "--weight",
    type=click.IntRange(min=1),
    default=DEFAULT_WEIGHT,
    show_default=True,
    help="registered weight (for weighted balancing)",
)
@click.option(
    "--registry-ttl",
    type=click.IntRange(min=2),
    default=None,
    help="seconds a crashed server stays registered (the lease TTL) [default: 10]",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="registered tag (repeat)")
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
# Set by the supervisor for its workers: the control channel, and the inherited Unix listener.
@click.option("--worker-fd", type=int, default=None, hidden=True)
@click.option("--worker-listen-fd", type=int, default=None, hidden=True)
def serve_command(
    handler: str,
    address: str | None,
    unix_path: str | None,
    workers: int,
    exit_wait: float,
    mode: str,
    on_poller: bool,
    registry: str | None,
    service_name: str | None,
    weight: int,
    registry_ttl: int | None,
    tags: tuple[str, ...],
    log_level: str,
    worker_fd: int | None,
    worker_listen_fd: int | None,
) -> None:
    """Serve HANDLER (module:Class, a subclass of a generated SHandler).

    Without HANDLER, serves the bundled echo service (idl/echo.proto). Stops gracefully on
    SIGTERM or SIGINT: no new connections, in-flight calls get --exit-wait seconds, exit 0.
    With --workers N, N processes serve the address and a supervisor restarts crashed ones.
    With --registry, the address is registered once serving and deregistered first on stop.
    """
    in_worker = worker_fd is not None
    if on_poller:
        mode = "poller"
    # With several processes writing one log, each line says which process wrote it.
    pid = "[%(process)d]" if workers > 1 or in_worker else ""
    logging.basicConfig(
        level=log_level.upper(), format=f"%(asctime)s rpcpoll{pid} %(levelname)s %(message)s"
    )
    if address and unix_path:
        raise click.UsageError("give --address or --unix, not both")
    if worker_listen_fd is not None and not in_worker:
        raise click.UsageError("--worker-listen-fd needs --worker-fd")
    handler_class = load_handler(handler)
    target = f"unix:{unix_path}" if unix_path else (address or "127.0.0.1:8888")
    # The single process and the supervisor both announce through these hooks; a worker
    # never does (its supervisor speaks for all of them).
    service = handler_class.SERVICE.full_name
    registration = None
    if registry is not None and not in_worker:
        registration = _registration(registry, service_name or service, weight, tags, registry_ttl)
    elif (service_name is not None or tags or registry_ttl is not None) and registry is None:
        raise click.UsageError("--service-name, --tag and --registry-ttl need --registry")
    lifecycle = ServeLifecycle(service, handler, workers, registration)
    if worker_fd is not None:
        _serve_worker(handler_class, target, worker_fd, worker_listen_fd, exit_wait, mode)
    elif workers == 1:
        _serve_one(handler_class, target, lifecycle, exit_wait, mode)
    else:
        command = _worker_command(handler, exit_wait, mode, log_level)
        _supervise(target, workers, command, lifecycle, exit_wait)


def _registration(
    url: str, service: str, weight: int, tags: tuple[str, ...], ttl: int | None
) -> Registration:
    labels = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {tag!r}", param_hint="--tag")
        labels[key] = value
    try:
        registry = open_registry(url, ttl=ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--registry") from None
    return Registration(registry, service, weight=weight, tags=labels)


def _on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop()` (on the main thread, between two bytecodes)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _serve_one(
    handler_class: type[Handler],
    target: str,
    lifecycle: ServeLifecycle,
    exit_wait: float,
    mode: str,
) -> None:
    server = Server(target, handler_class(), exit_wait=exit_wait, mode=mode)
    stop = threading.Event()
    _on_stop_signals(stop.set)
    _start(server, target)
    try:
        lifecycle.on_ready(server.address)
    except click.ClickException:
        server.shutdown(0)
        raise
    while not stop.wait(0.5):
        pass
    lifecycle.on_stopping()
    _drain(server, exit_wait)


def _supervise(
    target: str,
    workers: int,
    command: Callable[[WorkerLaunch], Sequence[str]],
    lifecycle: ServeLifecycle,
    exit_wait: float,
) -> None:
    supervisor = Supervisor(
        target,
        workers,
        command,
        exit_wait=exit_wait,
        on_ready=lifecycle.on_ready,
        on_stopping=lifecycle.on_stopping,
    )
    _on_stop_signals(supervisor.stop)
    try:
        supervisor.bind()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {target}: {exc}") from None
    code = supervisor.run()
    if code:
        sys.exit(code)


def _worker_command(
    handler: str, exit_wait: float, mode: str, log_level: str
) -> Callable[[WorkerLaunch], list[str]]:
    """The argv of a worker: this command again, as one process, told its fds."""

    def command(launch: WorkerLaunch) -> list[str]:
        argv = [sys.executable, "-m", "rpcpoll", "serve", handler]
        argv += ["--exit-wait", repr(exit_wait), "--log-level", log_level]
        argv += ["--worker-fd", str(launch.control_fd)]
        if launch.listen_fd is not None:
            argv += ["--unix", launch.address.removeprefix("unix:")]
            argv += ["--worker-listen-fd", str(launch.listen_fd)]
        else:
            argv += ["--address", launch.address]
        argv += ["--mode", mode]
        return argv

    return command


def _serve_worker(
    handler_class: type[Handler],
    target: str,
    worker_fd: int,
    listen_fd: int | None,
    exit_wait: float,
    mode: str,
) -> None:
    """One worker under a supervisor: its own SO_REUSEPORT listener (or the inherited Unix one);
    stops on SIGTERM, or when the supervisor is gone."""
    link = SupervisorLink(worker_fd)
    inherited = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    server = Server(
        target,
        handler_class(),
        exit_wait=exit_wait,
        mode=mode,
        reuse_port=True,
        listener=inherited,
    )
    stop = threading.Event()
    _on_stop_signals(stop.set)
    _start(server, target)
    link.watch(stop.set)
    try:
        link.ready(server.address)
    except OSError:  # the supervisor is gone already
        stop.set()
    while not stop.wait(0.5):
        pass
    _drain(server, exit_wait)
    link.close()
    if inherited is not None:
        inherited.close()


def _start(server: Server, target: str) -> None:
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {target}: {exc}") from None


def _drain(server: Server, exit_wait: float) -> None:
    log.info("shutting down: waiting up to %.1f s for in-flight calls", exit_wait)
    finished = server.shutdown(exit_wait)
    log.info("stopped%s", "" if finished else " (some calls did not finish in time)")
