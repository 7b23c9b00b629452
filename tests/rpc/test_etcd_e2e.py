"""Generated clients that find their servers in a real etcd ("etcd://host:port/NAME").

Skipped, with the reason, when no etcd binary is installed (scripts/install-etcd installs it).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from testutil import wait_until

import rpcpoll
from rpcpoll.discovery import EtcdRegistry, Instance
from rpcpoll.server import Server
from rpcpoll.service import CallContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "discovery"))

from discovery_testutil import EtcdProcess, find_etcd

SERVICE = "rpctest.e2e"
_unique = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    binary = find_etcd()
    if binary is None:
        pytest.skip("etcd not installed: run scripts/install-etcd")
    process = EtcdProcess(binary, tmp_path_factory.mktemp("etcd-e2e") / "data", "e2e")
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def prefix() -> str:
    return f"rpcpoll-e2e/{next(_unique)}"


@pytest.fixture
def registry(etcd: EtcdProcess, prefix: str) -> Iterator[EtcdRegistry]:
    made = EtcdRegistry(etcd.endpoint, prefix=prefix, ttl=2)
    yield made
    made.close()


@pytest.fixture
def named_server(rpctest: ModuleType, serve: Callable[..., Server]) -> Callable[[str], Server]:
    def start(name: str) -> Server:
        class Named(rpctest.TestServiceHandler):  # type: ignore[misc, name-defined]
            def echo(self, request: Any, context: CallContext) -> Any:
                return rpctest.Resp(text=name)

        return serve(Named())

    return start


def test_client_discovers_servers_and_follows_changes_while_calling(
    rpctest: ModuleType,
    etcd: EtcdProcess,
    prefix: str,
    registry: EtcdRegistry,
    named_server: Callable[[str], Server],
) -> None:
    a, b = named_server("a"), named_server("b")
    registry.register(SERVICE, Instance(a.address))
    target = f"{etcd.url}/{SERVICE}?prefix={prefix}"
    seen: Counter[str] = Counter()
    errors: list[Exception] = []
    stop = threading.Event()
    with rpctest.TestServiceClient(target, timeout=5) as client:
        assert client.echo(rpctest.Req()).text == "a"

        def caller() -> None:
            while not stop.is_set():
                try:
                    seen[client.echo(rpctest.Req()).text] += 1
                except rpcpoll.RpcError as exc:
                    errors.append(exc)
                time.sleep(0.001)

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            registry.register(SERVICE, Instance(b.address))  # added while calling
            assert wait_until(lambda: seen["b"] > 20)
            registry.deregister(SERVICE, Instance(a.address))  # withdrawn, then stopped
            assert wait_until(lambda: len(client.channel.instances) == 1)
            assert a.shutdown(5.0)
            count_b = seen["b"]
            assert wait_until(lambda: seen["b"] > count_b + 20)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert errors == []
    assert [i.address for i in client.channel.instances] == [b.address]


def test_calls_go_on_while_etcd_restarts(
    rpctest: ModuleType,
    tmp_path: Path,
    named_server: Callable[[str], Server],
) -> None:
    binary = find_etcd()
    assert binary is not None
    own = EtcdProcess(binary, tmp_path / "etcd-data", "restart")
    own.start()
    registry = EtcdRegistry(own.endpoint, ttl=5)
    try:
        a = named_server("a")
        registry.register(SERVICE, Instance(a.address))
        with rpctest.TestServiceClient(f"{own.url}/{SERVICE}", timeout=5) as client:
            assert client.echo(rpctest.Req()).text == "a"
            own.stop()
            # etcd is gone: the client keeps the last good instance list
            assert [client.echo(rpctest.Req()).text for _ in range(20)] == ["a"] * 20
            own.start()
            b = named_server("b")
            registry.register(SERVICE, Instance(b.address))  # seen after the re-watch
            assert wait_until(lambda: client.echo(rpctest.Req()).text == "b", timeout=10), (
                "the client never saw an instance registered after etcd restarted"
            )
    finally:
        registry.close()
        own.kill()


def test_an_unknown_service_fails_calls_clearly(
    rpctest: ModuleType, etcd: EtcdProcess, prefix: str
) -> None:
    target = f"{etcd.url}/nobody?prefix={prefix}"
    with (
        rpctest.TestServiceClient(target, timeout=2) as client,
        pytest.raises(rpcpoll.UnavailableError, match="nobody: no instance available"),
    ):
        client.echo(rpctest.Req())


# --------------------------------------------------------------------------- rpcpoll serve


def start_registered(etcd: EtcdProcess, prefix: str, *extra: str) -> tuple[Any, str]:
    from .test_cli import start_serve

    url = f"{etcd.url}?prefix={prefix}"
    return start_serve(
        "--address", "127.0.0.1:0", "--registry", url, "--service-name", "echo-cli", *extra
    )


def registered(etcd: EtcdProcess, prefix: str) -> list[str]:
    from rpcpoll.discovery import EtcdResolver

    resolver = EtcdResolver(etcd.endpoint, prefix=prefix)
    try:
        return [instance.target for instance in resolver.resolve("echo-cli")]
    finally:
        resolver.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_registers_while_serving_and_deregisters_first_on_sigterm(
    etcd: EtcdProcess, prefix: str, workers: str
) -> None:
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    from .test_cli import stop

    proc, address = start_registered(etcd, prefix, "--workers", workers, "--tag", "zone=a")
    try:
        assert registered(etcd, prefix) == [address]
        raw = etcd.gateway().get_prefix(f"{prefix}/echo-cli/".encode())
        (value,) = [kv.value for kv in raw.kvs]
        assert b'"tags": {"zone": "a"}' in value or b'"tags":{"zone":"a"}' in value
        with EchoServiceClient(f"{etcd.url}/echo-cli?prefix={prefix}", timeout=5) as client:
            assert client.echo(EchoRequest(message="found")).message == "found"
    finally:
        code, log = stop(proc)
    assert code == 0, log
    assert registered(etcd, prefix) == []
    assert log.index("deregistered") < log.index("shutting down"), log


def test_a_crashed_server_disappears_when_its_lease_expires(etcd: EtcdProcess, prefix: str) -> None:
    import signal

    from .test_cli import stop

    proc, address = start_registered(etcd, prefix, "--registry-ttl", "2")
    try:
        assert registered(etcd, prefix) == [address]
        proc.kill()  # no chance to deregister
        proc.wait(10)
        assert wait_until(lambda: registered(etcd, prefix) == [], timeout=6)
    finally:
        stop(proc, signal.SIGKILL)


def test_serve_fails_clearly_when_the_registry_is_unreachable() -> None:
    import socket
    import subprocess

    from .test_cli import rpcpoll_command

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"etcd://127.0.0.1:{sock.getsockname()[1]}"
    done = subprocess.run(
        rpcpoll_command("serve", "--address", "127.0.0.1:0", "--registry", dead),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot register echo.EchoService" in done.stderr
    assert "Traceback" not in done.stderr
