"""EtcdResolver against a real etcd: resolve, list + watch subscriptions, re-lists, garbage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from discovery_testutil import Changes, EtcdProcess, free_port, wait_until

from rpcpoll.discovery import (
    DEFAULT_WEIGHT,
    DiscoveryError,
    EtcdGateway,
    EtcdRegistry,
    EtcdResolver,
    Instance,
)
from rpcpoll.discovery.etcd_gateway import WatchStream

MakeRegistry = Callable[..., EtcdRegistry]
MakeResolver = Callable[..., EtcdResolver]


def _value(address: str, **fields: object) -> bytes:
    return json.dumps({"network": "tcp", "address": address, **fields}).encode()


def _watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rpcpoll-etcd-watch")]


def test_resolve_lists_the_service_only(
    etcd: EtcdProcess, gateway: EtcdGateway, make_resolver: MakeResolver, prefix: str
) -> None:
    gateway.put(f"{prefix}/echo/127.0.0.1:2".encode(), _value("127.0.0.1:2", weight=3))
    gateway.put(f"{prefix}/echo/127.0.0.1:1".encode(), _value("127.0.0.1:1"))
    gateway.put(f"{prefix}/echo2/127.0.0.1:9".encode(), _value("127.0.0.1:9"))
    gateway.put(f"{prefix}/ech/127.0.0.1:8".encode(), _value("127.0.0.1:8"))
    resolver = make_resolver(etcd.endpoint, prefix=prefix)
    assert resolver.resolve("echo") == [  # key order
        Instance("127.0.0.1:1"),
        Instance("127.0.0.1:2", weight=3),
    ]
    assert resolver.resolve("nothing-here") == []


def test_weight_zero_or_negative_becomes_default(
    etcd: EtcdProcess, gateway: EtcdGateway, make_resolver: MakeResolver, prefix: str
) -> None:
    gateway.put(f"{prefix}/echo/a".encode(), _value("127.0.0.1:1", weight=0))
    gateway.put(f"{prefix}/echo/b".encode(), _value("127.0.0.1:2", weight=-5))
    found = make_resolver(etcd.endpoint, prefix=prefix).resolve("echo")
    assert [i.weight for i in found] == [DEFAULT_WEIGHT, DEFAULT_WEIGHT]


def test_garbage_values_are_skipped_with_a_warning(
    etcd: EtcdProcess,
    gateway: EtcdGateway,
    make_resolver: MakeResolver,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway.put(f"{prefix}/echo/bad-json".encode(), b"{nope")
    gateway.put(f"{prefix}/echo/no-address".encode(), b'{"network": "tcp"}')
    gateway.put(f"{prefix}/echo/binary".encode(), b"\xff\x00")
    gateway.put(f"{prefix}/echo/good".encode(), _value("127.0.0.1:1"))
    resolver = make_resolver(etcd.endpoint, prefix=prefix)
    assert resolver.resolve("echo") == [Instance("127.0.0.1:1")]
    assert caplog.text.count("skipping value") == 3

    changes = Changes()
    resolver.subscribe("echo", changes)
    changes.wait_for({"127.0.0.1:1"})
    gateway.put(f"{prefix}/echo/good2".encode(), _value("127.0.0.1:2"))
    changes.wait_for({"127.0.0.1:1", "127.0.0.1:2"})
    gateway.put(f"{prefix}/echo/good2".encode(), b"garbage now")  # a PUT event with garbage
    changes.wait_for({"127.0.0.1:1"})


def test_resolve_without_any_good_list_raises(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(f"127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(DiscoveryError, match="cannot resolve 'echo'"):
        resolver.resolve("echo")


def test_subscription_sees_add_and_remove_within_a_second(
    etcd: EtcdProcess, make_registry: MakeRegistry, make_resolver: MakeResolver, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix)
    registry.register("echo", Instance("127.0.0.1:1"))
    changes = Changes()
    make_resolver(etcd.endpoint, prefix=prefix).subscribe("echo", changes)
    changes.wait_for({"127.0.0.1:1"})

    started = time.monotonic()
    registry.register("echo", Instance("127.0.0.1:2"))
    changes.wait_for({"127.0.0.1:1", "127.0.0.1:2"}, timeout=1.0)
    registry.deregister("echo", Instance("127.0.0.1:1"))
    changes.wait_for({"127.0.0.1:2"}, timeout=1.0)
    assert time.monotonic() - started < 2.0
    registry.deregister("echo", Instance("127.0.0.1:2"))
    changes.wait_for(set(), timeout=1.0)  # a real, empty list is notified
    assert changes.all() == [
        [Instance("127.0.0.1:1")],
        [Instance("127.0.0.1:1"), Instance("127.0.0.1:2")],
        [Instance("127.0.0.1:2")],
        [],
    ]


def test_first_notification_even_when_empty_and_no_repeats(
    etcd: EtcdProcess, gateway: EtcdGateway, make_resolver: MakeResolver, prefix: str
) -> None:
    changes = Changes()
    make_resolver(etcd.endpoint, prefix=prefix, relist_interval=0.2).subscribe("echo", changes)
    wait_until(lambda: changes.count == 1, 3.0, "the first (empty) list")
    assert changes.latest() == []
    key = f"{prefix}/echo/a".encode()
    gateway.put(key, _value("127.0.0.1:1"))
    changes.wait_for({"127.0.0.1:1"})
    gateway.put(key, _value("127.0.0.1:1"))  # the same instance written again
    gateway.put(key, _value("127.0.0.1:1", tags={"v": "2"}))  # a tag change is a change
    wait_until(lambda: changes.count == 3, 3.0, "the tag change")
    time.sleep(0.6)  # several re-lists: nothing changed, nothing notified
    assert changes.count == 3
    latest = changes.latest()
    assert latest is not None
    assert latest[0].tags == {"v": "2"}


def test_periodic_relist_runs(etcd: EtcdProcess, make_resolver: MakeResolver, prefix: str) -> None:
    resolver = make_resolver(etcd.endpoint, prefix=prefix, relist_interval=0.2)
    calls: list[float] = []
    real = resolver.gateway.get_prefix

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(time.monotonic())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    resolver.gateway.get_prefix = counting  # type: ignore[method-assign,assignment]
    resolver.subscribe("echo", Changes())
    wait_until(lambda: len(calls) >= 4, 3.0, "re-lists every 0.2 s")


def test_compaction_past_the_watched_revision_re_lists(
    etcd: EtcdProcess, gateway: EtcdGateway, make_resolver: MakeResolver, prefix: str
) -> None:
    gateway.put(f"{prefix}/echo/a".encode(), _value("127.0.0.1:1"))
    resolver = make_resolver(etcd.endpoint, prefix=prefix)
    real_watch = resolver.gateway.watch
    watches: list[int] = []

    def watch_after_compaction(prefix_key: bytes, start_revision: int) -> WatchStream:
        watches.append(start_revision)
        if len(watches) == 1:
            # Between list and watch, a change lands and history is compacted past it: the
            # watch from the listed revision is canceled, and only a re-list can catch up.
            gateway.put(f"{prefix}/echo/b".encode(), _value("127.0.0.1:2"))
            revision = gateway.put(f"{prefix}/other".encode(), b"x")
            gateway.compact(revision)  # keeps `revision` itself, drops the put of b
        return real_watch(prefix_key, start_revision)

    resolver.gateway.watch = watch_after_compaction  # type: ignore[method-assign]
    changes = Changes()
    resolver.subscribe("echo", changes)
    changes.wait_for({"127.0.0.1:1", "127.0.0.1:2"}, timeout=3.0)
    assert len(watches) >= 2
    assert watches[1] > watches[0]
    gateway.put(f"{prefix}/echo/c".encode(), _value("127.0.0.1:3"))  # the new watch works
    changes.wait_for({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, timeout=2.0)


def test_a_raising_callback_is_logged_and_the_subscription_goes_on(
    etcd: EtcdProcess,
    gateway: EtcdGateway,
    make_resolver: MakeResolver,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes = Changes()

    def on_change(instances: object) -> None:
        changes(instances)  # type: ignore[arg-type]
        raise RuntimeError("callback bug")

    make_resolver(etcd.endpoint, prefix=prefix).subscribe("echo", on_change)
    wait_until(lambda: changes.count == 1, 3.0, "the first list")
    gateway.put(f"{prefix}/echo/a".encode(), _value("127.0.0.1:1"))
    changes.wait_for({"127.0.0.1:1"})
    assert "callback bug" in caplog.text


def test_subscription_close_is_prompt_while_blocked_in_a_watch(
    etcd: EtcdProcess, make_resolver: MakeResolver, prefix: str
) -> None:
    resolver = make_resolver(etcd.endpoint, prefix=prefix)  # relist every 30 s: idle watch
    changes = Changes()
    subscription = resolver.subscribe("echo", changes)
    wait_until(lambda: changes.count == 1, 3.0, "the first list")
    time.sleep(0.1)  # in the watch read by now
    started = time.monotonic()
    subscription.close()
    assert time.monotonic() - started < 0.5
    assert not _watch_threads()
    subscription.close()  # idempotent


def test_subscription_close_from_its_own_callback(
    etcd: EtcdProcess, make_resolver: MakeResolver, prefix: str
) -> None:
    resolver = make_resolver(etcd.endpoint, prefix=prefix)
    holder: list[object] = []
    closed = threading.Event()

    def on_change(instances: object) -> None:
        wait_until(lambda: holder, 2.0, "the subscription")
        holder[0].close()  # type: ignore[attr-defined]
        closed.set()

    holder.append(resolver.subscribe("echo", on_change))
    assert closed.wait(3.0)
    wait_until(lambda: not _watch_threads(), 2.0, "the watch thread to end")


def test_resolver_close_stops_every_subscription(etcd: EtcdProcess, prefix: str) -> None:
    resolver = EtcdResolver(etcd.endpoint, prefix=prefix)
    first, second = Changes(), Changes()
    resolver.subscribe("a", first)
    resolver.subscribe("b", second)
    wait_until(lambda: first.count and second.count, 3.0, "both first lists")
    assert len(_watch_threads()) == 2
    resolver.close()
    assert not _watch_threads()
    resolver.close()  # idempotent
    with pytest.raises(DiscoveryError, match="closed"):
        resolver.subscribe("a", first)


def test_subscribe_while_etcd_is_down_waits_for_a_first_list(
    make_resolver: MakeResolver,
) -> None:
    changes = Changes()
    resolver = make_resolver(f"127.0.0.1:{free_port()}", timeout=0.3, max_backoff=0.2)
    subscription = resolver.subscribe("echo", changes)
    time.sleep(0.5)
    assert changes.count == 0  # never an (empty) list made up from an error
    subscription.close()
