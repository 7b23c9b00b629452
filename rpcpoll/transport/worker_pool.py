"""A worker pool for connection handlers: netpoll's gopool, with threads.

Tasks go into one C-implemented `queue.SimpleQueue`. A worker thread is started when a task
arrives and no worker is idle, up to `max_workers`; a worker that stays idle for `idle_timeout`
seconds exits, so an idle process holds no extra threads. Exceptions from tasks are logged.

Threads are expensive hops under the GIL: a task handed to a worker waits until the poller
releases the GIL (at its next `epoll_wait`, or after the 5 ms switch interval). Batch work per
task, and measure before adding hops.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["WorkerPool", "default_pool", "set_default_pool"]

log = logging.getLogger("rpcpoll.transport")

_STOP = object()


class WorkerPool:
    """Runs submitted callables on up to `max_workers` threads, started on demand.

    Every submitted task either finds a waiting worker or starts one (until `max_workers`), so
    a task never waits behind a blocked one while the pool has room.
    """

    def __init__(
        self, max_workers: int = 256, idle_timeout: float = 10.0, name: str = "rpcpoll-worker"
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], object] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._spare = 0  # waiting workers minus queued tasks (negative: a backlog)
        self._closed = False
        self._serial = 0

    def submit(self, task: Callable[[], object]) -> None:
        """Run `task()` on a worker thread."""
        if self._closed:
            raise RuntimeError("worker pool is closed")
        self._queue.put(task)
        with self._lock:
            self._spare -= 1
            if self._spare < 0 and len(self._workers) < self.max_workers:
                self._spawn_locked()

    __call__ = submit

    @property
    def workers(self) -> int:
        return len(self._workers)

    def trim(self, timeout: float = 5.0) -> None:
        """Stop every idle worker now and wait for them; busy ones stop after their task."""
        with self._lock:
            workers = list(self._workers)
            for _ in workers:
                self._queue.put(_STOP)
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new tasks, let queued ones run, then stop every worker."""
        self._closed = True
        self.trim(timeout)

    def _spawn_locked(self) -> None:
        self._spare += 1
        self._serial += 1
        worker = threading.Thread(
            target=self._work, name=f"{self._name}-{self._serial}", daemon=True
        )
        self._workers.add(worker)
        worker.start()

    def _work(self) -> None:
        get = self._queue.get
        lock = self._lock
        me = threading.current_thread()
        while True:
            try:
                task = get(timeout=self.idle_timeout)
            except queue.Empty:
                with lock:
                    if self._spare > 0:  # nobody is counting on this worker: retire it
                        self._spare -= 1
                        self._workers.discard(me)
                        return
                continue
            if task is _STOP:
                with lock:
                    self._spare -= 1
                    self._workers.discard(me)
                    if self._spare < 0 and not self._closed:
                        self._spawn_locked()  # a queued task must not be stranded
                return
            try:
                task()  # type: ignore[operator]
            except Exception:
                log.exception("worker task failed")
            task = None  # drop references before waiting
            with lock:
                self._spare += 1


_default_pool = WorkerPool()


def default_pool() -> WorkerPool:
    """The process-wide pool that runs handlers unless an EventLoop is told otherwise."""
    return _default_pool


def set_default_pool(pool: WorkerPool) -> None:
    global _default_pool
    _default_pool = pool
