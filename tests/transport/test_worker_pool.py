"""The worker pool that runs connection handlers (netpoll's gopool, with threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from transport_testutil import IO_TIMEOUT, wait_until

from rpcpoll.transport import WorkerPool

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    made = WorkerPool(max_workers=8, idle_timeout=5.0, name="test-worker")
    try:
        yield made
    finally:
        made.close()


def workers_named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_submitted_tasks_run_on_worker_threads(pool: WorkerPool):
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def task(i: int) -> None:
        with lock:
            results.append((i, threading.current_thread().name))
        done.release()

    for i in range(50):
        pool.submit(lambda i=i: task(i))
    for _ in range(50):
        assert done.acquire(timeout=IO_TIMEOUT)
    assert sorted(i for i, _ in results) == list(range(50))
    assert all(name.startswith("test-worker-") for _, name in results)
    assert 1 <= pool.workers <= 8


def test_a_raising_task_is_logged_and_the_pool_keeps_running(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
):
    pool.submit(lambda: 1 / 0)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(IO_TIMEOUT)
    wait_until(
        lambda: any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records),
        message="the failure to be logged",
    )


def test_a_blocked_task_does_not_hold_up_the_others(pool: WorkerPool):
    release = threading.Event()
    blocked_started = threading.Event()

    def blocked() -> None:
        blocked_started.set()
        release.wait(IO_TIMEOUT)

    pool.submit(blocked)
    assert blocked_started.wait(IO_TIMEOUT)
    done = threading.Event()
    started = time.monotonic()
    pool.submit(done.set)
    assert done.wait(IO_TIMEOUT)
    assert time.monotonic() - started < 0.5
    release.set()


def test_tasks_beyond_max_workers_wait_for_a_free_worker():
    pool = WorkerPool(max_workers=2, idle_timeout=5.0, name="test-worker")
    release = threading.Event()
    running = threading.Semaphore(0)
    third = threading.Event()
    try:
        for _ in range(2):
            pool.submit(lambda: (running.release(), release.wait(IO_TIMEOUT)))
        for _ in range(2):
            assert running.acquire(timeout=IO_TIMEOUT)
        pool.submit(third.set)
        assert not third.wait(0.05), "a third worker was started beyond max_workers"
        assert pool.workers == 2
        release.set()
        assert third.wait(IO_TIMEOUT)
    finally:
        release.set()
        pool.close()


def test_idle_workers_exit_after_the_idle_timeout():
    pool = WorkerPool(max_workers=4, idle_timeout=0.05, name="test-idle-worker")
    try:
        done = threading.Barrier(4)
        for _ in range(3):
            pool.submit(lambda: done.wait(IO_TIMEOUT))
        done.wait(IO_TIMEOUT)
        assert pool.workers == 3
        wait_until(lambda: pool.workers == 0, timeout=1.0, message="idle workers to exit")
        wait_until(lambda: not workers_named("test-idle-worker"), message="their threads")
        ran = threading.Event()
        pool.submit(ran.set)  # the pool starts a worker again on demand
        assert ran.wait(IO_TIMEOUT)
    finally:
        pool.close()


def test_trim_stops_idle_workers_now_and_busy_ones_after_their_task(pool: WorkerPool):
    release = threading.Event()
    busy_started = threading.Event()
    pool.submit(lambda: (busy_started.set(), release.wait(IO_TIMEOUT)))
    assert busy_started.wait(IO_TIMEOUT)
    idle_done = threading.Event()
    pool.submit(idle_done.set)
    assert idle_done.wait(IO_TIMEOUT)
    assert pool.workers == 2

    trimmer = threading.Thread(target=pool.trim, name="trimmer")
    trimmer.start()
    wait_until(lambda: pool.workers == 1, message="the idle worker to stop")
    assert trimmer.is_alive(), "trim waits for the busy worker"
    release.set()
    trimmer.join(IO_TIMEOUT)
    assert pool.workers == 0
    assert workers_named("test-worker") == []

    ran = threading.Event()
    pool.submit(ran.set)  # trimmed, not closed
    assert ran.wait(IO_TIMEOUT)


def test_a_task_submitted_during_trim_still_runs(pool: WorkerPool):
    for _ in range(20):
        pool.submit(lambda: None)
    ran = threading.Event()
    trimmer = threading.Thread(target=pool.trim, name="trimmer")
    trimmer.start()
    pool.submit(ran.set)
    trimmer.join(IO_TIMEOUT)
    assert ran.wait(IO_TIMEOUT)


def test_close_runs_queued_tasks_then_refuses_new_ones():
    pool = WorkerPool(max_workers=1, idle_timeout=5.0, name="test-worker")
    release = threading.Event()
    ran: list[int] = []
    pool.submit(lambda: release.wait(IO_TIMEOUT))
    for i in range(5):
        pool.submit(lambda i=i: ran.append(i))
    closer = threading.Thread(target=pool.close, name="closer")
    closer.start()
    release.set()
    closer.join(IO_TIMEOUT)
    assert ran == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    assert pool.workers == 0


def test_max_workers_must_be_positive():
    with pytest.raises(ValueError):
        WorkerPool(max_workers=0)
