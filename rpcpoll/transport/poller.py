"""Pollers: threads that wait for readiness and run the handlers of the fds assigned to them.

netpoll runs one poller per 20 cores; in CPython the GIL lets only one thread run Python at a
time, so the default is one poller per process (`configure(num_loops=...)` changes it).
Connections and listeners are assigned round-robin (default) or at random.

A poller also runs callbacks posted from other threads (`call_soon`) and timers
(`call_later`), both on its own thread between event batches. Everything that must not race
with the poller's own use of a socket (closing it, for one) is posted this way.

Hand-off (Go's sysmon, for handlers that block). After `watch_stalls()`, a watchdog thread
checks every `STALL_CHECK_INTERVAL` whether a handler (or callback) has held the loop for
longer than `stall_after`; if so, a new thread takes over the loop and the stalled thread,
once its handler returns, leaves without touching the loop again (`handoffs` counts them).
So a handler that blocks delays the poller's other fds by about `stall_after`, not for as long
as it blocks. `hand_off()` does the same at once from a handler that knows it will block;
`in_poller_thread()` tells a handler whether it still runs as the loop. The watchdog parks
while the loop is idle, so it costs nothing then.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from .poll_backend import READABLE, Backend, default_backend

__all__ = ["Poller", "PollerManager", "TimerHandle", "configure", "manager", "on_poller_thread"]

log = logging.getLogger("rpcpoll.transport")

_thread_state = threading.local()


def on_poller_thread() -> bool:
    """True on the thread of any poller, where blocking would stall all of its fds."""
    return getattr(_thread_state, "is_poller", False)


Handler = Callable[[int], None]

# Seconds a handler may hold a watched loop before the loop moves on, and how often the
# watchdog looks. Each look costs the busy loop a forced GIL switch: measured on the benchmark
# machine with 8 connections, a look every 5 ms cost about 25 % of the loop's throughput and
# one every 20 ms nothing measurable. A method that blocks is caught once and then gives the
# loop away itself, so a longer first stall is the cheaper trade.
STALL_AFTER = 0.02
STALL_CHECK_INTERVAL = 0.02
WATCHDOG_PARK_AFTER = 5  # idle checks in a row after which the watchdog waits for work
_COMPACT_MIN = 64  # cancelled timers before the heap is worth compacting


class TimerHandle:
    """A pending `call_later` callback; `cancel()` stops it if it has not run yet.

    Cancelling drops the callback at once: a cancelled timer stays in its poller's heap until
    it is due (or the heap is compacted), and must not keep what the callback refers to (a
    closed connection, say) reachable until then.
    """

    __slots__ = ("_poller", "callback", "cancelled", "when")

    def __init__(
        self, when: float, callback: Callable[[], None], poller: Poller | None = None
    ) -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback
        self.cancelled = False
        self._poller = poller

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller._timer_cancelled()


class Poller:
    """One thread, one epoll (or kqueue) set, and the handlers of the fds registered in it.

    Handlers are called on the poller thread as `handler(mask)` with epoll-style bits. An
    exception from a handler is logged and never stops the loop.
    """

    def __init__(self, name: str = "rpcpoll-poller", *, start: bool = True) -> None:
        self._backend: Backend = default_backend()
        self._handlers: dict[int, Handler] = {}
        self._ready: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = itertools.count()
        self._timer_lock = threading.Lock()
        self._cancelled_timers = 0  # approximate: only decides when to compact the heap
        self._wake_r, self._wake_w = _wakeup_pair()
        self._wake_pending = False
        self._wake_lock = threading.Lock()  # orders wake-up writes before the fds' close
        self._closed = False
        self._exited = False  # the loop has stopped and closed its fds
        self.registered = 0  # fds other than the wake-up fd
        self._handlers[self._wake_r] = self._drain_wakeup
        self._backend.register(self._wake_r)
        self._name = name
        # Hand-off state: the loop thread publishes when its current handler started (0.0: in
        # poll, not busy) and leaves as soon as it sees a newer generation (see the module docs).
        self._loop_lock = threading.Lock()
        #: Goes up by one each time the loop moves to a new thread (read it, never write it):
        #: a handler that compares it before and after a call knows whether it still runs as
        #: the loop, for the price of an attribute read.
        self.generation = 0
        self._busy_since = 0.0
        #: Handlers on the loop thread add 1 per unit of work they finish (a call): the
        #: watchdog counts a stall as `stall_after` without progress, so that a long batch of
        #: quick calls is not one. An int increment: cheaper than reading the clock per call.
        self.progress = 0
        self.stall_after: float | None = None
        self.handoffs = 0
        self._watchers = 0
        # The watchdog parks on this lock after WATCHDOG_PARK_AFTER idle checks, so an idle
        # server costs nothing; the loop wakes it when it runs a handler again.
        self._watchdog_parked = False
        self._watchdog_wake = threading.Lock()
        self._watchdog_wake.acquire()
        self._watchdog: threading.Thread | None = None
        self._thread = threading.Thread(target=self._run, args=(0,), name=name, daemon=True)
        self._ident: int | None = None
        if start:  # else a subclass drives the loop (LoopPoller)
            self._thread.start()

    # ------------------------------------------------------------------ public API

    def register(self, fd: int, handler: Handler, write: bool = False) -> None:
        """Watch `fd` for reads (and writes if asked); events go to `handler(mask)`."""
        self._handlers[fd] = handler
        self._backend.register(fd, write)
        self.registered += 1

    def modify(self, fd: int, write: bool, read: bool = True) -> None:
        """Set what `fd` is watched for: writability, and readability unless `read` is False
        (a connection whose reading is paused; hang-ups and errors are reported anyway)."""
        self._backend.modify(fd, write, read)

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`. Safe to call twice; an event already fetched may still arrive."""
        if self._handlers.pop(fd, None) is not None:
            self._backend.unregister(fd)
            self.registered -= 1

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the poller thread after the current batch of events.

        On a poller whose loop has already stopped, it runs on the calling thread instead, so
        a posted clean-up (closing a socket, say) is never lost.
        """
        self._ready.append(callback)
        if self._exited:
            self._run_ready()
        elif not self._wake_pending and threading.get_ident() != self._ident:
            self._wake()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` on the poller thread after `delay` seconds."""
        handle = TimerHandle(time.monotonic() + delay, callback, self)
        with self._timer_lock:
            heapq.heappush(self._timers, (handle.when, next(self._timer_seq), handle))
            earliest = self._timers[0][2] is handle
        if earliest and threading.get_ident() != self._ident:
            self._wake()
        return handle

    def in_poller_thread(self) -> bool:
        return threading.get_ident() == self._ident

    @property
    def pending_timers(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included (for tests)."""
        return len(self._timers)

    def _timer_cancelled(self) -> None:
        # Cancelled timers hold nothing (their callback is dropped), but a heap of mostly
        # cancelled entries still costs memory and log(n) per push: rebuild it once they are
        # the majority (asyncio does the same).
        self._cancelled_timers += 1
        if self._cancelled_timers > _COMPACT_MIN and self._cancelled_timers * 2 > len(self._timers):
            with self._timer_lock:
                self._timers = [entry for entry in self._timers if not entry[2].cancelled]
                heapq.heapify(self._timers)
                self._cancelled_timers = 0

    def watch_stalls(self, stall_after: float = STALL_AFTER) -> None:
        """Start watching for handlers that hold the loop longer than `stall_after` seconds
        (module docs). Counted: the watchdog runs until as many `unwatch_stalls()` calls."""
        with self._loop_lock:
            self.stall_after = stall_after
            self._watchers += 1
            if self._watchdog is not None or self._closed:
                return
            self._watchdog = threading.Thread(
                target=self._watch, name=f"{self._name}-watchdog", daemon=True
            )
            self._watchdog.start()

    def touch(self) -> None:
        """From a handler on the loop thread: count a unit of work done (`progress`)."""
        self.progress += 1

    def hand_off(self) -> None:
        """From a handler on the loop thread: give the loop to a new thread now, and go on as a
        plain thread (for work known to block). Elsewhere, does nothing."""
        with self._loop_lock:
            if threading.get_ident() != self._ident or self._closed:
                return
            self._start_new_loop_locked()
        _thread_state.is_poller = False

    def _start_new_loop_locked(self) -> None:
        self.generation += 1
        self._busy_since = 0.0
        self.handoffs += 1
        self._thread = threading.Thread(
            target=self._run, args=(self.generation,), name=self._name, daemon=True
        )
        self._ident = None  # until the new thread runs: call_soon() wakes the loop
        self._thread.start()

    def unwatch_stalls(self) -> None:
        """Undo one `watch_stalls()`; the watchdog stops after the last."""
        with self._loop_lock:
            self._watchers = max(0, self._watchers - 1)
            if self._watchdog_parked:
                self._wake_watchdog_locked()  # to notice it is no longer needed

    def _wake_watchdog_locked(self) -> None:
        self._watchdog_parked = False
        self._watchdog_wake.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the loop and release its fds; registered fds are not closed."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        with self._loop_lock:
            if self._watchdog_parked:
                self._wake_watchdog_locked()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout)  # it stops within one check interval of `closed`
        if threading.get_ident() != self._ident:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the loop

    def _run(self, generation: int) -> None:
        self._ident = threading.get_ident()
        _thread_state.is_poller = True
        handlers = self._handlers
        poll = self._backend.poll
        ready = self._ready
        loop_lock = self._loop_lock
        monotonic = time.monotonic
        try:
            while True:
                with loop_lock:
                    if self.generation != generation:
                        return  # handed off: another thread runs the loop now
                    if self._closed:
                        break
                    self._busy_since = 0.0
                timeout = 0.0 if ready else self._next_timeout()
                try:
                    events = poll(timeout)
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
                for fd, mask in events:
                    handler = handlers.get(fd)
                    if handler is None:
                        continue
                    with loop_lock:  # never run a handler once the loop has moved on
                        if self.generation != generation:
                            return
                        self._busy_since = monotonic()
                        if self._watchdog_parked:
                            self._wake_watchdog_locked()
                    try:
                        handler(mask)
                    except Exception:
                        log.exception("poller handler for fd %d failed", fd)
                if self._timers or ready:
                    with loop_lock:
                        if self.generation != generation:
                            return
                        self._busy_since = monotonic()
                        if self._watchdog_parked:
                            self._wake_watchdog_locked()
                    if self._timers:
                        self._run_timers(generation)
                    if ready:
                        self._run_ready(generation)
        except BaseException:
            if self.generation != generation:
                return
            raise
        finally:
            if self.generation == generation:
                self._stop_loop()

    def _stop_loop(self) -> None:
        with self._wake_lock:
            self._exited = True
            os.close(self._wake_r)
            if self._wake_w != self._wake_r:
                os.close(self._wake_w)
        self._backend.close()
        self._run_ready()  # callbacks posted while the loop was stopping

    def _watch(self) -> None:
        """The watchdog: hand the loop to a new thread when a handler holds it too long.

        A handler holds it from `_busy_since` (when the loop gave it the fd), less whatever
        it reported as done: the stall clock restarts when `progress` is seen to change, so
        a unit of work is caught between `stall_after` and `stall_after` plus one interval.
        """
        idle_checks = 0
        seen_progress, seen_at = self.progress, 0.0
        while True:
            time.sleep(STALL_CHECK_INTERVAL)
            with self._loop_lock:
                if self._closed or not self._watchers:
                    self._watchdog = None
                    return
                since = self._busy_since
                now = time.monotonic()
                if self.progress != seen_progress:
                    seen_progress, seen_at = self.progress, now
                if since and now - max(since, seen_at) >= (self.stall_after or STALL_AFTER):
                    self._start_new_loop_locked()
                idle_checks = 0 if since else idle_checks + 1
                park = idle_checks >= WATCHDOG_PARK_AFTER
                if park:
                    self._watchdog_parked = True
            if park:
                self._watchdog_wake.acquire()  # until the loop runs a handler again
                idle_checks = 0

    def _run_ready(self, generation: int | None = None) -> None:
        ready = self._ready
        while ready:
            if generation is not None and self.generation != generation:
                return  # handed off while a callback ran: the new loop runs the rest
            try:
                callback = ready.popleft()
            except IndexError:  # another thread ran it
                return
            try:
                callback()
            except Exception:
                log.exception("poller callback failed")

    def _next_timeout(self) -> float:
        if not self._timers:
            return -1.0
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_timers(self, generation: int) -> None:
        now = time.monotonic()
        due = []
        with self._timer_lock:
            while self._timers and self._timers[0][0] <= now:
                handle = heapq.heappop(self._timers)[2]
                if handle.cancelled:
                    self._cancelled_timers = max(0, self._cancelled_timers - 1)
                else:
                    due.append(handle)
        for index, handle in enumerate(due):
            if self.generation != generation:  # handed off during a timer: the rest wait
                self._requeue(due[index:])
                return
            callback = handle.callback
            if handle.cancelled or callback is None:
                continue
            handle._poller = None  # it ran: a late cancel() must not count it as cancelled
            try:
                callback()
            except Exception:
                log.exception("poller timer failed")

    def _requeue(self, handles: list[TimerHandle]) -> None:
        with self._timer_lock:
            for handle in handles:
                heapq.heappush(self._timers, (handle.when, next(self._timer_seq), handle))
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._exited:  # the fd is closed; its number may belong to another file now
                return
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:  # the pipe is full: a wake-up is pending anyway
                pass

    def _drain_wakeup(self, mask: int) -> None:
        # Read first, then clear the flag: a wake-up whose write this read consumes must not
        # leave the flag set, or later call_soon()s would skip waking a sleeping poller.
        if mask & READABLE:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        self._wake_pending = False


def _wakeup_pair() -> tuple[int, int]:
    """An eventfd where available (one fd), else a non-blocking pipe."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


class PollerManager:
    """Owns the process's pollers and picks one for each new connection or listener."""

    def __init__(self, num_loops: int = 1, load_balance: str = "round_robin") -> None:
        self._lock = threading.Lock()
        self._pollers: list[Poller] = []
        self._num_loops = 1
        self._load_balance = "round_robin"
        self._counter = itertools.count()
        self.configure(num_loops, load_balance)

    @property
    def num_loops(self) -> int:
        return self._num_loops

    def configure(self, num_loops: int | None = None, load_balance: str | None = None) -> None:
        """Set the poller count (takes effect at the next `pick`) and the assignment rule."""
        if num_loops is not None:
            if num_loops < 1:
                raise ValueError(f"num_loops must be at least 1, got {num_loops}")
            self._num_loops = num_loops
        if load_balance is not None:
            if load_balance not in ("round_robin", "random"):
                raise ValueError(f"load_balance must be 'round_robin' or 'random': {load_balance}")
            self._load_balance = load_balance

    def pick(self) -> Poller:
        """The poller for a new fd, starting or retiring pollers to match `num_loops`."""
        pollers = self._pollers
        if len(pollers) != self._num_loops or pollers[0].closed:
            pollers = self._resize()
        if len(pollers) == 1:
            return pollers[0]
        if self._load_balance == "random":
            return random.choice(pollers)
        return pollers[next(self._counter) % len(pollers)]

    def initialize(self) -> list[Poller]:
        """Start the pollers now rather than at the first connection (netpoll's Initialize)."""
        return self._resize()

    def pollers(self) -> list[Poller]:
        return list(self._pollers)

    def _resize(self) -> list[Poller]:
        with self._lock:
            live = [p for p in self._pollers if not p.closed]
            while len(live) < self._num_loops:
                live.append(Poller(f"rpcpoll-poller-{len(live)}"))
            # Retired pollers keep serving the fds they have and stop once those are gone.
            retired, live = live[self._num_loops :], live[: self._num_loops]
            for poller in retired:
                _retire_when_idle(poller)
            self._pollers = live
            return live

    def close(self) -> None:
        """Stop every poller (fds still registered stop getting events)."""
        with self._lock:
            pollers, self._pollers = self._pollers, []
        for poller in pollers:
            poller.close()


def _retire_when_idle(poller: Poller) -> None:
    def check() -> None:
        if poller.registered == 0:
            poller.close()
        else:
            poller.call_later(0.1, check)

    poller.call_soon(check)


_manager = PollerManager()


def manager() -> PollerManager:
    """The process-wide poller manager."""
    return _manager


def configure(num_loops: int | None = None, load_balance: str | None = None) -> None:
    """netpoll's SetNumLoops / SetLoadBalance for the process-wide pollers."""
    _manager.configure(num_loops, load_balance)


def _reset_after_fork() -> None:
    # A forked child has none of the parent's threads: start with fresh pollers.
    global _manager
    _manager = PollerManager(_manager.num_loops, _manager._load_balance)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
