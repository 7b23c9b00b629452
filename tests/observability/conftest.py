"""Fixtures of the observability tests (metrics, tracing, access log middleware).

In-process servers bind 127.0.0.1 on ephemeral ports and are shut down by the `serve`
fixture; `rpcpoll serve` subprocesses come from obs_testutil.Serve.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for obs_testutil (importlib import mode)

from obs_testutil import HANDLER_SOURCE

from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every observability test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """`serve(*handlers, **options)`: a started Server on 127.0.0.1, shut down afterwards."""
    servers: list[Server] = []

    def start(*handlers: Any, **options: Any) -> Server:
        server = Server("127.0.0.1:0", *handlers, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(2.0)


@pytest.fixture(scope="module")
def handler_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding obs_service.py (obs_testutil.HANDLER_SOURCE) for `rpcpoll serve`."""
    folder = tmp_path_factory.mktemp("obs_handler")
    (folder / "obs_service.py").write_text(HANDLER_SOURCE)
    return folder
