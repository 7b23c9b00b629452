"""Publishing a server in a registry for as long as it serves (`rpcpoll serve --registry`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ..discovery.address import advertise_address
from ..discovery.base import DEFAULT_WEIGHT, DiscoveryError, Instance, Registry
from ..transport.address import parse_address

__all__ = ["DEREGISTER_GRACE", "Registration", "open_registry"]

log = logging.getLogger("rpcpoll.server")

# After deregistering, how long a stopping server keeps accepting: watching clients hear of the
# removal within milliseconds; this covers a registry or client that lags a little.
DEREGISTER_GRACE = 0.5


def open_registry(url: str, *, ttl: int | None = None) -> Registry:
    """The Registry a URL names. Supported: "etcd://host:port[,host:port...][?prefix=P]" and
    "etcds://[user[:password]@]host:port[...][?ca=F&cert=F&key=F]" (HTTPS, auth)."""
    if url.lower().startswith(("etcd://", "etcds://")):
        from ..discovery.etcd import EtcdRegistry

        return EtcdRegistry.from_url(url) if ttl is None else EtcdRegistry.from_url(url, ttl=ttl)
    scheme = url.partition("://")[0] if "://" in url else url
    raise ValueError(f"unsupported registry {scheme!r}: expected etcd:// or etcds://host:port")


class Registration:
    """One service instance in a registry: `publish` once listening, `withdraw` first on stop."""

    def __init__(
        self,
        registry: Registry,
        service: str,
        *,
        weight: int = DEFAULT_WEIGHT,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.service = service
        self.weight = weight
        self.tags = dict(tags or {})
        self.instance: Instance | None = None

    def publish(self, listen_address: str) -> Instance:
        """Register the address the server listens on (an unspecified host such as 0.0.0.0
        becomes this machine's IPv4 address, see `advertise_address`). Raises DiscoveryError."""
        network, address = parse_address(listen_address)
        published = str(address) if network == "unix" else advertise_address(listen_address)
        instance = Instance(published, network, self.weight, self.tags)
        self.registry.register(self.service, instance)
        self.instance = instance
        log.info("registered %s at %s", self.service, instance.target)
        return instance

    def withdraw(self, grace: float = DEREGISTER_GRACE) -> None:
        """Deregister (if published), wait `grace` seconds for clients to notice, and close
        the registry. Never raises: an instance that cannot be withdrawn expires with its
        lease."""
        try:
            if self.instance is not None:
                self.registry.deregister(self.service, self.instance)
                log.info("deregistered %s at %s", self.service, self.instance.target)
                self.instance = None
                time.sleep(grace)
        except DiscoveryError as exc:
            log.warning("cannot deregister %s: %s", self.service, exc)
        finally:
            self.registry.close()
