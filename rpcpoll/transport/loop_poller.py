"""A poller that an asyncio event loop drives, instead of a thread of its own.

An async handler, or an async client's connection, must run its Python on the event loop's
thread; a poller thread beside the loop would cost a thread hand-off (a wake-up and a GIL
switch) for every batch of frames, in each direction. A `LoopPoller` removes the second
thread: the event loop watches the poller's own epoll fd, which is readable whenever one of
the poller's fds is ready, and then runs the poller for one round on its own thread (one
`epoll_wait(0)`, the handlers, the due timers, the posted callbacks). Connections, buffers,
timeouts, backpressure, everything above the poller stays as it is (the netpoll transport):
only who waits for readiness changes.

Facts this relies on:

- An epoll fd is itself pollable: it reports readable while its ready list is not empty, and
  it is level-triggered, so an event the round did not take is reported again. It works in
  asyncio's selector loop and in uvloop (libuv polls any fd).
- `call_soon` and `call_later` from other threads write the poller's wake-up eventfd, which is
  registered in the epoll set: the event loop wakes and runs a round. From the loop's own
  thread, callbacks wait for the end of the current round (as on a poller thread).
- The loop's thread counts as a poller thread (`on_poller_thread()`): a blocking read there is
  refused, because it would stall every connection of the loop (and the loop).
- There is no stall watchdog: an event loop cannot move to another thread, so a handler that
  blocks the loop blocks its connections (the server runs sync handlers on its worker pool).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from .poller import Poller, TimerHandle, _thread_state, log

__all__ = ["LoopPoller"]


class LoopPoller(Poller):
    """A Poller run by `loop` (a running or not yet running asyncio event loop).

    Create it from any thread; it starts serving once the loop runs. `close()` from any
    thread detaches it from the loop and releases its fds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "rpcpoll-loop-poller"):
        super().__init__(name, start=False)
        self._loop = loop
        self._round_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._attached = False
        loop.call_soon_threadsafe(self._attach)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _attach(self) -> None:
        if self._closed:
            return
        self._ident = threading.get_ident()
        # The loop's thread is a poller thread while any LoopPoller is attached to it.
        _thread_state.loop_pollers = getattr(_thread_state, "loop_pollers", 0) + 1
        _thread_state.is_poller = True
        self._loop.add_reader(self._backend.fileno(), self._round)
        self._attached = True
        self._round()  # whatever was registered or posted before the loop ran

    def _round(self) -> None:
        """One round of the poller: ready fds, due timers, posted callbacks."""
        self._round_scheduled = False
        if self._closed:
            return
        handlers = self._handlers
        try:
            events = self._backend.poll(0)
        except OSError:  # closed under us
            return
        generation = self.generation
        for fd, mask in events:
            handler = handlers.get(fd)
            if handler is None:
                continue
            try:
                handler(mask)
            except Exception:
                log.exception("poller handler for fd %d failed", fd)
        if self._timers:
            self._run_timers(generation)
        if self._ready:
            self._run_ready(generation)
        self._arm()

    def _arm(self) -> None:
        """Make the loop come back: at once for callbacks posted during the round, else at
        the next timer (readiness and wake-ups come through the epoll fd by themselves)."""
        if self._closed:
            return
        loop = self._loop
        if self._ready:
            if not self._round_scheduled:
                self._round_scheduled = True
                loop.call_soon(self._round)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timers:
            delay = max(0.0, self._timers[0][0] - time.monotonic())
            self._timer = loop.call_later(delay, self._round)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """As Poller.call_soon; on the loop's thread the callback runs in the next round."""
        super().call_soon(callback)
        if self._ident == threading.get_ident() and not self._round_scheduled:
            self._round_scheduled = True
            self._loop.call_soon(self._round)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = super().call_later(delay, callback)
        if self._ident == threading.get_ident() and self._attached:
            self._arm()  # on another thread, the wake-up makes the loop run a round
        return handle

    def close(self, timeout: float | None = 5.0) -> None:
        """Detach from the loop and release the poller's fds; registered fds stay open."""
        if self._closed:
            return
        self._closed = True
        if self._ident == threading.get_ident() or self._loop.is_closed():
            self._detach()
            return
        done = threading.Event()

        def detach() -> None:
            try:
                self._detach()
            finally:
                done.set()

        try:
            self._loop.call_soon_threadsafe(detach)
        except RuntimeError:  # the loop is closed: nobody watches the fd any more
            self._detach()
            return
        if self._loop.is_running():
            done.wait(timeout)
        else:
            self._detach()

    def _detach(self) -> None:
        if self._exited:
            return
        if self._attached:
            self._attached = False
            if self._ident == threading.get_ident():
                _thread_state.loop_pollers -= 1
                if not _thread_state.loop_pollers:
                    _thread_state.is_poller = False  # an ordinary thread again
            try:
                self._loop.remove_reader(self._backend.fileno())
            except (RuntimeError, ValueError, OSError):  # the loop is closed or the fd gone
                pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_loop()
