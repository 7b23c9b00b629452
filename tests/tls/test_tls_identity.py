"""The caller's verified TLS identity in the handler's context (`CallContext.peer_identity`)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rpcpoll.examples.echo import EchoHandler
from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceClient
from rpcpoll.server import Server
from rpcpoll.service import CallContext
from rpcpoll.transport import ServerTLS

MODES = {"pool": {}, "mux": {"mux": 2}}


class WhoAmI(EchoHandler):
    """Echo that answers with the caller's verified identity: subject, then SAN URIs."""

    def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        peer = context.peer_identity
        if peer is None:
            return EchoResponse(message="anonymous")
        return EchoResponse(message=f"{peer.subject} {' '.join(peer.uris)}")


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def run(**options: Any) -> Server:
        server = Server("127.0.0.1:0", WhoAmI(), **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield run
    finally:
        for server in servers:
            server.shutdown(1.0)


def who(server: Server, **options: Any) -> str:
    with EchoServiceClient(server.address, timeout=5.0, **options) as client:
        # Several calls: in-order ones run inline, the first one on a new header parsed.
        answers = {client.echo(EchoRequest(message=str(i))).message for i in range(3)}
    assert len(answers) == 1
    return answers.pop()


@pytest.mark.parametrize("mode", MODES)
def test_the_handler_sees_the_client_certificate_identity(
    start: Callable[..., Server], mtls: ServerTLS, client_mtls: ssl.SSLContext, mode: str
) -> None:
    server = start(ssl=mtls)
    assert who(server, ssl=client_mtls, **MODES[mode]) == "CN=client-a spiffe://test/client-a"


def test_without_client_certificates_the_handler_sees_no_identity(
    start: Callable[..., Server], server_tls: ServerTLS, client_mtls: ssl.SSLContext
) -> None:
    server = start(ssl=server_tls)  # no client CA: the server asks for no certificate
    assert who(server, ssl=client_mtls) == "anonymous"


def test_a_plaintext_server_gives_no_identity(start: Callable[..., Server]) -> None:
    assert who(start()) == "anonymous"
