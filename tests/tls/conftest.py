"""Fixtures for the TLS tests: a PKI made at run time, TLS contexts, echo servers, leak checks.

Every test runs under the shared leak check (tests/conftest.py). The PKI (two CAs, server and
client certificates, ECDSA P-256) is made once per session in a temporary directory.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpcpoll.transport import (
    EventLoop,
    ServerTLS,
    client_context,
    server_context,
)

sys.path.insert(0, os.path.dirname(__file__))  # for pki and tls_testutil (importlib mode)

from pki import PKI, make_pki
from tls_testutil import Served, echo


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every TLS test runs under the shared leak check."""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_tls(pki: PKI) -> ServerTLS:
    """The server certificate, no client certificates asked for."""
    return ServerTLS.from_files(pki.server.cert, pki.server.key)


@pytest.fixture
def mtls(pki: PKI) -> ServerTLS:
    """The server certificate, clients must present one from the test CA."""
    return ServerTLS.from_files(pki.server.cert, pki.server.key, pki.ca.cert)


@pytest.fixture
def client_ssl(pki: PKI) -> ssl.SSLContext:
    """Trusts the test CA; no client certificate."""
    return client_context(pki.ca.cert)


@pytest.fixture
def client_mtls(pki: PKI) -> ssl.SSLContext:
    """Trusts the test CA and presents client-a's certificate."""
    return client_context(pki.ca.cert, pki.client.cert, pki.client.key)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`serve(on_request=echo, network="tcp", **EventLoop options) -> Served`."""
    made: list[Served] = []

    def start(on_request: Any = echo, *, network: str = "tcp", **options: Any) -> Served:
        address = str(tmp_path / f"s{len(made)}.sock") if network == "unix" else "127.0.0.1:0"
        served = Served(EventLoop(on_request, **options), network, address)
        made.append(served)
        return served

    try:
        yield start
    finally:
        for served in made:
            served.stop()


@pytest.fixture
def other_server_context(pki: PKI) -> ssl.SSLContext:
    """A server context with a certificate of its own (CN server-b) from the same CA."""
    issued = pki.ca.issue("server-b")
    return server_context(issued.cert, issued.key)
