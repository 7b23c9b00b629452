"""Readiness backends: epoll on Linux, kqueue on macOS and the BSDs, behind one small interface.

Facts about epoll that the poller relies on:

- Registrations are level-triggered: while a socket has unread bytes, every `epoll_wait`
  reports it again. One `recv` per event is therefore enough; whatever is left is reported next
  time, so one busy connection cannot starve the others.
- `EPOLLRDHUP` reports the peer's FIN (half-close) even when no bytes are pending; `EPOLLHUP` and
  `EPOLLERR` are always reported, registered or not. Bytes sent before the FIN are still
  readable, so a hang-up is only final once a `recv` returns 0.
- `epoll_ctl` may be called from any thread while another thread sits in `epoll_wait`; a
  change is seen by the next wait. An event already returned by a wait may name an fd that was
  unregistered (or closed and reused) since: handlers must tolerate spurious events.
- Closing an fd removes it from every epoll set, but only once every duplicate of it is closed.

kqueue (`select.kqueue`) gives the same information as separate read and write filters; the
backend folds them into the epoll bit values, so the poller only ever sees epoll-style masks.
The kqueue backend is written to the same contract but this project's CI runs on Linux only:
it is not exercised by the test suite.
"""

from __future__ import annotations

import select
import sys
from typing import Protocol

__all__ = ["ERROR", "HANGUP", "READABLE", "WRITABLE", "Backend", "default_backend"]

# Event bits as the poller sees them (epoll's values on every platform).
READABLE = 0x001  # EPOLLIN
WRITABLE = 0x004  # EPOLLOUT
ERROR = 0x008  # EPOLLERR
HANGUP = 0x010 | 0x2000  # EPOLLHUP | EPOLLRDHUP

_MAX_EVENTS = 1024


class Backend(Protocol):
    """What a Poller needs from the OS: interest in read (unless paused) and write (on
    request). With read interest off, hang-ups and errors are still reported."""

    def register(self, fd: int, write: bool = False) -> None: ...
    def modify(self, fd: int, write: bool, read: bool = True) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: float) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...
    def fileno(self) -> int:
        """The backend's own fd, readable while any registered fd is ready (so another
        event loop can watch this one: transport/loop_poller.py)."""
        ...


class EpollBackend:
    """Level-triggered epoll, reporting (fd, mask) pairs with epoll's own bits."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._read_mask = select.EPOLLIN | select.EPOLLRDHUP
        self._write_mask = self._read_mask | select.EPOLLOUT
        # Indexed by read + 2 * write. Without read interest epoll still reports EPOLLHUP and
        # EPOLLERR (a reset peer), never EPOLLIN or EPOLLRDHUP.
        self._masks = (0, self._read_mask, select.EPOLLOUT, self._write_mask)

    def register(self, fd: int, write: bool = False) -> None:
        self._epoll.register(fd, self._write_mask if write else self._read_mask)

    def modify(self, fd: int, write: bool, read: bool = True) -> None:
        try:
            self._epoll.modify(fd, self._masks[read + 2 * write])
        except (FileNotFoundError, ValueError, OSError):
            pass  # unregistered or closed meanwhile: nothing left to watch

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (FileNotFoundError, ValueError, OSError):
            pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout, _MAX_EVENTS)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()


if sys.platform != "linux":  # kqueue exists on macOS and the BSDs only

    class KqueueBackend:
        """kqueue with a read filter per fd and a write filter while writes are wanted."""

        def __init__(self) -> None:
            self._kq = select.kqueue()

        def fileno(self) -> int:
            return self._kq.fileno()
            self._writing: set[int] = set()
            self._not_reading: set[int] = set()

        def _control(self, fd: int, flt: int, flags: int) -> None:
            try:
                self._kq.control([select.kevent(fd, flt, flags)], 0, 0)
            except (FileNotFoundError, ValueError, OSError):
                pass

        def register(self, fd: int, write: bool = False) -> None:
            self._kq.control([select.kevent(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)], 0, 0)
            if write:
                self.modify(fd, True)

        def modify(self, fd: int, write: bool, read: bool = True) -> None:
            if read and fd in self._not_reading:
                self._not_reading.discard(fd)
                self._control(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)
            elif not read and fd not in self._not_reading:
                self._not_reading.add(fd)
                self._control(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)
            if write and fd not in self._writing:
                self._writing.add(fd)
                self._control(fd, select.KQ_FILTER_WRITE, select.KQ_EV_ADD)
            elif not write and fd in self._writing:
                self._writing.discard(fd)
                self._control(fd, select.KQ_FILTER_WRITE, select.KQ_EV_DELETE)

        def unregister(self, fd: int) -> None:
            self.modify(fd, False)
            self._not_reading.discard(fd)
            self._control(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            events = self._kq.control(None, _MAX_EVENTS, None if timeout < 0 else timeout)
            masks: dict[int, int] = {}
            for ev in events:
                mask = masks.get(ev.ident, 0)
                if ev.filter == select.KQ_FILTER_READ:
                    mask |= READABLE
                elif ev.filter == select.KQ_FILTER_WRITE:
                    mask |= WRITABLE
                if ev.flags & select.KQ_EV_EOF:
                    mask |= HANGUP
                if ev.flags & select.KQ_EV_ERROR:
                    mask |= ERROR
                masks[ev.ident] = mask
            return list(masks.items())

        def close(self) -> None:
            self._kq.close()


def default_backend() -> Backend:
    if hasattr(select, "epoll"):
        return EpollBackend()
    if sys.platform != "linux" and hasattr(select, "kqueue"):
        return KqueueBackend()
    raise OSError(f"rpcpoll.transport needs epoll or kqueue; {sys.platform} has neither")
