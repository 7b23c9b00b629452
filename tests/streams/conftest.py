"""Fixtures for the streaming tests (helpers in streams_testutil.py): servers of the scripted
route guide, sync and async, and clients; every test runs under the shared leak check."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rpcpoll.examples.route_guide_rpc import RouteGuideClient
from rpcpoll.server import Server

sys.path.insert(0, os.path.dirname(__file__))  # for streams_testutil (importlib import mode)

from streams_testutil import HANDLERS, WAIT, Seen


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every streaming test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture
def seen() -> Iterator[Seen]:
    made = Seen()
    yield made
    made.set_release()  # no handler outlives its test


@pytest.fixture
def serve(seen: Seen) -> Iterator[Callable[..., Server]]:
    """`serve(kind="sync"|"async", **options) -> started Server` of the scripted route guide
    (or of `handlers=[...]`), shut down after the test."""
    servers: list[Server] = []

    def start(kind: str = "sync", *, handlers: Any = None, **options: Any) -> Server:
        made = handlers if handlers is not None else [HANDLERS[kind](seen)]
        server = Server("127.0.0.1:0", *made, **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        seen.set_release()
        for server in servers:
            server.shutdown(1.0)


@pytest.fixture(params=["sync", "async"])
def handler_kind(request: pytest.FixtureRequest) -> str:
    """Which route guide handler the server runs."""
    kind: str = request.param
    return kind


@pytest.fixture
def server(serve: Callable[..., Server], handler_kind: str) -> Server:
    return serve(handler_kind)


@pytest.fixture
def sync_client(server: Server) -> Iterator[RouteGuideClient]:
    """A pooled sync client (streams go over a multiplexed connection of their own)."""
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        yield client
