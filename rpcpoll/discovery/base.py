"""What discovery is made of: instances, resolvers that find them, registries that publish them.

A `Resolver` answers "which instances serve this service now?" and tells subscribers when the
answer changes; a `Registry` publishes a server's instance and withdraws it. The client side
(`rpcpoll.client`) only sees these interfaces, so a static list, etcd, or a user's own system
plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DEFAULT_WEIGHT",
    "DiscoveryError",
    "Instance",
    "Registry",
    "Resolver",
    "Subscription",
    "same_instances",
]

DEFAULT_WEIGHT = 10  # Kitex's registry.DefaultWeight: what a weight <= 0 means


class DiscoveryError(Exception):
    """A resolver or registry could not do its job (and has no last good answer to give)."""


@dataclass(frozen=True)
class Instance:
    """One server a service can be called on.

    `network` is "tcp" or "unix"; `address` is "host:port" (IPv6 as "[::1]:port") or a Unix
    socket path. Two instances are equal when network, address and weight are; `tags` are
    free-form labels that do not take part in comparisons.
    """

    address: str
    network: str = "tcp"
    weight: int = DEFAULT_WEIGHT
    tags: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Instances key the client's per-instance state on every call: hash the fields once
        # (a frozen dataclass would hash them again, in Python, on every lookup).
        object.__setattr__(self, "_hash", hash((self.address, self.network, self.weight)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    @property
    def target(self) -> str:
        """The address as a channel target: "host:port" or "unix:/path"."""
        return f"unix:{self.address}" if self.network == "unix" else self.address


def same_instances(a: Sequence[Instance], b: Sequence[Instance]) -> bool:
    """True when both lists hold the same instances in the same order, tags included.

    (`Instance.__eq__` ignores tags; "the list changed" for subscribers includes them.)
    """
    return len(a) == len(b) and all(
        x == y and dict(x.tags) == dict(y.tags) for x, y in zip(a, b, strict=True)
    )


class Subscription(Protocol):
    """A standing watch; `close()` stops its notifications (idempotent)."""

    def close(self) -> None: ...


class Resolver(Protocol):
    """Finds the instances of a service and follows changes.

    `resolve` returns the current list (possibly empty). A resolver that cannot reach its source
    returns the last good list it has and raises DiscoveryError only when it never had one.
    `subscribe` calls `on_change(instances)` with the whole new list after each change, from a
    thread of the resolver's; the callback must be quick and must not raise.
    """

    def resolve(self, service: str) -> list[Instance]: ...

    def subscribe(
        self, service: str, on_change: Callable[[Sequence[Instance]], None]
    ) -> Subscription: ...

    def close(self) -> None: ...


class Registry(Protocol):
    """Publishes instances of services until they are withdrawn or the registry is closed.

    `register` returns once the instance is published and keeps it published (for etcd: a lease
    kept alive, re-registered whenever it is lost); `deregister` withdraws it at once.
    """

    def register(self, service: str, instance: Instance) -> None: ...

    def deregister(self, service: str, instance: Instance) -> None: ...

    def close(self) -> None: ...
