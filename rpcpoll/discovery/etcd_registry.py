"""EtcdRegistry: publish instances in etcd under leases, and keep them published.

Each registration is one key bound to its own lease. One background thread per registry tends
all of them:

- keepalive every TTL/3 (of the TTL etcd granted);
- when a keepalive says the lease is gone (HTTP 200 without TTL: expired while we were cut off,
  or revoked by someone), grant a new lease and put the key again;
- every `check_interval`, read the key back: if it is missing or not ours (deleted or
  overwritten from outside), put it again;
- while etcd cannot be reached, retry with a backoff capped at `max_backoff`, for ever
  (Kitex's registry gives up after 5 attempts; a server outliving an etcd outage should not).

A process that dies stops renewing, so its keys vanish when the lease expires (TTL seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import DiscoveryError, Instance
from .etcd_gateway import DEFAULT_TIMEOUT, EtcdError, EtcdGateway, EtcdResponseError
from .etcd_layout import DEFAULT_PREFIX, check_prefix, check_service, encode_instance, instance_key
from .etcd_url import parse_etcd_url, with_url_prefix

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["DEFAULT_TTL", "EtcdRegistry"]

DEFAULT_TTL = 10  # seconds; etcd grants at least 2
MIN_BACKOFF = 0.2

log = logging.getLogger("rpcpoll.discovery.etcd")


@dataclass(eq=False)
class _Registration:
    service: str
    instance: Instance
    key: bytes
    value: bytes
    lease: int = 0  # 0: no live lease (never granted, or lost): publish again
    ttl: int = 0  # as granted
    keepalive_at: float = 0.0
    check_at: float = 0.0
    retry_at: float = 0.0  # while failing: not before this
    backoff: float = 0.0
    failing: bool = False
    removed: bool = False
    # Serialises etcd calls for this registration between the background thread and
    # register/deregister, so a re-put cannot resurrect a key that deregister just removed.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self) -> float:
        if self.failing:
            return self.retry_at
        if not self.lease:
            return 0.0
        return min(self.keepalive_at, self.check_at)

    def name(self) -> str:
        return self.key.decode("utf-8", "replace")


class EtcdRegistry:
    """A Registry that publishes instances in etcd, Kitex-compatible (see `etcd_layout`).

    The background thread runs while something is registered (it ends with the last
    deregister, and the next register starts a new one).

    `endpoints`: "host:port" strings (or an EtcdGateway). `ttl`: lease seconds (etcd grants at
    least 2). `check_interval`: how often each key is read back (default: `ttl`).
    `max_backoff`: cap on the retry delay while etcd is unreachable. `timeout`: per HTTP call.
    `ssl`, `username`, `password`: HTTPS and etcd's auth (see `EtcdGateway`; an
    `etcds://user@host` URL sets them).
    Thread-safe; `close()` withdraws everything and stops the background thread.
    """

    def __init__(
        self,
        endpoints: str | Iterable[str] | EtcdGateway,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        check_interval: float | None = None,
        max_backoff: float = 3.0,
        timeout: float = DEFAULT_TIMEOUT,
        ssl: SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(endpoints, EtcdGateway):
            self.gateway = endpoints
        else:
            self.gateway = EtcdGateway(
                endpoints, timeout=timeout, ssl=ssl, username=username, password=password
            )
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise ValueError(f"ttl must be a whole number of seconds >= 1, got {ttl!r}")
        if check_interval is not None and check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval}")
        if max_backoff < MIN_BACKOFF:
            raise ValueError(f"max_backoff must be >= {MIN_BACKOFF}, got {max_backoff}")
        self.prefix = check_prefix(prefix)
        self.ttl = ttl
        self.check_interval = float(check_interval if check_interval is not None else ttl)
        self.max_backoff = max_backoff
        self._regs: dict[bytes, _Registration] = {}
        self._cond = threading.Condition()  # guards _regs, _closed, _thread; wakes the thread
        self._api_lock = threading.Lock()  # one register/deregister/close at a time
        self._closed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdRegistry:
        """An EtcdRegistry for "etcd://host:port[,host:port...][?prefix=P]".

        `options` are the constructor's keywords (ttl=..., ...). A URL naming a service is a
        ValueError: a registry publishes whatever services are registered with it.
        """
        parsed = parse_etcd_url(url)
        if parsed.service is not None:
            raise ValueError(
                f"bad registry URL {url!r}: a registry URL names no service (drop the path)"
            )
        return cls(parsed.endpoints, **with_url_prefix(url, parsed, options))

    def __repr__(self) -> str:
        return f"EtcdRegistry({self.gateway!r}, prefix={self.prefix!r}, ttl={self.ttl})"

    # --- API ------------------------------------------------------------------------------

    def register(self, service: str, instance: Instance) -> None:
        """Publish `instance` under `service` and keep it published until deregistered.

        Returns once etcd holds the key; raises DiscoveryError if that first publish fails
        (nothing is kept then), ValueError for a bad service name. Registering the same service
        and address again replaces the earlier registration (e.g. a new weight).
        """
        key = instance_key(self.prefix, check_service(service), instance)
        reg = _Registration(service, instance, key, encode_instance(instance))
        with self._api_lock:
            with self._cond:
                if self._closed:
                    raise DiscoveryError("registry is closed")
                old = self._regs.get(key)
            # Hold the registration being replaced, so that the thread cannot re-put it under
            # its old lease while the new one takes over the key.
            if old is not None:
                old.lock.acquire()
            try:
                with reg.lock:
                    try:
                        self._publish(reg)
                    except EtcdError as exc:
                        raise DiscoveryError(f"cannot register {reg.name()}: {exc}") from exc
                with self._cond:
                    self._regs[key] = reg
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._run, name="rpcpoll-etcd-registry", daemon=True
                        )
                        self._thread.start()
                    self._cond.notify_all()
                old_lease = 0
                if old is not None:
                    old.removed = True
                    old_lease, old.lease = old.lease, 0
            finally:
                if old is not None:
                    old.lock.release()
            if old_lease:
                # The key is bound to the new lease now: revoking the old one leaves it.
                try:
                    self.gateway.revoke(old_lease)
                except EtcdError as exc:
                    log.warning(
                        "cannot revoke replaced lease %x (it will expire): %s", old_lease, exc
                    )
        log.info("registered %s (lease %x, ttl %d s)", reg.name(), reg.lease, reg.ttl)

    def deregister(self, service: str, instance: Instance) -> None:
        """Withdraw `instance`: its lease is revoked, so the key disappears at once.

        A no-op for an instance not registered here. Raises DiscoveryError if etcd could not be
        told; the key then still disappears when its lease expires (no longer renewed).
        """
        key = instance_key(self.prefix, check_service(service), instance)
        with self._api_lock:
            with self._cond:
                reg = self._regs.pop(key, None)
                self._cond.notify_all()
            if reg is not None:
                self._withdraw(reg, quiet=False)
                log.info("deregistered %s", reg.name())

    def close(self) -> None:
        """Deregister everything still registered and stop the thread (idempotent).

        Failures to reach etcd are logged, not raised: those keys expire with their leases.
        """
        with self._api_lock:
            with self._cond:
                self._closed = True
                regs = list(self._regs.values())
                self._regs.clear()
                thread, self._thread = self._thread, None
                self._cond.notify_all()
            for reg in regs:
                self._withdraw(reg, quiet=True)
            if thread is not None and thread is not threading.current_thread():
                # The thread finishes at most one etcd call (bounded by the HTTP timeout).
                thread.join(self.gateway.timeout * len(self.gateway.endpoints) + 1.0)
                if thread.is_alive():
                    log.warning("etcd registry thread did not stop in time")

    def registered(self) -> list[tuple[str, Instance]]:
        """What this registry keeps published: (service, instance) pairs."""
        with self._cond:
            return [(reg.service, reg.instance) for reg in self._regs.values()]

    # --- etcd work (callers hold reg.lock) --------------------------------------------------

    def _call_timeout(self, reg: _Registration) -> float:
        # A keepalive stuck for longer than the lease lives would lose the lease anyway.
        return min(self.gateway.timeout, max(1.0, (reg.ttl or self.ttl) / 3))

    def _publish(self, reg: _Registration) -> None:
        """Grant a lease and put the key bound to it."""
        lease = self.gateway.grant(self.ttl)
        try:
            self.gateway.put(reg.key, reg.value, lease=lease.id)
        except EtcdError:
            try:  # do not leave an unused lease behind (it would expire anyway)
                self.gateway.revoke(lease.id, timeout=1.0)
            except EtcdError:
                pass
            raise
        now = time.monotonic()
        reg.lease, reg.ttl = lease.id, lease.ttl
        reg.keepalive_at = now + lease.ttl / 3
        reg.check_at = now + self.check_interval

    def _withdraw(self, reg: _Registration, *, quiet: bool) -> None:
        with reg.lock:
            reg.removed = True
            lease, reg.lease = reg.lease, 0
        if not lease:
            return
        try:
            self.gateway.revoke(lease)  # False: already expired, the key is gone too
        except EtcdError as exc:
            if not quiet:
                raise DiscoveryError(f"cannot deregister {reg.name()}: {exc}") from exc
            log.warning("cannot revoke the lease of %s (it will expire): %s", reg.name(), exc)

    def _tend(self, reg: _Registration) -> None:
        """Do what is due for one registration: keepalive, read-back check, or re-publish."""
        with reg.lock:
            if reg.removed:
                return
            now = time.monotonic()
            try:
                if not reg.lease:
                    self._publish(reg)
                    log.warning("re-registered %s (lease %x)", reg.name(), reg.lease)
                if now >= reg.keepalive_at:
                    ttl = self.gateway.keepalive(reg.lease, timeout=self._call_timeout(reg))
                    if ttl <= 0:
                        log.warning("lease of %s was lost: registering again", reg.name())
                        reg.lease = 0
                        self._publish(reg)
                    reg.keepalive_at = time.monotonic() + reg.ttl / 3
                if now >= reg.check_at:
                    self._check(reg)
                    reg.check_at = time.monotonic() + self.check_interval
            except EtcdError as exc:
                reg.backoff = min(max(reg.backoff * 2, MIN_BACKOFF), self.max_backoff)
                reg.retry_at = time.monotonic() + reg.backoff
                if not reg.failing:  # one warning per outage, not one per retry
                    log.warning("etcd unreachable for %s, retrying: %s", reg.name(), exc)
                reg.failing = True
                return
            if reg.failing:
                log.info("etcd reachable again for %s", reg.name())
            reg.failing, reg.backoff = False, 0.0

    def _check(self, reg: _Registration) -> None:
        """Put the key back if it is missing or not ours (someone deleted or overwrote it)."""
        kv = self.gateway.get(reg.key, timeout=self._call_timeout(reg))
        if kv is not None and kv.value == reg.value and kv.lease == reg.lease:
            return
        log.warning(
            "key %s is %s: putting it back", reg.name(), "gone" if kv is None else "changed"
        )
        try:
            self.gateway.put(reg.key, reg.value, lease=reg.lease)
        except EtcdResponseError as exc:
            if not exc.not_found:
                raise
            reg.lease = 0  # the lease is gone too
            self._publish(reg)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    regs = list(self._regs.values())
                    if not regs:  # nothing to tend: end; the next register starts a thread
                        self._thread = None
                        return
                    now = time.monotonic()
                    wake = min(reg.due() for reg in regs)
                    if wake <= now:
                        break
                    self._cond.wait(wake - now)
            for reg in regs:
                if reg.due() <= time.monotonic():
                    self._tend(reg)
