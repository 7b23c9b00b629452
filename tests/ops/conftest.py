"""Fixtures of the operations tests (health, describe, call, list, bench, serve extras).

Servers run as `rpcpoll serve` subprocesses on 127.0.0.1 with ephemeral ports; a module-wide
one serves the test handler (ops_testutil.HANDLER_SOURCE) for the command-line tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for ops_testutil (importlib import mode)

from ops_testutil import HANDLER_SOURCE, Serve


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every operations test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture(scope="module")
def handler_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ops_handler")
    (folder / "ops_service.py").write_text(HANDLER_SOURCE)
    return folder


@pytest.fixture(scope="module")
def server(handler_dir: Path) -> Iterator[Serve]:
    """`rpcpoll serve ops_service:OpsEcho`, shared by a module's tests."""
    made = Serve("ops_service:OpsEcho", cwd=handler_dir)
    yield made
    made.stop()


@pytest.fixture
def unused_address() -> str:
    """A loopback address nothing listens on (a port bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
