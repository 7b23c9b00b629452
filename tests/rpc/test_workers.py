"""`rpcpoll serve --workers N`: a supervisor and N worker processes on one address.

The CLI tests run the real command as a user would and read its log (a file: the supervisor
and its workers all write to it); the Supervisor tests drive the class with tiny fake workers
(`python -c`), for the restart and give-up rules. Every process a test starts is killed in
teardown, also when the test fails.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from testutil import wait_until

from rpcpoll.server.supervisor import RestartPolicy, Supervisor, WorkerLaunch

SERVING = re.compile(r"serving (?P<service>\S+) \((?P<handler>\S+)\) on (?P<address>\S+)")
STARTED = re.compile(r"worker (?P<slot>\d+) started \(pid (?P<pid>\d+)\)")
READY = re.compile(r"worker (?P<slot>\d+) \(pid (?P<pid>\d+)\) ready")

HANDLERS = """\
import os
import pathlib
import time

from rpctest_rpc import Resp, TestServiceHandler


class PidHandler(TestServiceHandler):
    '''Answers with the pid of the worker that served the call.'''

    def echo(self, request, context):
        return Resp(text=request.text, count=os.getpid())

    def peek(self, request, context):
        return Resp(text=request.text, count=os.getpid())

    def sleep(self, request, context):
        marks = os.environ.get("WORKERS_TEST_MARKS")
        if marks:  # tells the test that this call is in flight
            pathlib.Path(marks, f"{request.text}-{os.getpid()}").touch()
        time.sleep(request.sleep_ms / 1000)
        return Resp(text=request.text, count=os.getpid())


class CrashAtStart(TestServiceHandler):
    def __init__(self):
        os._exit(3)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited and closed its sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reaped(pid: int) -> bool:
    """Whether `pid` exited and its parent reaped it. (Unlike a zombie thread group leader,
    whose other threads may still be exiting with the process's sockets open.)"""
    return not Path(f"/proc/{pid}").exists()


def kill_if_rpcpoll(pid: int) -> None:
    try:
        if b"rpcpoll" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class Served:
    """A running `rpcpoll serve` and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.address = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            match = pattern.search(self.log())
            if match is None and self.proc.poll() is not None:
                pytest.fail(f"rpcpoll serve exited ({self.proc.returncode}):\n{self.log()}")
            return match

        match: re.Match[str] = wait_until(found, timeout, f"{pattern.pattern!r} in the log")
        return match

    def ready_pids(self) -> dict[int, int]:
        """slot -> pid of the latest worker that became ready in each slot."""
        return {int(m["slot"]): int(m["pid"]) for m in READY.finditer(self.log())}

    def all_pids(self) -> set[int]:
        return {int(m["pid"]) for m in STARTED.finditer(self.log())}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.all_pids():
            kill_if_rpcpoll(pid)


@pytest.fixture
def serve_workers(rpctest: ModuleType, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`serve_workers(*args, ready=True) -> Served`: `rpcpoll serve ARGS` in tmp_path, where
    `workers_handlers` (PidHandler, CrashAtStart) is importable; killed with its workers after
    the test."""
    (tmp_path / "workers_handlers.py").write_text(HANDLERS)
    generated = str(Path(rpctest.__file__).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [generated, os.environ.get("PYTHONPATH")])),
        "WORKERS_TEST_MARKS": str(tmp_path / "marks"),
    }
    (tmp_path / "marks").mkdir()
    started: list[Served] = []

    def start(*args: str, ready: bool = True) -> Served:
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rpcpoll", "serve", *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=env,
            )
        served = Served(proc, log_path)
        started.append(served)
        if ready:
            served.address = served.wait_for(SERVING)["address"]
        return served

    try:
        yield start
    finally:
        for served in started:
            served.kill()


def pid_of_call(rpctest: ModuleType, address: str) -> int:
    """One Echo call on a new client (a new connection); the pid of the worker that served it."""
    with rpctest.TestServiceClient(address, timeout=5) as client:
        return int(client.echo(rpctest.Req(text="pid")).count)


# ---------------------------------------------------------------------- the command


@pytest.mark.parametrize("mode", [[], ["--on-poller"]], ids=["pool", "on-poller"])
def test_new_connections_reach_every_worker(
    rpctest: ModuleType, serve_workers: Any, mode: list[str]
) -> None:
    served = serve_workers(
        "workers_handlers:PidHandler", "--workers", "2", "--address", "127.0.0.1:0", *mode
    )
    assert served.log().count("with 2 workers") == 1
    workers = set(served.ready_pids().values())
    assert len(workers) == 2 and served.proc.pid not in workers
    # 40 connections hashed evenly over 2 listeners: all on one has probability 2 ** -39.
    seen = [pid_of_call(rpctest, served.address) for _ in range(40)]
    assert set(seen) == workers
    assert served.stop(signal.SIGINT) == 0, served.log()
    wait_until(lambda: not any(alive(pid) for pid in workers), 5, "the workers to exit")
    assert "Traceback" not in served.log()


def test_a_killed_worker_is_restarted_and_calls_keep_succeeding(
    rpctest: ModuleType, serve_workers: Any
) -> None:
    served = serve_workers(
        "workers_handlers:PidHandler", "--workers", "2", "--address", "127.0.0.1:0"
    )
    before = served.ready_pids()
    with rpctest.TestServiceClient(served.address, timeout=5) as pooled:
        # A long-lived client: its pooled connection is on one worker; kill that one.
        victim = int(pooled.peek(rpctest.Req()).count)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: reaped(victim), 5, "the supervisor to reap the killed worker")
        # The dead worker's listener is gone: new connections go to the survivor (or to the
        # new worker, once it listens), and the pooled client drops its dead connection and
        # dials again (Peek is idempotent).
        assert victim not in {pid_of_call(rpctest, served.address) for _ in range(10)}
        assert int(pooled.peek(rpctest.Req()).count) != victim
        slot = next(s for s, pid in before.items() if pid == victim)

        def restarted() -> int | None:
            pid = served.ready_pids().get(slot)
            return pid if pid != victim else None

        newcomer = wait_until(restarted, 10, "the worker to be restarted")
        assert alive(newcomer) and newcomer not in before.values()
        wait_until(
            lambda: pid_of_call(rpctest, served.address) == newcomer, 10, "a call on the new worker"
        )
    assert re.search(
        rf"worker {slot} \(pid {victim}\) was killed by SIGKILL after [\d.]+ s; restarting it in"
        r" 0\.1 s",
        served.log(),
    ), served.log()
    assert served.stop() == 0, served.log()


def test_sigterm_lets_in_flight_calls_finish_then_exits_0(
    rpctest: ModuleType, serve_workers: Any, tmp_path: Path
) -> None:
    served = serve_workers(
        "workers_handlers:PidHandler", "--workers", "2", "--address", "127.0.0.1:0",
        "--exit-wait", "5",
    )  # fmt: skip
    workers = set(served.ready_pids().values())
    calls = 16  # on 16 new connections: all on one worker has probability 2 ** -15
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            with rpctest.TestServiceClient(served.address, timeout=10) as client:
                results[i] = client.sleep(rpctest.Req(text=f"c{i}", sleep_ms=1000))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    try:
        marks = tmp_path / "marks"
        wait_until(lambda: len(list(marks.iterdir())) == calls, 10, "every call to be in flight")
        served.proc.send_signal(signal.SIGTERM)
        busy = {int(mark.name.rsplit("-", 1)[1]) for mark in marks.iterdir()}
        assert busy == workers  # both workers had calls in flight
    finally:
        for thread in threads:
            thread.join(15)
    assert served.proc.wait(15) == 0, served.log()
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert sorted(results) == list(range(calls))
    assert {int(r.count) for r in results.values()} <= workers
    assert not [pid for pid in served.all_pids() if alive(pid)]
    log = served.log()
    assert "all workers stopped" in log and "Traceback" not in log
    assert "some calls did not finish" not in log


def test_a_worker_that_cannot_start_makes_the_supervisor_fail(serve_workers: Any) -> None:
    started = time.monotonic()
    served = serve_workers(
        "workers_handlers:CrashAtStart", "--workers", "2", "--address", "127.0.0.1:0", ready=False
    )
    assert served.proc.wait(20) == 1
    assert time.monotonic() - started < 20
    log = served.log()
    assert re.search(r"worker \d \(pid \d+\) exited with status 3 during start-up; giving up", log)
    assert not SERVING.search(log)
    assert not [pid for pid in served.all_pids() if alive(pid)]


def test_the_supervisor_being_killed_stops_its_workers(serve_workers: Any) -> None:
    served = serve_workers(
        "workers_handlers:PidHandler", "--workers", "2", "--address", "127.0.0.1:0"
    )
    workers = set(served.ready_pids().values())
    served.proc.kill()
    served.proc.wait(5)
    # Each worker sees EOF on its control channel and stops gracefully on its own.
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "orphaned workers to exit")
    assert served.log().count("the supervisor is gone; stopping") == 2


def test_workers_share_a_unix_socket_the_supervisor_created(
    rpctest: ModuleType, serve_workers: Any, tmp_path: Path
) -> None:
    path = tmp_path / "svc.sock"
    served = serve_workers("workers_handlers:PidHandler", "--workers", "2", "--unix", str(path))
    assert served.address == f"unix:{path}"
    workers = set(served.ready_pids().values())
    seen = {pid_of_call(rpctest, served.address) for _ in range(20)}
    assert seen and seen <= workers
    assert served.stop() == 0, served.log()
    assert not path.exists()
    assert not [pid for pid in served.all_pids() if alive(pid)]


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_workers_must_be_a_positive_number(workers: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rpcpoll", "serve", "--workers", workers],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Invalid value for '--workers'" in done.stderr and "Traceback" not in done.stderr


def test_workers_on_a_busy_address_fail_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host, port = taken.getsockname()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rpcpoll",
                "serve",
                "--workers",
                "2",
                "--address",
                f"{host}:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "cannot listen on" in done.stderr and "Traceback" not in done.stderr
    assert "started" not in done.stderr  # no worker was started


# ---------------------------------------------------------------------- the Supervisor class

# A fake worker: says it is ready (unless told not to), then lives for LIFETIME seconds and
# exits with status 1; on SIGTERM it exits 0, unless told to ignore SIGTERM.
FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    fd, lifetime, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if mode != "mute":
        socket.socket(fileno=fd).sendall(b"ready %d fake\\n" % os.getpid())
    time.sleep(lifetime)
    sys.exit(1)
    """
)


def fake_workers(lifetime: float, mode: str = "") -> Callable[[WorkerLaunch], list[str]]:
    def command(launch: WorkerLaunch) -> list[str]:
        return [sys.executable, "-c", FAKE_WORKER, str(launch.control_fd), str(lifetime), mode]

    return command


class Hooks:
    """Records the supervisor's hook calls; with `stop_when_ready`, stops it once ready."""

    def __init__(self, stop_when_ready: bool = False) -> None:
        self.stop_when_ready = stop_when_ready
        self.ready: list[str] = []
        self.stopping: list[list[int]] = []  # the live workers when on_stopping ran
        self.supervisor: Supervisor | None = None

    def on_ready(self, address: str) -> None:
        self.ready.append(address)
        if self.stop_when_ready:
            assert self.supervisor is not None
            self.supervisor.stop()

    def on_stopping(self) -> None:
        assert self.supervisor is not None
        self.stopping.append([p for p in self.supervisor.pids() if alive(p)])


def supervise(
    command: Callable[[WorkerLaunch], list[str]], hooks: Hooks | None = None, **options: Any
) -> Supervisor:
    hooks = hooks or Hooks()
    supervisor = Supervisor(
        "127.0.0.1:0", 2, command, on_ready=hooks.on_ready, on_stopping=hooks.on_stopping, **options
    )
    hooks.supervisor = supervisor
    return supervisor


def test_hooks_bracket_the_service_and_on_stopping_runs_before_workers_are_signalled() -> None:
    hooks = Hooks(stop_when_ready=True)
    supervisor = supervise(fake_workers(30), hooks)
    started = time.monotonic()
    assert supervisor.run() == 0
    assert time.monotonic() - started < 10
    assert hooks.ready == [supervisor.address] and supervisor.address.startswith("127.0.0.1:")
    assert not supervisor.address.endswith(":0")
    assert len(hooks.stopping) == 1 and len(hooks.stopping[0]) == 2  # both still running
    assert supervisor.pids() == []


def test_workers_that_keep_crashing_make_the_supervisor_give_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    policy = RestartPolicy(initial_backoff=0.01, max_backoff=0.05, max_crashes=3)
    supervisor = supervise(fake_workers(0.3), hooks, policy=policy)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="rpcpoll.server"):
        assert supervisor.run() == 1
    assert time.monotonic() - started < 10
    assert "restarting it in 0.01 s" in caplog.text
    assert "workers keep crashing: 4 exits within 60 s; giving up" in caplog.text
    assert len(hooks.ready) == 1 and len(hooks.stopping) == 1  # deregistered on the way out
    assert supervisor.pids() == []


def test_a_worker_never_ready_is_killed_and_the_supervisor_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    supervisor = supervise(fake_workers(30, "mute"), hooks, policy=RestartPolicy(ready_timeout=0.5))
    with caplog.at_level(logging.INFO, logger="rpcpoll.server"):
        assert supervisor.run() == 1
    assert "was not ready within 0.5 s during start-up; giving up" in caplog.text
    assert hooks.ready == [] and hooks.stopping == []  # never announced, never withdrawn
    assert supervisor.pids() == []


def test_workers_ignoring_sigterm_are_killed_after_exit_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks(stop_when_ready=True)
    supervisor = supervise(fake_workers(30, "stubborn"), hooks, exit_wait=0.2, stop_margin=0.2)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="rpcpoll.server"):
        assert supervisor.run() == 1  # not a clean stop
    assert time.monotonic() - started < 10
    assert "killing 2 worker(s) still running" in caplog.text


def test_stop_before_run_starts_nothing() -> None:
    supervisor = supervise(fake_workers(30))
    supervisor.stop()
    assert supervisor.run() == 0
    assert supervisor.pids() == []
