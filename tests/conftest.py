"""Fixtures shared by every test directory.

`no_leaks` checks that a test gives back every file descriptor and thread it created. Pollers
are process-wide and persistent (as in netpoll), so they are started before the counts are
taken; the default worker pool is trimmed before and after (idle workers linger for their idle
timeout by design), and the test fails if the counts do not come back within a few seconds.
Test directories that open sockets make it autouse in their conftest.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from rpcpoll import transport
from rpcpoll.transport import default_pool

sys.path.insert(0, os.path.dirname(__file__))  # for testutil (importlib import mode)

LEAK_WAIT = 3.0  # seconds the leak check waits for fds and threads to come back


def _fd_targets() -> dict[int, str]:
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, already closed
            pass
    return targets


def _describe_fd(fd: int, target: str) -> str:
    """The fd's target, plus family and addresses for a socket (read through a duplicate)."""
    if not target.startswith("socket:"):
        return target
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return target
    try:
        try:
            peer = dup.getpeername()
        except OSError:
            peer = None
        return f"{target} {dup.family.name} {dup.getsockname()!r} -> {peer!r}"
    except OSError:
        return target
    finally:
        dup.close()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _warm_uvloop() -> None:
    """uvloop opens a pipe for the process with its first loop and keeps it: open it before
    any leak check counts fds."""
    try:
        import uvloop
    except ImportError:
        return
    loop = uvloop.new_event_loop()
    loop.close()


_warm_uvloop()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    transport.initialize()
    default_pool().trim()
    fds_before = _fd_targets()
    fd_count = _fd_count()
    threads_before = set(threading.enumerate())
    thread_count = threading.active_count()
    yield
    deadline = time.monotonic() + LEAK_WAIT
    while True:
        # Idle workers are expected (they linger for the pool's idle timeout): stop them, also
        # those started by work the test left behind (a hang-up handled after the test ended).
        default_pool().trim(timeout=0.1)
        fds_now, threads_now = _fd_count(), threading.active_count()
        if fds_now == fd_count and threads_now == thread_count:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    fds_after = _fd_targets()
    extra_fds = {fd: _describe_fd(fd, t) for fd, t in fds_after.items() if fds_before.get(fd) != t}
    gone_fds = {fd: t for fd, t in fds_before.items() if fds_after.get(fd) != t}
    extra_threads = [t.name for t in threading.enumerate() if t not in threads_before]
    gone_threads = [t.name for t in threads_before if not t.is_alive()]
    pytest.fail(
        f"leak check after {LEAK_WAIT} s: fds {fd_count} -> {fds_now}, threads {thread_count}"
        f" -> {threads_now}\n  extra fds: {extra_fds}\n  fds gone: {gone_fds}"
        f"\n  extra threads: {extra_threads}\n  threads gone: {gone_threads}"
    )
