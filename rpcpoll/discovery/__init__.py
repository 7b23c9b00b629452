"""Service discovery: where a client finds a service's instances, and how servers publish them.

- `Instance`, `Resolver`, `Registry`, `Subscription`, `DiscoveryError`: the interfaces (`base`).
- `StaticResolver`: fixed lists, changed by `update` (tests, or no registry at all).
- `EtcdRegistry`, `EtcdResolver`: etcd 3.4+ through its JSON gateway, Kitex-compatible keys.
- `parse_etcd_url`: "etcd://host:port[,host:port...][/SERVICE][?prefix=P]".
- `advertise_address`: the address to publish for a listen address such as "0.0.0.0:8888".

docs/discovery.md describes the whole of it.
"""

from .address import IP_ENV, PORT_ENV, advertise_address, local_ipv4
from .base import (
    DEFAULT_WEIGHT,
    DiscoveryError,
    Instance,
    Registry,
    Resolver,
    Subscription,
    same_instances,
)
from .etcd import (
    DEFAULT_ETCD_PORT,
    DEFAULT_PREFIX,
    DEFAULT_RELIST_INTERVAL,
    DEFAULT_TTL,
    EtcdError,
    EtcdGateway,
    EtcdProtocolError,
    EtcdRegistry,
    EtcdResolver,
    EtcdResponseError,
    EtcdSubscription,
    EtcdUnavailable,
    EtcdURL,
    parse_etcd_target,
    parse_etcd_url,
)
from .static import StaticResolver, as_instance

__all__ = [
    "DEFAULT_ETCD_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_RELIST_INTERVAL",
    "DEFAULT_TTL",
    "DEFAULT_WEIGHT",
    "IP_ENV",
    "PORT_ENV",
    "DiscoveryError",
    "EtcdError",
    "EtcdGateway",
    "EtcdProtocolError",
    "EtcdRegistry",
    "EtcdResolver",
    "EtcdResponseError",
    "EtcdSubscription",
    "EtcdURL",
    "EtcdUnavailable",
    "Instance",
    "Registry",
    "Resolver",
    "StaticResolver",
    "Subscription",
    "advertise_address",
    "as_instance",
    "local_ipv4",
    "parse_etcd_target",
    "parse_etcd_url",
    "same_instances",
]
