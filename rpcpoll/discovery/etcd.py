"""Service discovery on etcd 3.4+: `EtcdRegistry` (servers) and `EtcdResolver` (clients).

They talk to etcd's v3 JSON gateway with the standard library only (`etcd_gateway`), and use
Kitex's registry-etcd key layout (`etcd_layout`), so rpcpoll and Go Kitex services find each
other. `etcd://` URLs (`etcd_url`) name the etcd endpoints and, for clients, the service:

    registry = EtcdRegistry.from_url("etcd://127.0.0.1:2379", ttl=10)
    registry.register("echo", Instance(advertise_address("0.0.0.0:8888")))

    endpoints, service = parse_etcd_target("etcd://127.0.0.1:2379/echo")
    resolver = EtcdResolver.from_url("etcd://127.0.0.1:2379/echo")
    subscription = resolver.subscribe("echo", print)

See docs/discovery.md for the rules (leases, re-registration, watch and re-list).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .address import advertise_address
from .etcd_gateway import (
    EtcdError,
    EtcdGateway,
    EtcdProtocolError,
    EtcdResponseError,
    EtcdUnavailable,
)
from .etcd_layout import DEFAULT_PREFIX
from .etcd_registry import DEFAULT_TTL, EtcdRegistry
from .etcd_resolver import DEFAULT_RELIST_INTERVAL, EtcdResolver, EtcdSubscription
from .etcd_url import DEFAULT_ETCD_PORT, EtcdURL, parse_etcd_target, parse_etcd_url

__all__ = [
    "DEFAULT_ETCD_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_RELIST_INTERVAL",
    "DEFAULT_TTL",
    "EtcdError",
    "EtcdGateway",
    "EtcdProtocolError",
    "EtcdRegistry",
    "EtcdResolver",
    "EtcdResponseError",
    "EtcdSubscription",
    "EtcdURL",
    "EtcdUnavailable",
    "advertise_address",
    "parse_etcd_target",
    "parse_etcd_url",
]

if TYPE_CHECKING:  # mypy proves that both implement the interfaces of base.py
    from .base import Registry, Resolver

    def _implements(resolver: EtcdResolver, registry: EtcdRegistry) -> tuple[Resolver, Registry]:
        return resolver, registry
