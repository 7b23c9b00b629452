"""Fixtures for the transport tests: leak checks, servers, clients and connection pairs.

Every test in this directory runs under `_no_leaked_fds_or_threads`: pollers are process-wide
and persistent (as in netpoll), so they are started before the counts are taken; the default
worker pool is trimmed before and after, and the test fails if file descriptors or threads do
not return to their starting counts within a few seconds.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpcpoll.transport import Connection, EventLoop, create_listener

sys.path.insert(0, os.path.dirname(__file__))  # for transport_testutil (importlib import mode)

from transport_testutil import (
    PAIR_KINDS,
    Clients,
    Server,
    ThreadRunner,
    connection_pair,
)


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every transport test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """`serve(on_request, network="tcp"|"unix", **EventLoop options) -> Server`."""
    servers: list[Server] = []

    def start(on_request: Any, *, network: str = "tcp", **options: Any) -> Server:
        if network == "unix":
            listener = create_listener("unix", str(tmp_path / f"server{len(servers)}.sock"))
        else:
            listener = create_listener(network, "127.0.0.1:0")
        try:
            server = Server(EventLoop(on_request, **options), listener, network)
        except BaseException:
            listener.close()
            raise
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    try:
        yield made
    finally:
        made.close_all()


@pytest.fixture(params=PAIR_KINDS)
def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Connection, socket.socket]]:
    """(Connection, peer socket) over loopback TCP, a Unix socket and a socket pair."""
    with connection_pair(request.param, tmp_path) as made:
        yield made


@pytest.fixture(
    params=[*((kind, False) for kind in PAIR_KINDS), ("tcp", True), ("unix", True)],
    ids=lambda param: f"{param[0]}-direct" if param[1] else param[0],
)
def any_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Connection, socket.socket]]:
    """`pair`, and also direct connections (no poller) over TCP and a Unix socket: for
    behaviour both kinds share."""
    kind, direct = request.param
    with connection_pair(kind, tmp_path, direct=direct) as made:
        yield made


@pytest.fixture
def threads() -> Iterator[ThreadRunner]:
    runner = ThreadRunner()
    try:
        yield runner
    finally:
        runner.join_all()
