"""Fixtures of the hostile-client suite: servers in this process or in their own.

Everything binds 127.0.0.1 on ephemeral ports; every server, socket and thread a test opens is
closed by the test or its fixture (the shared leak check runs on every test here).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rpcpoll.server import Server

sys.path.insert(0, os.path.dirname(__file__))  # for hostile_testutil (importlib import mode)

from hostile_testutil import Gate, HostileHandler, ServeProcess


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every hostile test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture
def gate() -> Iterator[Gate]:
    made = Gate()
    yield made
    made.open.set()  # no handler outlives its test


@pytest.fixture
def serve(gate: Gate) -> Iterator[Callable[..., Server]]:
    """`serve(**options) -> started Server` running HostileHandler in this process."""
    servers: list[Server] = []

    def start(**options: Any) -> Server:
        server = Server("127.0.0.1:0", HostileHandler(gate), **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        gate.open.set()
        for server in servers:
            server.shutdown(1.0)


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        made = ServeProcess(*args)
        started.append(made)
        return made

    try:
        yield start
    finally:
        for made in started:
            made.stop()
