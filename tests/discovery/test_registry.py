"""EtcdRegistry against a real etcd: Kitex layout, leases, keepalive, re-registration."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from discovery_testutil import EtcdProcess, free_port, wait_until

from rpcpoll.discovery import (
    DEFAULT_PREFIX,
    DiscoveryError,
    EtcdGateway,
    EtcdRegistry,
    EtcdResolver,
    Instance,
)

MakeRegistry = Callable[..., EtcdRegistry]


def _registry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rpcpoll-etcd")]


def test_register_writes_the_exact_kitex_key_and_json(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    service = prefix.replace("/", "-")  # the default (Kitex) prefix, a service of this test's own
    registry = make_registry(etcd.endpoint)
    instance = Instance("127.0.0.1:8888", weight=7, tags={"cluster": "a", "env": "test"})
    registry.register(service, instance)

    kv = gateway.get(f"kitex/registry-etcd/{service}/127.0.0.1:8888".encode())
    assert kv is not None
    assert kv.lease != 0
    assert json.loads(kv.value) == {
        "network": "tcp",
        "address": "127.0.0.1:8888",
        "weight": 7,
        "tags": {"cluster": "a", "env": "test"},
    }
    assert list(json.loads(kv.value)) == ["network", "address", "weight", "tags"]
    assert 0 < gateway.time_to_live(kv.lease) <= 10  # the default TTL
    assert registry.registered() == [(service, instance)]

    resolver = EtcdResolver(etcd.endpoint)
    try:
        assert resolver.prefix == DEFAULT_PREFIX
        found = resolver.resolve(service)
        assert found == [instance]
        assert found[0].tags == instance.tags
    finally:
        resolver.close()


def test_register_and_resolve_with_a_custom_prefix_and_unix_address(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix + "/")
    unix = Instance("/run/echo.sock", network="unix")
    registry.register("echo", unix)
    registry.register("echo", Instance("127.0.0.1:1"))
    assert gateway.get(f"{prefix}/echo//run/echo.sock".encode()) is not None
    resolver = EtcdResolver(etcd.endpoint, prefix=prefix)
    try:
        found = resolver.resolve("echo")
    finally:
        resolver.close()
    assert sorted(found, key=lambda i: i.address) == [unix, Instance("127.0.0.1:1")]
    assert unix.target == "unix:/run/echo.sock"


def test_deregister_removes_the_key_at_once(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix)
    instance = Instance("127.0.0.1:1")
    registry.register("echo", instance)
    key = f"{prefix}/echo/127.0.0.1:1".encode()
    kv = gateway.get(key)
    assert kv is not None
    started = time.monotonic()
    registry.deregister("echo", instance)
    assert gateway.get(key) is None
    assert time.monotonic() - started < 1.0
    assert gateway.time_to_live(kv.lease) == -1  # revoked, not just the key deleted
    registry.deregister("echo", instance)  # not registered (any more): a no-op
    assert registry.registered() == []
    wait_until(lambda: not _registry_threads(), 2.0, "the idle registry thread to end")


def test_deregister_tolerates_a_lease_already_gone(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix, ttl=60)
    instance = Instance("127.0.0.1:1")
    registry.register("echo", instance)
    kv = gateway.get(f"{prefix}/echo/127.0.0.1:1".encode())
    assert kv is not None
    gateway.revoke(kv.lease)  # from outside, before the registry notices
    registry.deregister("echo", instance)  # revoke answers 404: fine


def test_register_again_replaces_and_keeps_the_key(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix)
    registry.register("echo", Instance("127.0.0.1:1", weight=1))
    first = gateway.get(f"{prefix}/echo/127.0.0.1:1".encode())
    registry.register("echo", Instance("127.0.0.1:1", weight=2))
    second = gateway.get(f"{prefix}/echo/127.0.0.1:1".encode())
    assert first is not None
    assert second is not None
    assert json.loads(second.value)["weight"] == 2
    assert second.lease != first.lease
    assert gateway.time_to_live(first.lease) == -1  # the replaced lease was revoked
    assert registry.registered() == [("echo", Instance("127.0.0.1:1", weight=2))]


def test_register_raises_when_etcd_is_unreachable(make_registry: MakeRegistry) -> None:
    registry = make_registry(f"127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(DiscoveryError, match="cannot register"):
        registry.register("echo", Instance("127.0.0.1:1"))
    assert registry.registered() == []
    assert not _registry_threads()


def test_keepalive_keeps_an_instance_past_its_ttl(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix, ttl=2)
    registry.register("echo", Instance("127.0.0.1:1"))
    key = f"{prefix}/echo/127.0.0.1:1".encode()
    kv = gateway.get(key)
    assert kv is not None
    deadline = time.monotonic() + 5.0  # 2.5 TTLs
    while time.monotonic() < deadline:
        now = gateway.get(key)
        assert now is not None, "the key expired despite keepalives"
        assert now.lease == kv.lease  # the same lease, renewed (not re-registered)
        time.sleep(0.25)
    assert gateway.time_to_live(kv.lease) > 0


def test_lease_revoked_from_outside_is_re_registered(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    registry = make_registry(etcd.endpoint, prefix=prefix, ttl=2, check_interval=60)
    registry.register("echo", Instance("127.0.0.1:1"))
    key = f"{prefix}/echo/127.0.0.1:1".encode()
    kv = gateway.get(key)
    assert kv is not None
    gateway.revoke(kv.lease)
    assert gateway.get(key) is None
    # The next keepalive (every TTL/3 ~ 0.7 s) finds the lease gone: grant + put again.
    back = wait_until(lambda: gateway.get(key), 3.0, "the key to be re-registered")
    assert back.lease not in (0, kv.lease)
    assert back.value == kv.value


def test_key_deleted_from_outside_is_put_back(
    etcd: EtcdProcess, gateway: EtcdGateway, make_registry: MakeRegistry, prefix: str
) -> None:
    # Kitex's own deregister deletes the key and leaves the lease: only the read-back finds it.
    registry = make_registry(etcd.endpoint, prefix=prefix, ttl=5, check_interval=0.3)
    registry.register("echo", Instance("127.0.0.1:1"))
    key = f"{prefix}/echo/127.0.0.1:1".encode()
    kv = gateway.get(key)
    assert kv is not None
    gateway.delete(key)
    back = wait_until(lambda: gateway.get(key), 3.0, "the key to be put back")
    assert back.lease == kv.lease  # the lease was fine: only the key came back
    gateway.put(key, b"overwritten by someone")
    wait_until(
        lambda: (now := gateway.get(key)) is not None and now.value == kv.value,
        3.0,
        "the overwritten value to be restored",
    )


def test_close_withdraws_everything_and_stops_the_thread(
    etcd: EtcdProcess, gateway: EtcdGateway, prefix: str
) -> None:
    registry = EtcdRegistry(etcd.endpoint, prefix=prefix, ttl=2)
    registry.register("a", Instance("127.0.0.1:1"))
    registry.register("b", Instance("127.0.0.1:2"))
    assert len(gateway.get_prefix(prefix.encode()).kvs) == 2
    assert len(_registry_threads()) == 1  # one thread for all registrations
    registry.close()
    registry.close()  # idempotent
    assert gateway.get_prefix(prefix.encode()).kvs == []
    assert not _registry_threads()
    with pytest.raises(DiscoveryError, match="closed"):
        registry.register("a", Instance("127.0.0.1:1"))
