"""`HealthService`: the standard grpc.health.v1.Health service, with statuses the app sets.

Statuses are kept per service name; "" stands for the whole server. `Check` answers the
status of a known name and NOT_FOUND for any other (as gRPC's health servers do). `Watch`
sends the status at once, then each change, and SERVICE_UNKNOWN for a name not known yet.

`enter_shutdown()` sets every status to NOT_SERVING and ignores later `set_status` calls, so
load balancers and probes stop sending new work while in-flight calls drain; `rpcpoll serve`
calls it when a graceful stop begins (before the server stops accepting).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeAlias

from ..protocol.status import NotFoundError
from ..service import CallContext
from .health_rpc import HealthCheckRequest, HealthCheckResponse, HealthHandler

__all__ = ["SERVER", "HealthService", "ServingStatus", "default_health"]

ServingStatus: TypeAlias = HealthCheckResponse.ServingStatus
#: The name that stands for the whole server.
SERVER = ""

# How often a Watch stream wakes up to see whether it should end (its deadline passed, the
# service shut down or the generator was closed from another thread).
_WATCH_POLL = 0.5


class HealthService(HealthHandler):
    """Per-service serving status; register it with a Server like any handler.

    `HealthService()` starts with the whole server ("") SERVING; `set_status(name, status)`
    sets a service's status (`ServingStatus.SERVING`, `NOT_SERVING`, or the names as strings);
    `clear_status(name)` forgets one. Thread-safe.
    """

    def __init__(self, *, serving: bool = True) -> None:
        self._lock = threading.Condition()
        self._statuses: dict[str, ServingStatus] = {}
        self._shutdown = False
        self._version = 0  # bumped on every change: what Watch streams wait for
        if serving:
            self._statuses[SERVER] = ServingStatus.SERVING

    # ------------------------------------------------------------------ the app's side

    def set_status(self, service: str, status: ServingStatus | str | int) -> None:
        """Set `service`'s status ("" is the whole server). Ignored after `enter_shutdown()`."""
        resolved = _status(status)
        with self._lock:
            if self._shutdown or self._statuses.get(service) is resolved:
                return
            self._statuses[service] = resolved
            self._changed()

    def clear_status(self, service: str) -> None:
        """Forget `service`: Check answers NOT_FOUND for it again."""
        with self._lock:
            if self._statuses.pop(service, None) is not None:
                self._changed()

    def status(self, service: str = SERVER) -> ServingStatus | None:
        """`service`'s status, or None when it has none."""
        with self._lock:
            return self._statuses.get(service)

    def statuses(self) -> dict[str, ServingStatus]:
        """Every status set, by service name."""
        with self._lock:
            return dict(self._statuses)

    def enter_shutdown(self) -> None:
        """Set every status to NOT_SERVING and freeze them (a graceful stop has begun)."""
        with self._lock:
            self._shutdown = True
            for name in self._statuses:
                self._statuses[name] = ServingStatus.NOT_SERVING
            self._changed()

    def resume(self) -> None:
        """Undo `enter_shutdown()`'s freeze (statuses stay NOT_SERVING until set again)."""
        with self._lock:
            self._shutdown = False

    def _changed(self) -> None:
        self._version += 1
        self._lock.notify_all()

    # ------------------------------------------------------------------ the rpcs

    def check(self, request: HealthCheckRequest, context: CallContext) -> HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            name = request.service or '"" (the server)'
            raise NotFoundError(message=f"unknown service {name}")
        return HealthCheckResponse(status=status)

    # TODO(streaming): Watch is a server-streaming rpc; the generated HealthHandler has no
    # `watch` until the runtime serves streams. This generator is the handler body: the
    # streaming runtime calls `watch(request, context)` and sends each item it yields. It
    # ends by itself after the deadline, after sending NOT_SERVING once shutdown began, or
    # within _WATCH_POLL seconds of `context.cancelled` turning true; it may also be closed
    # between items.
    def watch(
        self, request: HealthCheckRequest, context: CallContext
    ) -> Iterator[HealthCheckResponse]:
        """The status of `request.service` now (SERVICE_UNKNOWN if it has none), then each
        time it changes, until the deadline passes, the server shuts down or the caller
        cancels."""
        service = request.service
        sent: ServingStatus | None = None
        while True:
            with self._lock:
                version = self._version
                status = self._statuses.get(service, ServingStatus.SERVICE_UNKNOWN)
                shutdown = self._shutdown
            if status is not sent:
                sent = status
                yield HealthCheckResponse(status=status)
            if shutdown and sent is not ServingStatus.SERVICE_UNKNOWN:
                return  # NOT_SERVING was sent: the stream must not hold up the drain
            remaining = context.time_remaining()
            if (remaining is not None and remaining <= 0) or _cancelled(context):
                return
            wait = _WATCH_POLL if remaining is None else min(_WATCH_POLL, remaining)
            with self._lock:
                if self._version == version:
                    self._lock.wait(wait)


def _status(value: ServingStatus | str | int) -> ServingStatus:
    if isinstance(value, str):
        try:
            return ServingStatus.__members__[value.upper()]
        except KeyError:
            names = ", ".join(member.name or "" for member in ServingStatus)
            raise ValueError(f"unknown serving status {value!r} (one of {names})") from None
    status = ServingStatus(value)
    if status.name is None:  # an open enum keeps unknown numbers
        raise ValueError(f"unknown serving status {value!r}")
    return status


def _cancelled(context: CallContext) -> bool:
    """Whether the stream's caller went away: read from the context's `cancelled` (a bool or
    a method), which stream contexts are expected to carry; unary contexts have none."""
    flag = getattr(context, "cancelled", False)
    return bool(flag() if callable(flag) else flag)


_default: HealthService | None = None
_default_lock = threading.Lock()


def default_health() -> HealthService:
    """The process's HealthService: the one `rpcpoll serve` registers, so that a handler can
    set statuses with `rpcpoll.health.default_health().set_status(...)`."""
    global _default
    with _default_lock:
        if _default is None:
            _default = HealthService()
        return _default
