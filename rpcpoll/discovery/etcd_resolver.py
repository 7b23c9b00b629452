"""EtcdResolver: find instances in etcd, and follow them with a watch.

`resolve` is one prefix range. `subscribe` runs one thread per subscription:

1. list the service's prefix (range), notify the full list (the first time, and whenever it
   differs from the last one notified);
2. watch from the list's `header.revision + 1`, so no change between list and watch is missed,
   apply each event to the list and notify when it changed;
3. when the watch ends (etcd went away, canceled because the revision was compacted, an error),
   back off and go to 1; every `relist_interval` go to 1 anyway, which also bounds how long a
   silently dead (half-open) watch connection can go unnoticed.

While etcd cannot be reached, the last good list stands: an error never produces an empty list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .base import DiscoveryError, Instance, same_instances
from .etcd_gateway import DEFAULT_TIMEOUT, EtcdError, EtcdGateway, KeyValue, WatchStream
from .etcd_layout import DEFAULT_PREFIX, check_prefix, decode_instance, service_prefix
from .etcd_url import parse_etcd_url, with_url_prefix

if TYPE_CHECKING:
    from ssl import SSLContext

__all__ = ["DEFAULT_RELIST_INTERVAL", "EtcdResolver"]

DEFAULT_RELIST_INTERVAL = 30.0
MIN_BACKOFF = 0.1

log = logging.getLogger("rpcpoll.discovery.etcd")

OnChange = Callable[[Sequence[Instance]], None]


class EtcdResolver:
    """A Resolver over instances registered in etcd (Kitex layout, see `etcd_layout`).

    `endpoints`: "host:port" strings (or an EtcdGateway). `relist_interval`: seconds between
    full re-lists of a subscription. `max_backoff`: cap on the retry delay while etcd is
    unreachable. `timeout`: per HTTP call. `ssl`, `username`, `password`: HTTPS and etcd's
    auth (see `EtcdGateway`; an `etcds://user@host` URL sets them). Thread-safe.
    """

    def __init__(
        self,
        endpoints: str | Iterable[str] | EtcdGateway,
        *,
        prefix: str = DEFAULT_PREFIX,
        relist_interval: float = DEFAULT_RELIST_INTERVAL,
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
        if relist_interval <= 0:
            raise ValueError(f"relist_interval must be > 0, got {relist_interval}")
        if max_backoff < MIN_BACKOFF:
            raise ValueError(f"max_backoff must be >= {MIN_BACKOFF}, got {max_backoff}")
        self.prefix = check_prefix(prefix)
        self.relist_interval = relist_interval
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._last_good: dict[str, list[Instance]] = {}
        self._subscriptions: set[EtcdSubscription] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdResolver:
        """An EtcdResolver for "etcd://host:port[,host:port...][/SERVICE][?prefix=P]".

        A service in the path is allowed and ignored here (it is for the client: see
        `parse_etcd_url`); `options` are the constructor's keywords.
        """
        parsed = parse_etcd_url(url)
        return cls(parsed.endpoints, **with_url_prefix(url, parsed, options))

    def __repr__(self) -> str:
        return f"EtcdResolver({self.gateway!r}, prefix={self.prefix!r})"

    def read(self, service: str) -> tuple[dict[bytes, Instance], int]:
        """({key: instance}, revision) read now, in key order; raises EtcdError on failure."""
        result = self.gateway.get_prefix(service_prefix(self.prefix, service))
        found = {}
        for kv in result.kvs:
            instance = decode_instance(kv.key, kv.value)
            if instance is not None:
                found[kv.key] = instance
        return found, result.revision

    def resolve(self, service: str) -> list[Instance]:
        """The instances of `service` now, in key order (possibly empty).

        When etcd cannot be reached, the last good list (from a resolve or a subscription);
        DiscoveryError when there never was one. ValueError for a bad service name.
        """
        service_prefix(self.prefix, service)  # validates the name before any I/O
        try:
            found, _ = self.read(service)
        except EtcdError as exc:
            with self._lock:
                last = self._last_good.get(service)
            if last is None:
                raise DiscoveryError(f"cannot resolve {service!r} from etcd: {exc}") from exc
            log.warning("etcd unreachable (%s): using the last good list of %s", exc, service)
            return list(last)
        instances = list(found.values())
        self._remember(service, instances)
        return instances

    def subscribe(self, service: str, on_change: OnChange) -> EtcdSubscription:
        """Follow `service`: `on_change(instances)` gets the full list once it is first read,
        then after every change, from the subscription's own thread (the callback must be
        quick; an exception from it is logged). ValueError for a bad service name."""
        service_prefix(self.prefix, service)
        with self._lock:
            if self._closed:
                raise DiscoveryError("resolver is closed")
            subscription = EtcdSubscription(self, service, on_change)
            self._subscriptions.add(subscription)
        subscription._start()
        return subscription

    def close(self) -> None:
        """Close every subscription (joining their threads). Idempotent."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    def _remember(self, service: str, instances: list[Instance]) -> None:
        with self._lock:
            self._last_good[service] = list(instances)

    def _forget(self, subscription: EtcdSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)


class EtcdSubscription:
    """One service followed by list + watch on its own thread; `close()` stops it."""

    def __init__(self, resolver: EtcdResolver, service: str, on_change: OnChange) -> None:
        self.resolver = resolver
        self.service = service
        self._on_change = on_change
        self._prefix = service_prefix(resolver.prefix, service)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _stream
        self._stream: WatchStream | None = None
        self._instances: dict[bytes, Instance] = {}
        self._notified: list[Instance] | None = None  # what on_change last got
        self._thread = threading.Thread(
            target=self._run, name=f"rpcpoll-etcd-watch-{service}", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop following (idempotent): no notification starts after this returns, unless it is
        called from the callback itself. Wakes a blocked watch read, joins the thread (bounded
        by one HTTP timeout when it is in the middle of a list)."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            gateway = self.resolver.gateway
            self._thread.join(gateway.timeout * len(gateway.endpoints) + 1.0)
            if self._thread.is_alive():
                log.warning("etcd watch thread for %s did not stop in time", self.service)
        self.resolver._forget(self)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    # --- the thread -----------------------------------------------------------------------

    def _notify_if_changed(self) -> None:
        instances = list(self._instances.values())
        self.resolver._remember(self.service, instances)
        if self._stop.is_set():
            return
        if self._notified is not None and same_instances(self._notified, instances):
            return
        self._notified = instances
        try:
            self._on_change(instances)
        except Exception:
            log.exception("on_change callback for %s raised", self.service)

    def _apply(self, kv: KeyValue, deleted: bool) -> None:
        instance = None if deleted else decode_instance(kv.key, kv.value)
        if instance is None:  # deleted, or now holds a value we cannot use
            self._instances.pop(kv.key, None)
        else:
            self._instances[kv.key] = instance

    def _run(self) -> None:
        backoff = 0.0
        failing = False
        while not self._stop.is_set():
            try:
                found, revision = self.resolver.read(self.service)
            except EtcdError as exc:
                if not failing:
                    log.warning("cannot list %s (keeping the last list): %s", self.service, exc)
                failing = True
                backoff = min(max(backoff * 2, MIN_BACKOFF), self.resolver.max_backoff)
                self._stop.wait(backoff)
                continue
            if failing:
                log.info("listing %s works again", self.service)
            failing = False
            self._instances = found
            self._notify_if_changed()
            relist_at = time.monotonic() + self.resolver.relist_interval
            outcome = self._watch(revision + 1, relist_at)
            if outcome == "created":
                backoff = 0.0
            if outcome != "relist":  # the watch broke: do not hammer etcd with re-lists
                backoff = min(max(backoff * 2, MIN_BACKOFF), self.resolver.max_backoff)
                self._stop.wait(backoff)

    def _watch(self, start_revision: int, relist_at: float) -> str:
        """Follow the watch until it ends; "relist" when it is time for the periodic re-list,
        "created" when a watch had been established before it broke, "failed" otherwise."""
        try:
            stream = self.resolver.gateway.watch(self._prefix, start_revision)
        except EtcdError as exc:
            log.debug("cannot watch %s: %s", self.service, exc)
            return "failed"
        with self._lock:
            if self._stop.is_set():
                stream.close()
                return "failed"
            self._stream = stream
        created = False
        try:
            while not self._stop.is_set():
                remaining = relist_at - time.monotonic()
                if remaining <= 0:
                    return "relist"
                try:
                    message = stream.read(timeout=remaining)
                except TimeoutError:
                    return "relist"
                if message is None:  # EOF: etcd stopped, or close()
                    log.debug("watch on %s ended", self.service)
                    break
                created = created or message.created
                if message.canceled:
                    log.info(
                        "watch on %s canceled (compacted at %d%s): re-listing",
                        self.service,
                        message.compact_revision,
                        f", {message.cancel_reason}" if message.cancel_reason else "",
                    )
                    break
                for event in message.events:
                    self._apply(event.kv, event.type == "DELETE")
                if message.events:
                    self._notify_if_changed()
        except EtcdError as exc:
            log.warning("watch on %s failed: %s", self.service, exc)
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return "created" if created else "failed"
