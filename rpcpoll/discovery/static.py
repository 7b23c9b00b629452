"""StaticResolver: fixed instance lists, changed only by `update` (tests, or no registry)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .base import Instance, same_instances

__all__ = ["StaticResolver", "as_instance"]

log = logging.getLogger("rpcpoll.discovery")

OnChange = Callable[[Sequence[Instance]], None]


def as_instance(spec: Instance | str) -> Instance:
    """An Instance as is; "host:port" -> a TCP instance; "unix:/path" -> a Unix one."""
    if isinstance(spec, Instance):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"expected an Instance or an address string, got {spec!r}")
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path:
            raise ValueError("a unix address needs a path: unix:/path/to.sock")
        return Instance(path, network="unix")
    return Instance(spec)


def _instances(specs: Iterable[Instance | str]) -> list[Instance]:
    if isinstance(specs, str):  # a lone address, not an iterable of one-letter addresses
        specs = [specs]
    return [as_instance(spec) for spec in specs]


class _StaticSubscription:
    def __init__(self, resolver: StaticResolver, service: str, on_change: OnChange) -> None:
        self.resolver = resolver
        self.service = service
        self.on_change = on_change
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.resolver._unsubscribe(self)


class StaticResolver:
    """A Resolver over fixed lists: `{service: [Instance | "host:port" | "unix:/path", ...]}`,
    or one list used for every service not named in a later `update`.

    Unlike the etcd resolver it has no thread: `subscribe` calls `on_change` with the current
    list before it returns, and `update` calls the subscribers of that service, in the caller's
    thread, when the list really changed (tags included). Callback exceptions are logged.
    """

    def __init__(
        self, instances: Mapping[str, Iterable[Instance | str]] | Iterable[Instance | str] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._notify_lock = threading.RLock()  # RLock: a callback may call update()
        self._lists: dict[str, list[Instance]] = {}
        self._default: list[Instance] = []
        if isinstance(instances, Mapping):
            self._lists = {service: _instances(specs) for service, specs in instances.items()}
        else:
            self._default = _instances(instances)
        self._subscriptions: list[_StaticSubscription] = []

    def resolve(self, service: str) -> list[Instance]:
        """The list for `service` (the shared list, or [] for a service never given)."""
        with self._lock:
            return list(self._lists.get(service, self._default))

    def update(self, service: str, instances: Iterable[Instance | str]) -> None:
        """Replace the list for `service` and notify its subscribers if it changed."""
        new = _instances(instances)
        with self._notify_lock:  # subscribers see concurrent updates in the order applied
            with self._lock:
                old = self._lists.get(service, self._default)
                self._lists[service] = new
                subscriptions = [s for s in self._subscriptions if s.service == service]
            if same_instances(old, new):
                return
            for subscription in subscriptions:
                self._call(subscription, list(new))

    def subscribe(self, service: str, on_change: OnChange) -> _StaticSubscription:
        """Call `on_change` with the current list now, and after each `update` of `service`."""
        subscription = _StaticSubscription(self, service, on_change)
        with self._notify_lock:
            with self._lock:
                self._subscriptions.append(subscription)
                current = list(self._lists.get(service, self._default))
            self._call(subscription, current)
        return subscription

    def close(self) -> None:
        """Drop every subscription."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.closed = True

    def _unsubscribe(self, subscription: _StaticSubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    @staticmethod
    def _call(subscription: _StaticSubscription, instances: list[Instance]) -> None:
        if subscription.closed:
            return
        try:
            subscription.on_change(instances)
        except Exception:
            log.exception("on_change callback for %s raised", subscription.service)


if TYPE_CHECKING:  # mypy proves that StaticResolver implements the interface of base.py
    from .base import Resolver

    def _implements(resolver: StaticResolver) -> Resolver:
        return resolver
