"""Discovery when things go wrong: a crashed server, etcd stopped, etcd restarted."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from discovery_testutil import Changes, EtcdProcess, wait_until

from rpcpoll.discovery import DiscoveryError, EtcdRegistry, EtcdResolver, Instance

MakeRegistry = Callable[..., EtcdRegistry]
MakeResolver = Callable[..., EtcdResolver]

CHILD = textwrap.dedent(
    """
    import sys, time
    from rpcpoll.discovery import EtcdRegistry, Instance
    registry = EtcdRegistry(sys.argv[1], prefix=sys.argv[2], ttl=2)
    registry.register("echo", Instance("127.0.0.1:2"))
    print("registered", flush=True)
    time.sleep(60)
    """
)


def test_crashed_server_disappears_within_its_ttl(
    etcd: EtcdProcess, make_registry: MakeRegistry, make_resolver: MakeResolver, prefix: str
) -> None:
    make_registry(etcd.endpoint, prefix=prefix).register("echo", Instance("127.0.0.1:1"))
    changes = Changes()
    make_resolver(etcd.endpoint, prefix=prefix).subscribe("echo", changes)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, etcd.endpoint, prefix],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"registered\n"
            changes.wait_for({"127.0.0.1:1", "127.0.0.1:2"})
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            # No deregister: only the lease expiry (TTL 2 s) can remove it.
            changes.wait_for({"127.0.0.1:1"}, timeout=2.0 + 2.0)
            assert time.monotonic() - killed > 0.5
        finally:
            child.kill()
            child.wait(5)


def test_etcd_stopped_resolve_keeps_the_last_good_list_and_nothing_empty_is_notified(
    etcd_own: EtcdProcess,
    make_registry: MakeRegistry,
    make_resolver: MakeResolver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_registry(etcd_own.endpoint, ttl=2, max_backoff=0.3, timeout=0.5)
    registry.register("echo", Instance("127.0.0.1:1"))
    resolver = make_resolver(etcd_own.endpoint, max_backoff=0.2, timeout=0.5)
    assert resolver.resolve("echo") == [Instance("127.0.0.1:1")]
    changes = Changes()
    resolver.subscribe("echo", changes)
    subscribed = make_resolver(etcd_own.endpoint, max_backoff=0.2, timeout=0.5)
    sub_changes = Changes()
    subscribed.subscribe("echo", sub_changes)  # its last good list comes from the watch only
    changes.wait_for({"127.0.0.1:1"})
    sub_changes.wait_for({"127.0.0.1:1"})

    etcd_own.stop()
    time.sleep(1.0)  # watches broke, re-lists fail, registry keepalives fail
    assert resolver.resolve("echo") == [Instance("127.0.0.1:1")]
    assert subscribed.resolve("echo") == [Instance("127.0.0.1:1")]
    fresh = make_resolver(etcd_own.endpoint, timeout=0.5)
    with pytest.raises(DiscoveryError):
        fresh.resolve("echo")
    assert changes.all() == [[Instance("127.0.0.1:1")]]  # no empty list, no repeat
    assert sub_changes.count == 1
    assert "unreachable" in caplog.text or "cannot list" in caplog.text


def test_etcd_restart_keeps_registrations_and_subscriptions(
    etcd_own: EtcdProcess, make_registry: MakeRegistry, make_resolver: MakeResolver
) -> None:
    options = {"ttl": 2, "max_backoff": 0.3, "timeout": 0.5}
    registry = make_registry(etcd_own.endpoint, **options)
    registry.register("echo", Instance("127.0.0.1:1"))
    changes = Changes()
    make_resolver(etcd_own.endpoint, max_backoff=0.3, timeout=0.5).subscribe("echo", changes)
    changes.wait_for({"127.0.0.1:1"})

    etcd_own.stop()
    etcd_own.start()  # same data dir and ports; ~2 s until the single member is leader again
    gateway = etcd_own.gateway()
    wait_until(
        lambda: gateway.get(b"kitex/registry-etcd/echo/127.0.0.1:1"),
        5.0,
        "the registration to be there after the restart",
    )
    # A change made after the restart reaches the subscription (re-listed, watching again).
    make_registry(etcd_own.endpoint, **options).register("echo", Instance("127.0.0.1:2"))
    changes.wait_for({"127.0.0.1:1", "127.0.0.1:2"}, timeout=5.0)
    assert all(instances for instances in changes.all())  # never an empty list
    # And the first registration is still kept alive past its TTL.
    time.sleep(2.5)
    assert gateway.get(b"kitex/registry-etcd/echo/127.0.0.1:1") is not None


def test_etcd_killed_and_wiped_registration_is_restored(
    etcd_own: EtcdProcess, make_registry: MakeRegistry, make_resolver: MakeResolver
) -> None:
    """etcd lost its data (a new, empty cluster on the same address): re-register anyway."""
    registry = make_registry(etcd_own.endpoint, ttl=2, max_backoff=0.3, timeout=0.5)
    registry.register("echo", Instance("127.0.0.1:1"))
    etcd_own.kill()
    for path in sorted(etcd_own.data_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    etcd_own.start()  # empty: the lease and the key are gone
    gateway = etcd_own.gateway()
    wait_until(
        lambda: gateway.get(b"kitex/registry-etcd/echo/127.0.0.1:1"),
        5.0,
        "the registration to be restored in the new etcd",
    )
    changes = Changes()
    make_resolver(etcd_own.endpoint).subscribe("echo", changes)
    changes.wait_for({"127.0.0.1:1"})
