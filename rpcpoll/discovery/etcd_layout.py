"""Where instances live in etcd and how they are written: Kitex's registry-etcd layout.

    <prefix>/<service>/<host:port>  ->  {"network": "tcp", "address": "host:port",
                                          "weight": 10, "tags": {"k": "v"}}

The default prefix is Kitex's "kitex/registry-etcd" (no leading slash), so Go Kitex clients find
rpcpoll servers and rpcpoll clients find Kitex servers. Resolvers read instances from the JSON
value only (the key's last part is just what makes it unique), and skip values they cannot use.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from .base import DEFAULT_WEIGHT, Instance

__all__ = [
    "DEFAULT_PREFIX",
    "check_prefix",
    "check_service",
    "decode_instance",
    "encode_instance",
    "instance_key",
    "service_prefix",
]

DEFAULT_PREFIX = "kitex/registry-etcd"

log = logging.getLogger("rpcpoll.discovery")

# Values already warned about: re-lists read the same bad value again and again, and one
# warning per value is enough. Bounded, so a stream of garbage cannot grow it without end.
_warned: set[tuple[bytes, bytes]] = set()
_warned_lock = threading.Lock()
_WARNED_MAX = 1024


def check_service(service: str) -> str:
    """`service` if usable as one key segment; ValueError if empty or containing "/"."""
    if not isinstance(service, str) or not service:
        raise ValueError(f"a service name must be a non-empty string, got {service!r}")
    if "/" in service:
        raise ValueError(f"a service name must not contain '/': {service!r}")
    return service


def check_prefix(prefix: str) -> str:
    """The prefix without trailing slashes; ValueError if nothing is left."""
    cleaned = prefix.rstrip("/") if isinstance(prefix, str) else ""
    if not cleaned:
        raise ValueError(f"an etcd key prefix must be a non-empty string, got {prefix!r}")
    return cleaned


def service_prefix(prefix: str, service: str) -> bytes:
    """The key prefix of every instance of `service`, with its trailing "/"."""
    return f"{prefix}/{check_service(service)}/".encode()


def instance_key(prefix: str, service: str, instance: Instance) -> bytes:
    if not instance.address:
        raise ValueError("an instance needs an address")
    return service_prefix(prefix, service) + instance.address.encode()


def encode_instance(instance: Instance) -> bytes:
    """The JSON value Kitex writes: network, address, weight and tags (always all four)."""
    return json.dumps(
        {
            "network": instance.network,
            "address": instance.address,
            "weight": instance.weight,
            "tags": dict(instance.tags),
        },
        separators=(",", ":"),
        sort_keys=False,
    ).encode()


def decode_instance(key: bytes, value: bytes) -> Instance | None:
    """The instance a value describes, or None (with a warning) for a value that is unusable.

    Needs "address" and "network" strings; "weight" <= 0 or missing becomes DEFAULT_WEIGHT (as
    in Kitex); "tags" may be missing or null, otherwise it must map strings to strings.
    """
    reason = ""
    try:
        data: Any = json.loads(value)
    except ValueError:
        data, reason = None, "not JSON"
    if not reason and not isinstance(data, dict):
        reason = "not a JSON object"
    if not reason:
        address, network = data.get("address"), data.get("network")
        weight, tags = data.get("weight"), data.get("tags")
        if not isinstance(address, str) or not address:
            reason = "no address"
        elif not isinstance(network, str) or not network:
            reason = "no network"
        elif weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
            reason = f"weight {weight!r} is not an integer"
        elif tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            reason = "tags are not a map of strings"
    if reason:
        with _warned_lock:
            if (key, value) in _warned:
                return None
            if len(_warned) >= _WARNED_MAX:
                _warned.clear()
            _warned.add((key, value))
        log.warning(
            "etcd key %s: skipping value (%s): %r",
            key.decode("utf-8", "replace"),
            reason,
            value[:200],
        )
        return None
    return Instance(
        address=address,
        network=network,
        weight=weight if weight is not None and weight > 0 else DEFAULT_WEIGHT,
        tags=dict(tags or {}),
    )
