"""`rpcpoll serve`: run a handler class in a Server until SIGTERM or SIGINT.

Three ways to run, sharing handler loading, logging, signal handling and the `ServeLifecycle`
hooks: one process (`--workers 1`, the default), a supervisor of N worker processes on one
address (`--workers N`, see rpcpoll/server/supervisor.py and docs/workers.md), and one of those
workers (the hidden `--worker-fd`, set only by the supervisor).

TLS: `--tls-cert`/`--tls-key` serve TLS, `--tls-client-ca` also requires client certificates
(mTLS); the files are checked before serving (exit 2 if unusable) and read again on SIGHUP
(every worker with --workers N), new handshakes using them while connections stay.

Observability: `--metrics-port` (Prometheus /metrics; with --workers N the supervisor serves
every worker's), `--tracing` (OpenTelemetry server spans), `--access-log` (a line per call),
installed as the server's middleware (rpcpoll/observability/serving.py, docs/operating.md).

Exit status: 0 after a graceful stop; 1 when serving fails (the address is taken, a registry
cannot be reached, workers keep crashing); 2 for bad input (an unknown option, a bad value, a
handler that cannot be loaded). Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ..discovery.base import DEFAULT_WEIGHT, DiscoveryError
from ..service import AsyncHandler, Handler
from ..transport.address import parse_address
from ..transport.errors import TLSConfigError
from ..transport.tls import ServerTLS
from .limits import DEFAULT_LIMITS, FD_RESERVE, ServerLimits
from .registration import Registration, open_registry
from .serve_extras import (
    ServeExtras,
    extras_options,
    log_format,
    on_stop_signals,
    warn_about_handler,
)
from .server import DEFAULT_MODE, MODES, Server
from .supervisor import Supervisor, SupervisorLink, WorkerLaunch

__all__ = ["ServeLifecycle", "load_handler", "parse_size", "serve_command"]

DEFAULT_HANDLER = "rpcpoll.examples.echo:EchoHandler"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
log = logging.getLogger("rpcpoll.server")


def load_handler(spec: str) -> type[Handler | AsyncHandler]:
    """Import "package.module:ClassName" (the current directory is importable, as for python -m)
    or load "path/to/file.py:ClassName" (its directory becomes importable, for its own
    imports), and check that it is a generated handler class."""
    module_name, sep, class_name = spec.rpartition(":")
    if not sep or not module_name or not class_name:
        message = f"expected module:HandlerClass or path/to/file.py:HandlerClass, got {spec!r}"
        raise click.BadParameter(message, param_hint="HANDLER")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            module = _load_file(module_name)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"cannot import {module_name!r}: {exc}"
        raise click.BadParameter(message, param_hint="HANDLER") from None
    except Exception as exc:  # the module itself failed while loading
        message = f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        raise click.BadParameter(message, param_hint="HANDLER") from None
    handler = getattr(module, class_name, None)
    if handler is None:
        raise click.BadParameter(f"{module_name!r} has no {class_name!r}", param_hint="HANDLER")
    if not (
        isinstance(handler, type) and issubclass(handler, (Handler, AsyncHandler))
    ) or not hasattr(handler, "SERVICE"):
        raise click.BadParameter(
            f"{spec} is not a subclass of a generated handler (an SHandler or SAsyncHandler"
            " from rpcpoll gen)",
            param_hint="HANDLER",
        )
    return handler


def _load_file(path_text: str) -> Any:
    """The module in a .py file, imported under its file name (its directory goes first on
    sys.path, so that it imports its neighbours, e.g. its generated *_rpc module)."""
    path = Path(path_text).expanduser().resolve()
    if path.suffix != ".py":
        raise ImportError(f"{path_text} is not a .py file (use module:Class for a module name)")
    if not path.is_file():
        raise ImportError(f"no such file: {path_text}")
    name = path.stem
    if not name.isidentifier():
        raise ImportError(f"{path.name} cannot be imported: {name!r} is not a Python name")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path_text}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _check_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """HOST:PORT, [V6]:PORT or unix:/PATH, checked by the one parser servers and clients use
    (`rpcpoll.transport.address.parse_address`)."""
    if value is not None:
        try:
            parse_address(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


_SIZE = re.compile(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes from "1048576", "64KiB", "4MiB", "1GiB" (K, M, G, KB, MB, GB: binary multiples
    too); ValueError otherwise."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a size such as 65536, 64KiB or 4MiB, got {text!r}")
    return int(match[1]) * _UNITS[match[2].upper()]


def _check_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


BYTES = "BYTES"  # a size flag: parsed by _check_size

# (flag, ServerLimits field, type, help): one `rpcpoll serve` flag per limit (docs/limits.md).
_LIMIT_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--max-connections", "max_connections", click.IntRange(min=1),
     "connections served at once; more are refused at once"),
    ("--max-calls", "max_calls", click.IntRange(min=1),
     "calls running on worker threads at once; more get RESOURCE_EXHAUSTED"),
    ("--max-calls-per-connection", "max_calls_per_connection", click.IntRange(min=1),
     "calls running at once on one (multiplexed) connection; more get RESOURCE_EXHAUSTED"),
    ("--max-frame-size", "max_frame_size", BYTES,
     "largest request (connection closed) and reply (RESOURCE_EXHAUSTED instead)"),
    ("--max-header-size", "max_header_size", BYTES,
     "largest request header; larger gets RESOURCE_EXHAUSTED"),
    ("--max-metadata-entries", "max_metadata_entries", click.IntRange(min=0),
     "metadata entries per request; more gets RESOURCE_EXHAUSTED"),
    ("--max-partial-bytes", "max_partial_bytes", BYTES,
     "bytes all incomplete frames may hold; a connection going over is closed"),
    ("--frame-timeout", "frame_timeout", click.FloatRange(min=0),
     "seconds a started frame has to complete, else its connection closes (0: no limit)"),
    ("--idle-timeout", "idle_timeout", click.FloatRange(min=0),
     "seconds after which a connection with no traffic is closed (0: never)"),
    ("--max-unsent-bytes", "max_unsent_bytes", BYTES,
     "reply bytes a connection may queue before it is no longer read"),
    ("--max-unread-bytes", "max_unread_bytes", BYTES,
     "request bytes read ahead while a call runs on a connection"),
]  # fmt: skip


def _limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for flag, field, kind, text in reversed(_LIMIT_FLAGS):
        default = getattr(DEFAULT_LIMITS, field)
        shown = 0 if default is None else default
        if kind is BYTES:
            option = click.option(
                flag, field, metavar=BYTES, callback=_check_size, help=f"{text} [default: {shown}]"
            )
        else:
            option = click.option(flag, field, type=kind, help=f"{text} [default: {shown}]")
        command = option(command)
    return command


def _limits_from(options: dict[str, Any]) -> ServerLimits:
    names = {field for _flag, field, _kind, _text in _LIMIT_FLAGS}
    given = {key: value for key, value in options.items() if value is not None and key in names}
    for key in ("frame_timeout", "idle_timeout"):
        if given.get(key) == 0:
            given[key] = None
    try:
        return ServerLimits(**given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _limit_argv(options: dict[str, Any]) -> list[str]:
    """The limit flags again, for a worker's command line."""
    argv = []
    for flag, field, _kind, _text in _LIMIT_FLAGS:
        value = options.get(field)
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--release-memory-after", str(options.get("release_memory_after") or 0)]
    if options.get("uvloop") is not None:
        argv.append("--uvloop" if options["uvloop"] else "--no-uvloop")
    return argv


def _raise_fd_limit(max_connections: int) -> None:
    """Raise the soft fd limit towards the hard one when max_connections needs it (as Go's
    runtime does at start): a server out of fds cannot even refuse a connection."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = max_connections + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, OSError, ValueError):
        pass


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


_EPILOG = (
    "Exit status: 0 after a graceful stop (SIGTERM, SIGINT); 1 when serving fails (address in"
    " use, registry unreachable, workers crashing); 2 for bad arguments; 130 after a second"
    " Ctrl-C (no wait for in-flight calls). Limits and what"
    " clients see when one is hit: docs/limits.md."
)


@click.command("serve", epilog=_EPILOG)
@click.argument("handler", required=False, default=DEFAULT_HANDLER)
@click.option(
    "--address",
    default=None,
    callback=_check_address,
    help="HOST:PORT to listen on [default: 127.0.0.1:8888]",
)
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
    help="publish the address in this registry while serving (etcd://HOST:PORT[?prefix=P];"
    " etcds://[USER@]HOST:PORT[?ca=FILE&cert=FILE&key=FILE] for HTTPS and auth, the password"
    " in RPCPOLL_ETCD_PASSWORD; docs/discovery.md)",
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
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="logging level",
)
@click.option(
    "--release-memory-after",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="seconds of quiet after which cached buffers are freed and the heap trimmed (0: never)",
)
@click.option(
    "--uvloop/--no-uvloop",
    "use_uvloop",
    default=None,
    help="run async handlers on uvloop's event loop [default: when uvloop is installed]",
)
@click.option(
    "--tls-cert",
    default=None,
    metavar="FILE",
    help="serve TLS with this PEM certificate chain (leaf first); reread on SIGHUP",
)
@click.option(
    "--tls-key",
    default=None,
    metavar="FILE",
    help="the certificate's PEM private key [default: in --tls-cert]",
)
@click.option(
    "--tls-client-ca",
    default=None,
    metavar="FILE",
    help="require client certificates signed by these PEM CAs (mTLS)",
)
@_limit_options
@extras_options
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
    release_memory_after: float,
    use_uvloop: bool | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    **limit_options: Any,
) -> None:
    """Serve HANDLER (module:Class or path/to/file.py:Class, a subclass of a generated
    SHandler, or of an SAsyncHandler: its `async def` methods run on an event loop).

    Without HANDLER, serves the bundled echo service (idl/echo.proto). Stops gracefully on
    SIGTERM or SIGINT: no new connections, in-flight calls get --exit-wait seconds, exit 0.
    With --workers N, N processes serve the address and a supervisor restarts crashed ones.
    With --registry, the address is registered once serving and deregistered first on stop.
    With --tls-cert, clients must use TLS; SIGHUP rereads the certificate files.
    """
    in_worker = worker_fd is not None
    if on_poller:
        mode = "poller"
    # With several processes writing one log, each line says which process wrote it.
    logging.basicConfig(level=log_level.upper(), format=log_format(workers > 1 or in_worker))
    extras = ServeExtras.pop_from(limit_options)
    extras.check()
    if address and unix_path:
        raise click.UsageError("give --address or --unix, not both")
    if worker_listen_fd is not None and not in_worker:
        raise click.UsageError("--worker-listen-fd needs --worker-fd")
    limits = _limits_from(limit_options)
    limit_options["release_memory_after"] = release_memory_after or None
    limit_options["uvloop"] = use_uvloop
    tls_files = _tls_files(tls_cert, tls_key, tls_client_ca)
    handler_class = load_handler(handler)
    if not in_worker:
        warn_about_handler(handler_class)
    target = f"unix:{unix_path}" if unix_path else (address or "127.0.0.1:8888")
    _raise_fd_limit(limits.max_connections)
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
        _serve_worker(
            handler_class, target, worker_fd, worker_listen_fd, exit_wait, mode, limits,
            limit_options["release_memory_after"], use_uvloop, extras, tls_files,
        )  # fmt: skip
    elif workers == 1:
        _serve_one(
            handler_class, target, lifecycle, exit_wait, mode, limits,
            limit_options["release_memory_after"], use_uvloop, extras, tls_files,
        )  # fmt: skip
    else:
        extra_argv = _limit_argv(limit_options) + extras.argv() + _tls_argv(tls_files)
        command = _worker_command(handler, exit_wait, mode, log_level, extra_argv)
        _supervise(target, workers, command, lifecycle, exit_wait, extras)


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
    """SIGTERM and SIGINT call `stop()` (on the main thread, between two bytecodes); a second
    SIGINT exits at once (rpcpoll/server/serve_extras.py)."""
    on_stop_signals(stop)


def _on_reload_signal(reload: Callable[[], None]) -> None:
    """SIGHUP calls `reload()` (instead of ending the process, its default)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        reload()

    signal.signal(signal.SIGHUP, on_signal)


TLSFiles = tuple[str, str | None, str | None]  # --tls-cert, --tls-key, --tls-client-ca


def _tls_files(cert: str | None, key: str | None, client_ca: str | None) -> TLSFiles | None:
    """The TLS flags, as absolute paths (workers get them too), checked by loading them once:
    a bad file is exit status 2 before anything listens."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise click.UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    files = (
        os.path.abspath(cert),
        None if key is None else os.path.abspath(key),
        None if client_ca is None else os.path.abspath(client_ca),
    )
    _server_tls(files)
    return files


def _server_tls(files: TLSFiles | None) -> ServerTLS | None:
    if files is None:
        return None
    try:
        return ServerTLS.from_files(*files)
    except TLSConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--tls-cert/--tls-key") from None


def _tls_argv(files: TLSFiles | None) -> list[str]:
    """The TLS flags again, for a worker's command line."""
    if files is None:
        return []
    argv = ["--tls-cert", files[0]]
    if files[1] is not None:
        argv += ["--tls-key", files[1]]
    if files[2] is not None:
        argv += ["--tls-client-ca", files[2]]
    return argv


class _MainThread:
    """What the main thread of a serving process waits for: a stop (SIGTERM, SIGINT, a lost
    supervisor) or a reload (SIGHUP). Signal handlers only set flags; the work (reading
    certificate files, logging) happens in `wait`, outside the handler."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self.stopping = False
        self._reloads = 0

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    def reload(self) -> None:
        self._reloads += 1
        self._wake.set()

    def wait(self, server: Server) -> None:
        """Until stopped; reloads the server's TLS certificates on each SIGHUP meanwhile."""
        while not self.stopping:
            self._wake.wait(0.5)  # wakes regularly, so signals are seen even without a set
            self._wake.clear()
            if self._reloads:
                self._reloads = 0
                _reload_tls(server)


def _reload_tls(server: Server) -> None:
    if server.tls is None:
        log.info("SIGHUP: nothing to reload (not serving TLS)")
        return
    try:
        server.tls.reload()
    except TLSConfigError as exc:
        log.error("SIGHUP: %s; still serving the previous certificate", exc)
        return
    log.info("SIGHUP: reloaded the TLS certificate; new connections use it")


def _serve_one(
    handler_class: type[Handler | AsyncHandler],
    target: str,
    lifecycle: ServeLifecycle,
    exit_wait: float,
    mode: str,
    limits: ServerLimits,
    release_memory_after: float | None,
    use_uvloop: bool | None,
    extras: ServeExtras | None,
    tls_files: TLSFiles | None,
) -> None:
    instance = _instantiate(handler_class)
    server = Server(
        target,
        instance,
        exit_wait=exit_wait,
        mode=mode,
        limits=limits,
        release_memory_after=release_memory_after,
        uvloop=use_uvloop,
        ssl=_server_tls(tls_files),
        middleware=extras.middleware() if extras is not None else (),
    )
    if extras is not None:
        extras.install(server, instance)
        extras.serve_metrics()
    try:
        main = _MainThread()
        _on_stop_signals(main.stop)
        _on_reload_signal(main.reload)
        _start(server, target)
        try:
            lifecycle.on_ready(server.address)
        except click.ClickException:
            server.shutdown(0)
            raise
        main.wait(server)
        if extras is not None:
            extras.on_stopping()
        lifecycle.on_stopping()
        _drain(server, exit_wait)
    finally:
        if extras is not None:
            extras.close()


def _supervise(
    target: str,
    workers: int,
    command: Callable[[WorkerLaunch], Sequence[str]],
    lifecycle: ServeLifecycle,
    exit_wait: float,
    extras: ServeExtras,
) -> None:
    # With --metrics-port the workers write their metrics to a directory of ours, and this
    # process serves them all (rpcpoll/observability/serving.py).
    metrics = extras.workers_metrics()
    try:
        supervisor = Supervisor(
            target,
            workers,
            command,
            exit_wait=exit_wait,
            on_ready=lifecycle.on_ready,
            on_stopping=lifecycle.on_stopping,
            env=metrics.environment() if metrics is not None else None,
            on_worker_exit=metrics.worker_exited if metrics is not None else None,
        )
        _on_stop_signals(supervisor.stop)
        _on_reload_signal(supervisor.reload)
        try:
            supervisor.bind()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {target}: {exc}") from None
        code = supervisor.run()
    finally:
        if metrics is not None:
            metrics.close()
    if code:
        sys.exit(code)


def _worker_command(
    handler: str, exit_wait: float, mode: str, log_level: str, extra_argv: list[str]
) -> Callable[[WorkerLaunch], list[str]]:
    """The argv of a worker: this command again, as one process, told its fds."""

    def command(launch: WorkerLaunch) -> list[str]:  # limit and TLS flags in extra_argv
        argv = [sys.executable, "-m", "rpcpoll", "serve", handler]
        argv += ["--exit-wait", repr(exit_wait), "--log-level", log_level]
        argv += ["--worker-fd", str(launch.control_fd)]
        if launch.listen_fd is not None:
            argv += ["--unix", launch.address.removeprefix("unix:")]
            argv += ["--worker-listen-fd", str(launch.listen_fd)]
        else:
            argv += ["--address", launch.address]
        argv += ["--mode", mode]
        argv += extra_argv
        return argv

    return command


def _serve_worker(
    handler_class: type[Handler | AsyncHandler],
    target: str,
    worker_fd: int,
    listen_fd: int | None,
    exit_wait: float,
    mode: str,
    limits: ServerLimits,
    release_memory_after: float | None,
    use_uvloop: bool | None,
    extras: ServeExtras | None,
    tls_files: TLSFiles | None,
) -> None:
    """One worker under a supervisor: its own SO_REUSEPORT listener (or the inherited Unix one);
    stops on SIGTERM, or when the supervisor is gone; reloads TLS on SIGHUP."""
    link = SupervisorLink(worker_fd)
    inherited = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    instance = _instantiate(handler_class)
    server = Server(
        target,
        instance,
        exit_wait=exit_wait,
        mode=mode,
        reuse_port=True,
        listener=inherited,
        limits=limits,
        release_memory_after=release_memory_after,
        uvloop=use_uvloop,
        ssl=_server_tls(tls_files),
        middleware=extras.middleware() if extras is not None else (),
    )
    if extras is not None:
        extras.install(server, instance)
    main = _MainThread()
    _on_stop_signals(main.stop)
    _on_reload_signal(main.reload)
    _start(server, target)
    link.watch(main.stop)
    try:
        link.ready(server.address)
    except OSError:  # the supervisor is gone already
        main.stop()
    main.wait(server)
    if extras is not None:
        extras.on_stopping()
    _drain(server, exit_wait)
    if extras is not None:
        extras.close()  # the last metrics reach the shared directory before the exit
    link.close()
    if inherited is not None:
        inherited.close()


def _instantiate(handler_class: type[Handler | AsyncHandler]) -> Handler | AsyncHandler:
    try:
        return handler_class()
    except Exception as exc:
        raise click.ClickException(
            f"cannot create {handler_class.__name__}: {type(exc).__name__}: {exc}"
        ) from None


def _start(server: Server, target: str) -> None:
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {target}: {exc}") from None


def _drain(server: Server, exit_wait: float) -> None:
    log.info("shutting down: waiting up to %.1f s for in-flight calls", exit_wait)
    finished = server.shutdown(exit_wait)
    log.info("stopped%s", "" if finished else " (some calls did not finish in time)")
