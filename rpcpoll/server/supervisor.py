"""Supervisor: N worker processes serving one address (`rpcpoll serve --workers N`).

Process model. Every worker is a fresh interpreter started from `command(launch)` (the CLI
re-executes `python -m rpcpoll serve ... --worker-fd FD`), never a fork of the supervisor: a
forked copy of a process that has threads (pollers, worker pools) can inherit locks held by
threads that do not exist in the child.

Listening. For TCP each worker binds its OWN SO_REUSEPORT listener on the same port and the
kernel spreads new connections over them by a hash of the 4-tuple. Before starting workers the
supervisor binds, but never listens on, a SO_REUSEPORT socket of its own: that turns port 0
into a concrete port, fails early on a port already taken, and keeps the port reserved while
workers restart (a bound, non-listening socket receives no connections). For a Unix socket
SO_REUSEPORT does not apply: the supervisor creates the listening socket once and every worker
inherits it (`pass_fds`) and accepts from it.

Control channel. Each worker gets one end of a socketpair (`WorkerLaunch.control_fd`). The
worker writes "ready PID ADDRESS\\n" once it accepts (`SupervisorLink.ready`). The supervisor
sees EOF when the worker exits, so it wakes at once; the worker sees EOF when the supervisor is
gone, even SIGKILLed, and then stops gracefully (`SupervisorLink.watch`): no orphaned workers.
Workers run in their own session, so a terminal's Ctrl-C reaches only the supervisor, which
forwards SIGTERM.

Restarts. A worker that exits unexpectedly is restarted after a per-worker backoff
(`RestartPolicy`: 0.1 s doubling to 5 s, back to 0.1 s once a worker stayed up 10 s). The
supervisor gives up, stops the other workers and returns 1 when a worker exits or is not ready
within `ready_timeout` during start-up (a worker that cannot start once will not start on the
next try either: a bad handler, a failing `__init__`), or when workers exited more than
`max_crashes` times within `crash_window` seconds.

Reloading. `reload()` (the CLI calls it on SIGHUP) forwards SIGHUP to every ready worker, so
each reloads its TLS certificates; a worker still starting when it came gets it once ready (it
may have read the old files), and a worker started later reads the new ones.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..transport.address import format_address, parse_address
from ..transport.net import Listener, create_listener

__all__ = [
    "RestartPolicy",
    "Supervisor",
    "SupervisorLink",
    "WorkerCommand",
    "WorkerLaunch",
]

log = logging.getLogger("rpcpoll.server")

_READY = b"ready"
_POLL_INTERVAL = 1.0  # longest sleep of the supervision loop (a safety net: EOF wakes it)
_EXITING_POLL = 0.02  # poll interval while a worker that closed its channel is exiting
_KILL_WAIT = 5.0  # how long SIGKILLed workers get to be reaped


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor restarts crashed workers and when it gives up (seconds)."""

    initial_backoff: float = 0.1  #: delay before the first restart of a worker
    max_backoff: float = 5.0  #: the delay doubles per crash up to this
    stable_after: float = 10.0  #: a worker up this long resets its backoff
    max_crashes: int = 5  #: more exits than this within crash_window: give up
    crash_window: float = 60.0
    ready_timeout: float = 30.0  #: a worker not ready this long after its start is killed

    def __post_init__(self) -> None:
        if min(self.initial_backoff, self.max_backoff, self.crash_window, self.ready_timeout) <= 0:
            raise ValueError("RestartPolicy durations must be positive")
        if self.max_crashes < 0:
            raise ValueError("max_crashes must be >= 0")


@dataclass(frozen=True)
class WorkerLaunch:
    """What a worker command needs: which slot, what to serve, which inherited fds."""

    slot: int  #: 0 .. workers-1; a restarted worker keeps its slot
    address: str  #: the concrete target ("127.0.0.1:40123", "unix:/run/app.sock")
    control_fd: int  #: the worker's end of the control channel (see SupervisorLink)
    listen_fd: int | None  #: Unix only: the inherited listening socket, to serve as it is


#: Builds a worker's argv; the fds in the launch are passed to it under the same numbers.
WorkerCommand = Callable[[WorkerLaunch], Sequence[str]]


class _Worker:
    __slots__ = (
        "closed_at",
        "control",
        "note",
        "proc",
        "ready",
        "received",
        "reloads",
        "slot",
        "started",
    )

    def __init__(
        self, slot: int, proc: subprocess.Popen[bytes], control: socket.socket, reloads: int
    ) -> None:
        self.slot = slot
        self.reloads = reloads  # the supervisor's reload count this worker has seen
        self.proc = proc
        self.control: socket.socket | None = control
        self.started = time.monotonic()
        self.ready = False
        self.received = b""
        self.closed_at: float | None = None  # when its end of the channel closed (EOF)
        self.note = ""  # why the supervisor killed it, for the exit message

    @property
    def pid(self) -> int:
        return self.proc.pid


class _Slot:
    __slots__ = ("backoff", "index", "restart_at", "worker")

    def __init__(self, index: int, backoff: float) -> None:
        self.index = index
        self.worker: _Worker | None = None
        self.backoff = backoff
        self.restart_at: float | None = None


class Supervisor:
    """Runs `workers` processes serving `target` ("host:port" or "unix:/path"); see the module.

    `command(launch)` gives each worker's argv. `on_ready(address)` is called once, when every
    worker is ready; `on_stopping()` is called first when shutdown begins (a stop request or
    giving up), before any worker is signalled, and only if `on_ready` was called;
    `on_worker_exit(pid)` after each worker process has exited and been reaped (e.g. to drop
    its live metrics). All run on the thread that called `run()`. An exception from
    `on_ready` stops the supervisor (exit status 1); one from the others is logged and
    supervision goes on.

    On shutdown every worker gets SIGTERM and `exit_wait + stop_margin` seconds to finish its
    in-flight calls and exit; stragglers are SIGKILLed. A second `stop()` kills them at once.
    """

    def __init__(
        self,
        target: str,
        workers: int,
        command: WorkerCommand,
        *,
        exit_wait: float = 5.0,
        stop_margin: float = 3.0,
        policy: RestartPolicy | None = None,
        on_ready: Callable[[str], None] | None = None,
        on_stopping: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
        on_worker_exit: Callable[[int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._network, self._requested = parse_address(target)
        self._command = command
        self.exit_wait = exit_wait
        self.stop_margin = stop_margin
        self.policy = policy or RestartPolicy()
        self._on_ready = on_ready
        self._on_stopping = on_stopping
        self._on_worker_exit = on_worker_exit
        self._env = dict(env) if env is not None else None
        self._slots = [_Slot(i, self.policy.initial_backoff) for i in range(workers)]
        self._reservation: socket.socket | None = None  # TCP: bound, never listening
        self._listener: Listener | None = None  # Unix: the listener the workers inherit
        self._address: str | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stop_requests = 0
        self._reloads = 0
        self._started = False
        self._announced = False
        self._failure: str | None = None
        self._crashes: deque[float] = deque()

    # ------------------------------------------------------------------ public API

    @property
    def address(self) -> str:
        """The concrete target the workers serve (after `bind()`), else the requested one."""
        return self._address or format_address(self._network, self._requested)

    @property
    def workers(self) -> int:
        return len(self._slots)

    def pids(self) -> list[int]:
        """The pids of the worker processes alive right now (ready or starting)."""
        return [s.worker.pid for s in self._slots if s.worker is not None]

    def bind(self) -> str:
        """Reserve the address (TCP) or create the listener (Unix); returns the concrete target.

        Raises OSError when the address cannot be used. `run()` calls it if needed.
        """
        if self._address is not None:
            return self._address
        if self._network == "unix":
            self._listener = create_listener("unix", self._requested)
            self._address = format_address("unix", self._listener.address)
        else:
            self._reservation = _reserve_tcp_port(self._requested)
            self._address = format_address("tcp", self._reservation.getsockname()[:2])
        return self._address

    def stop(self) -> None:
        """Ask `run()` to shut down; a second call kills the workers without waiting.

        Safe from a signal handler and from any thread; before `run()` it makes `run()` stop
        at once.
        """
        self._stop_requests += 1
        wake = self._wake_w
        if wake is not None:
            try:
                wake.send(b"\0")
            except OSError:  # full (a wake-up is pending anyway) or already closed
                pass

    def reload(self) -> None:
        """Forward SIGHUP to the ready workers (module docs, Reloading); safe from a signal
        handler."""
        self._reloads += 1
        for slot in self._slots:
            worker = slot.worker
            if worker is not None and worker.ready:
                worker.reloads = self._reloads
                _signal(worker, signal.SIGHUP)

    def run(self) -> int:
        """Start the workers and supervise them until `stop()` or giving up.

        Returns 0 when the supervisor was asked to stop and every worker then exited cleanly,
        1 otherwise (it gave up, or a worker had to be killed or exited with an error).
        """
        if self._started:
            raise RuntimeError("a Supervisor runs once")
        self._started = True
        self.bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            self._supervise()
            return self._shutdown()
        finally:
            self._close()

    # ------------------------------------------------------------------ supervision

    def _supervise(self) -> None:
        for slot in self._slots:
            if self._stop_requests or self._failure:
                return
            self._spawn(slot)
        while not self._stop_requests and self._failure is None:
            self._wait(self._next_timeout())
            now = time.monotonic()
            for slot, worker in self._reap():
                self._on_unexpected_exit(slot, worker, now)
            if self._failure is not None or self._stop_requests:
                return
            self._kill_unready(now)
            for slot in self._slots:
                if slot.worker is None and slot.restart_at is not None and slot.restart_at <= now:
                    slot.restart_at = None
                    self._spawn(slot)
            if not self._announced and all(s.worker and s.worker.ready for s in self._slots):
                self._announce()

    def _spawn(self, slot: _Slot) -> None:
        parent, child = socket.socketpair()
        listen_fd = self._listener.fileno() if self._listener is not None else None
        launch = WorkerLaunch(slot.index, self.address, child.fileno(), listen_fd)
        fds = (child.fileno(),) if listen_fd is None else (child.fileno(), listen_fd)
        try:
            proc = subprocess.Popen(
                list(self._command(launch)),
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=self._env,
                # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group)
                # reaches only the supervisor, which then stops the workers in order.
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            parent.close()
            self._fail(f"cannot start worker {slot.index}: {exc}")
            return
        finally:
            child.close()  # the worker has its copy; ours would hide the worker's EOF
        parent.setblocking(False)
        worker = _Worker(slot.index, proc, parent, self._reloads)
        assert self._selector is not None
        self._selector.register(parent, selectors.EVENT_READ, worker)
        slot.worker = worker
        log.info("worker %d started (pid %d)", slot.index, proc.pid)

    def _wait(self, timeout: float) -> None:
        """Sleep until a wake-up, a worker's message or EOF, or `timeout`; handle what came."""
        assert self._selector is not None
        for key, _ in self._selector.select(max(0.0, timeout)):
            if key.data is not None:
                self._read_control(key.data)
                continue
            assert self._wake_r is not None
            try:
                while self._wake_r.recv(256):
                    pass
            except OSError:  # drained
                pass

    def _read_control(self, worker: _Worker) -> None:
        sock = worker.control
        if sock is None:
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker exited or closed its end: reap it soon
            self._close_control(worker)
            worker.closed_at = time.monotonic()
            return
        worker.received += data
        while b"\n" in worker.received:
            line, _, worker.received = worker.received.partition(b"\n")
            if line.split(b" ", 1)[0] == _READY and not worker.ready:
                worker.ready = True
                log.info("worker %d (pid %d) ready", worker.slot, worker.pid)
                if worker.reloads != self._reloads:  # a reload came while it was starting
                    worker.reloads = self._reloads
                    _signal(worker, signal.SIGHUP)

    def _next_timeout(self, supervising: bool = True) -> float:
        """Until the next thing to do: a restart, a ready deadline, reaping an exiting worker.

        While shutting down only the last one counts (restarts and deadlines are off)."""
        now = time.monotonic()
        timeout = _POLL_INTERVAL
        for slot in self._slots:
            worker = slot.worker
            if supervising and slot.restart_at is not None:
                timeout = min(timeout, slot.restart_at - now)
            if worker is None:
                continue
            if supervising and not worker.ready and not worker.note:
                timeout = min(timeout, worker.started + self.policy.ready_timeout - now)
            if worker.closed_at is not None and now - worker.closed_at < 2.0:
                # EOF came but exit status not yet: the exit follows within milliseconds.
                timeout = min(timeout, _EXITING_POLL)
        return max(0.0, timeout)

    def _reap(self) -> list[tuple[_Slot, _Worker]]:
        """Workers that exited (reaped: no zombies), removed from their slots."""
        gone = []
        for slot in self._slots:
            worker = slot.worker
            if worker is not None and worker.proc.poll() is not None:
                self._close_control(worker)
                slot.worker = None
                gone.append((slot, worker))
                self._exited(worker)
        return gone

    def _exited(self, worker: _Worker) -> None:
        if self._on_worker_exit is not None:
            try:
                self._on_worker_exit(worker.pid)
            except Exception:
                log.exception("on_worker_exit failed")

    def _on_unexpected_exit(self, slot: _Slot, worker: _Worker, now: float) -> None:
        what = worker.note or _describe_exit(worker.proc.returncode)
        uptime = now - worker.started
        if not self._announced:
            self._fail(
                f"worker {slot.index} (pid {worker.pid}) {what} during start-up; giving up"
                " (see its log above)"
            )
            return
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - self.policy.crash_window:
            self._crashes.popleft()
        if len(self._crashes) > self.policy.max_crashes:
            self._fail(
                f"worker {slot.index} (pid {worker.pid}) {what}; workers keep crashing:"
                f" {len(self._crashes)} exits within {self.policy.crash_window:g} s; giving up"
            )
            return
        if uptime >= self.policy.stable_after:
            slot.backoff = self.policy.initial_backoff
        delay = slot.backoff
        slot.backoff = min(delay * 2, self.policy.max_backoff)
        slot.restart_at = now + delay
        log.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it in %.3g s",
            slot.index,
            worker.pid,
            what,
            uptime,
            delay,
        )

    def _kill_unready(self, now: float) -> None:
        for slot in self._slots:
            worker = slot.worker
            if worker is None or worker.ready or worker.note:
                continue
            if now - worker.started >= self.policy.ready_timeout:
                worker.note = f"was not ready within {self.policy.ready_timeout:g} s"
                log.error("worker %d (pid %d) %s; killing it", slot.index, worker.pid, worker.note)
                _signal(worker, signal.SIGKILL)

    def _announce(self) -> None:
        self._announced = True
        log.info("all %d workers ready (pids %s)", len(self._slots), self.pids())
        if self._on_ready is None:
            return
        try:
            self._on_ready(self.address)
        except Exception:
            log.exception("on_ready failed")
            self._fail("on_ready failed; stopping")

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            log.error("%s", reason)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> int:
        if self._announced and self._on_stopping is not None:
            try:
                self._on_stopping()
            except Exception:
                log.exception("on_stopping failed")
        if self._listener is not None:
            # The workers keep accepting from their own copies until they get SIGTERM; closing
            # ours unlinks the path, so from now on new clients are refused, as with one process.
            self._listener.close()
            self._listener = None
        live = [s.worker for s in self._slots if s.worker is not None]
        for slot in self._slots:
            slot.restart_at = None
        for worker in live:
            _signal(worker, signal.SIGTERM)
        budget = self.exit_wait + self.stop_margin
        if live:
            log.info("stopping %d workers: waiting up to %.1f s", len(live), budget)
        stop_requests = self._stop_requests
        deadline = time.monotonic() + budget
        clean = True
        while any(s.worker is not None for s in self._slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop_requests > stop_requests:
                break  # out of time, or asked again: kill them now
            self._wait(min(remaining, self._next_timeout(supervising=False)))
            for _, worker in self._reap():
                code = worker.proc.returncode
                # A worker still starting up may die of SIGTERM before it handles signals.
                if code != 0 and not (code == -signal.SIGTERM and not worker.ready):
                    clean = False
                    log.warning(
                        "worker %d (pid %d) %s", worker.slot, worker.pid, _describe_exit(code)
                    )
        stragglers = [s.worker for s in self._slots if s.worker is not None]
        if stragglers:
            clean = False
            log.warning(
                "killing %d worker(s) still running: %s",
                len(stragglers),
                [w.pid for w in stragglers],
            )
            self._kill_all()
        if self._failure is not None:
            return 1
        log.info("all workers stopped%s", "" if clean else " (not all cleanly)")
        return 0 if clean else 1

    def _kill_all(self) -> None:
        for slot in self._slots:
            worker = slot.worker
            if worker is None:
                continue
            _signal(worker, signal.SIGKILL)
            try:
                worker.proc.wait(_KILL_WAIT)
                self._exited(worker)
            except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): give up on it
                log.error("worker %d (pid %d) did not die", slot.index, worker.pid)
            self._close_control(worker)
            slot.worker = None

    def _close_control(self, worker: _Worker) -> None:
        sock, worker.control = worker.control, None
        if sock is not None:
            if self._selector is not None:
                self._selector.unregister(sock)
            sock.close()

    def _close(self) -> None:
        """Release everything, also after an exception: no worker outlives `run()`."""
        self._kill_all()
        if self._selector is not None:
            self._selector.close()
        for sock in (self._wake_r, self._wake_w, self._reservation):
            if sock is not None:
                sock.close()
        self._wake_w = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _reserve_tcp_port(address: Any) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket on `address`, resolved as create_listener
    resolves it (so that the workers' listeners join the same port)."""
    host, port = address
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _signal(worker: _Worker, signum: int) -> None:
    try:
        worker.proc.send_signal(signum)
    except ProcessLookupError:  # already gone; poll() will reap it
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# ---------------------------------------------------------------------- worker side


class SupervisorLink:
    """A worker's end of the control channel: the fd given as `WorkerLaunch.control_fd`."""

    def __init__(self, fd: int) -> None:
        # Not passed on to processes the handler may start: their copy would hide our exit.
        os.set_inheritable(fd, False)
        self._sock = socket.socket(fileno=fd)
        self._closing = False

    def ready(self, address: str) -> None:
        """Tell the supervisor this worker accepts calls on `address`."""
        self._sock.sendall(f"ready {os.getpid()} {address}\n".encode())

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call `on_lost()` (on a daemon thread) when the supervisor goes away."""

        def wait_for_eof() -> None:
            try:
                while self._sock.recv(256):
                    pass
            except OSError:
                pass
            if not self._closing:
                log.warning("the supervisor is gone; stopping")
                on_lost()

        threading.Thread(target=wait_for_eof, name="rpcpoll-supervisor-link", daemon=True).start()

    def close(self) -> None:
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the watching thread
        except OSError:
            pass
        self._sock.close()
