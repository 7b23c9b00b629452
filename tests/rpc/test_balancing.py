"""A channel over several instances: balancing, discovery changes, circuit breakers, warm-up."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

import rpcpoll
from rpcpoll.client import ClientChannel
from rpcpoll.client.breaker import BreakerState, InstanceBreaker
from rpcpoll.discovery import Instance, StaticResolver
from rpcpoll.server import Server
from rpcpoll.service import CallContext

SERVICE = "rpctest"


@pytest.fixture
def named_servers(
    rpctest: ModuleType, serve: Callable[..., Server]
) -> Callable[[int], list[Server]]:
    """`start(n)`: n servers whose Echo answers with the server's name ("s0", "s1", ...)."""

    def start(n: int, **options: Any) -> list[Server]:
        servers = []
        for i in range(n):

            class Named(rpctest.TestServiceHandler):  # type: ignore[misc, name-defined]
                name = f"s{i}"

                def echo(self, request: Any, context: CallContext) -> Any:
                    return rpctest.Resp(text=self.name)

                def sleep(self, request: Any, context: CallContext) -> Any:
                    time.sleep(request.sleep_ms / 1000)
                    return rpctest.Resp(text=self.name)

            servers.append(serve(Named(), **options))
        return servers

    return start


@pytest.fixture
def resolver() -> Iterator[StaticResolver]:
    made = StaticResolver({SERVICE: []})
    yield made
    made.close()


def free_port() -> str:
    """An address nobody listens on (bound and closed again: connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def names(client: Any, rpctest: ModuleType, calls: int, **kwargs: Any) -> Counter[str]:
    return Counter(client.echo(rpctest.Req(**kwargs)).text for _ in range(calls))


def test_round_robin_spreads_calls_evenly(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    servers = named_servers(3)
    resolver.update(SERVICE, [server.address for server in servers])
    with rpctest.TestServiceClient(SERVICE, resolver=resolver, timeout=5) as client:
        assert names(client, rpctest, 300) == {"s0": 100, "s1": 100, "s2": 100}


def test_weights_shape_the_spread(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    s0, s1 = named_servers(2)
    resolver.update(SERVICE, [Instance(s0.address, weight=10), Instance(s1.address, weight=30)])
    for balancer in ("round_robin", "random"):
        with rpctest.TestServiceClient(
            SERVICE, resolver=resolver, balancer=balancer, timeout=5
        ) as client:
            seen = names(client, rpctest, 400)
        assert seen["s0"] + seen["s1"] == 400
        assert 60 <= seen["s0"] <= 140, (balancer, seen)  # 100 expected


def test_consistent_hash_keeps_a_key_on_one_instance(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    servers = named_servers(4)
    resolver.update(SERVICE, [server.address for server in servers])
    with rpctest.TestServiceClient(
        SERVICE,
        resolver=resolver,
        balancer="consistent_hash",
        hash_key=lambda method, request, metadata: request.text,
        timeout=5,
    ) as client:
        homes = {key: names(client, rpctest, 5, text=key) for key in map(str, range(40))}
    assert all(len(seen) == 1 for seen in homes.values())
    assert len({next(iter(seen)) for seen in homes.values()}) >= 3  # keys spread over servers


def test_instances_added_and_removed_while_calling_fail_no_call(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    s0, s1, s2 = named_servers(3)
    resolver.update(SERVICE, [s0.address, s1.address])
    errors: list[Exception] = []
    seen: Counter[str] = Counter()
    stop = threading.Event()
    with rpctest.TestServiceClient(SERVICE, resolver=resolver, timeout=5) as client:

        def caller() -> None:
            while not stop.is_set():
                try:
                    seen[client.sleep(rpctest.Req(sleep_ms=2)).text] += 1
                except rpcpoll.RpcError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            resolver.update(SERVICE, [s0.address, s1.address, s2.address])  # s2 added
            time.sleep(0.3)
            resolver.update(SERVICE, [s0.address, s2.address])  # s1 withdrawn, then stopped
            before = seen["s1"]
            assert s1.shutdown(5.0)
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert errors == []
    assert seen["s2"] > 0 and seen["s1"] - before <= 4  # only calls already on their way


def test_a_dead_instance_is_avoided_and_its_breaker_opens(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    (alive,) = named_servers(1)
    dead = free_port()
    resolver.update(SERVICE, [alive.address, dead])
    breakers: dict[str, InstanceBreaker] = {}

    def factory(instance: Instance) -> InstanceBreaker:
        breakers[instance.target] = InstanceBreaker(failure_threshold=3, cooldown=0.3)
        return breakers[instance.target]

    with rpctest.TestServiceClient(
        SERVICE, resolver=resolver, breaker=factory, timeout=5
    ) as client:
        assert names(client, rpctest, 40) == {"s0": 40}  # refused dials are retried elsewhere
        assert breakers[dead].state is BreakerState.OPEN
        assert breakers[alive.address].state is BreakerState.CLOSED
        time.sleep(0.35)  # cooldown over: one probe goes to the dead instance, fails, reopens
        assert names(client, rpctest, 10) == {"s0": 10}
        assert breakers[dead].state is BreakerState.OPEN
        assert breakers[dead].cooldown == pytest.approx(0.6)


def test_no_usable_instance_is_a_clear_unavailable_error(
    rpctest: ModuleType, resolver: StaticResolver
) -> None:
    with (
        rpctest.TestServiceClient(SERVICE, resolver=resolver, timeout=5) as client,
        pytest.raises(rpcpoll.UnavailableError, match="no instance available"),
    ):
        client.echo(rpctest.Req())
    resolver.update(SERVICE, [free_port()])
    with rpctest.TestServiceClient(SERVICE, resolver=resolver, timeout=5) as client:
        with pytest.raises(rpcpoll.UnavailableError, match="refused"):
            client.echo(rpctest.Req())
        for _ in range(10):
            with pytest.raises(rpcpoll.UnavailableError):
                client.echo(rpctest.Req())
        with pytest.raises(rpcpoll.UnavailableError, match="circuit open"):
            client.echo(rpctest.Req())


@pytest.mark.parametrize("mux", [0, 2])
def test_warmup_connects_before_the_first_call(
    rpctest: ModuleType,
    named_servers: Callable[..., list[Server]],
    resolver: StaticResolver,
    mux: int,
) -> None:
    servers = named_servers(2)
    resolver.update(SERVICE, [server.address for server in servers])
    with rpctest.TestServiceClient(
        SERVICE, resolver=resolver, warmup=3, mux=mux, timeout=5
    ) as client:
        expected = 3 if mux == 0 else mux
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            len(server.connections()) < expected for server in servers
        ):
            time.sleep(0.01)
        assert [len(server.connections()) for server in servers] == [expected, expected]
        if mux == 0:
            assert client.channel.idle_connections == 6


def test_mux_over_several_instances(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    servers = named_servers(3)
    resolver.update(SERVICE, [server.address for server in servers])
    with (
        rpctest.TestServiceClient(SERVICE, resolver=resolver, mux=2, timeout=5) as client,
        ThreadPoolExecutor(8) as workers,
    ):
        seen = Counter(workers.map(lambda _: client.echo(rpctest.Req()).text, range(600)))
        assert [len(server.connections()) for server in servers] == [2, 2, 2]
    assert seen == {"s0": 200, "s1": 200, "s2": 200}


def test_a_channel_without_a_resolver_rejects_a_non_address(rpctest: ModuleType) -> None:
    with pytest.raises(ValueError):
        ClientChannel("not an address")


def test_instances_that_cannot_be_dialed_are_skipped_not_fatal(
    rpctest: ModuleType,
    named_servers: Callable[..., list[Server]],
    resolver: StaticResolver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (good,) = named_servers(1)
    resolver.update(
        SERVICE, [Instance("garbage"), Instance(good.address), Instance("h:1", network="udp")]
    )
    with rpctest.TestServiceClient(SERVICE, resolver=resolver, timeout=5) as client:
        assert [i.address for i in client.channel.instances] == [good.address]
        assert names(client, rpctest, 5) == {"s0": 5}
    assert sum("skipping instance" in r.getMessage() for r in caplog.records) == 2


def test_a_retry_goes_back_to_a_failed_instance_when_the_others_are_broken(
    rpctest: ModuleType, named_servers: Callable[..., list[Server]], resolver: StaticResolver
) -> None:
    """A (dead, breaker still closed) and B (breaker open): a call that failed on A may retry
    A, rather than report every circuit open."""
    (alive,) = named_servers(1)
    dead = free_port()
    resolver.update(SERVICE, [dead, alive.address])
    breakers: dict[str, InstanceBreaker] = {}

    def factory(instance: Instance) -> InstanceBreaker:
        breakers[instance.target] = InstanceBreaker(failure_threshold=100, cooldown=30)
        return breakers[instance.target]

    with rpctest.TestServiceClient(
        SERVICE, resolver=resolver, breaker=factory, balancer="round_robin", timeout=5
    ) as client:
        for _ in range(100):  # open the live instance's breaker by hand
            breakers[alive.address].on_failure()
        assert breakers[alive.address].state is BreakerState.OPEN
        with pytest.raises(rpcpoll.UnavailableError, match="refused"):
            client.echo(rpctest.Req())  # dead, retried on dead: the dial error, not "circuit"
