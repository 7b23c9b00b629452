"""Fixtures for the discovery tests: real etcd processes, unique key prefixes, leak checks.

Tests that need etcd skip (with the reason) when no `etcd` binary is installed; the others
(static resolver, URLs, addresses) always run. Most tests share one session etcd and keep out of
each other's way with a unique key prefix; tests that stop or restart etcd get their own
(`etcd_own`). Every test runs under the shared leak check (tests/conftest.py): the session etcd
is started before it counts, so whatever registries, resolvers and subscriptions a test
creates must give back all their threads and sockets.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpcpoll.discovery import EtcdGateway, EtcdRegistry, EtcdResolver

sys.path.insert(0, os.path.dirname(__file__))  # for discovery_testutil (importlib import mode)

from discovery_testutil import EtcdProcess, find_etcd

SKIP_REASON = "etcd not installed: run scripts/install-etcd"
_unique = itertools.count()


@pytest.fixture(scope="session")
def _session_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess | None]:
    """The shared etcd, or None when not installed (so tests without etcd still run)."""
    binary = find_etcd()
    if binary is None:
        yield None
        return
    process = EtcdProcess(binary, tmp_path_factory.mktemp("etcd-session") / "data", "session")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(_session_etcd: EtcdProcess | None, no_leaks: None) -> None:
    """Every discovery test runs under the shared leak check, started after the session etcd."""


@pytest.fixture
def etcd(_session_etcd: EtcdProcess | None) -> EtcdProcess:
    """The shared etcd (do not stop it: use `etcd_own` for that)."""
    if _session_etcd is None:
        pytest.skip(SKIP_REASON)
    return _session_etcd


@pytest.fixture
def etcd_own(tmp_path: Path) -> Iterator[EtcdProcess]:
    """An etcd of this test's own, free to be stopped, killed and restarted."""
    binary = find_etcd()
    if binary is None:
        pytest.skip(SKIP_REASON)
    process = EtcdProcess(binary, tmp_path / "etcd-data", "own")
    process.start()
    try:
        yield process
    finally:
        process.kill()  # its data dies with the test: no need for a graceful stop


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses."""
    return f"rpcpoll-test/{request.node.name[:40]}-{next(_unique)}"


@pytest.fixture
def gateway(etcd: EtcdProcess) -> EtcdGateway:
    return etcd.gateway()


@pytest.fixture
def make_registry() -> Iterator[Callable[..., EtcdRegistry]]:
    """`make_registry(endpoints, **options)`; every one made is closed after the test."""
    made: list[EtcdRegistry] = []

    def make(endpoints: Any, **options: Any) -> EtcdRegistry:
        registry = EtcdRegistry(endpoints, **options)
        made.append(registry)
        return registry

    try:
        yield make
    finally:
        for registry in made:
            registry.close()


@pytest.fixture
def make_resolver() -> Iterator[Callable[..., EtcdResolver]]:
    """`make_resolver(endpoints, **options)`; every one made is closed after the test."""
    made: list[EtcdResolver] = []

    def make(endpoints: Any, **options: Any) -> EtcdResolver:
        resolver = EtcdResolver(endpoints, **options)
        made.append(resolver)
        return resolver

    try:
        yield make
    finally:
        for resolver in made:
            resolver.close()
