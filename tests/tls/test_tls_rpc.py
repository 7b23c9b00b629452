"""TLS for RPC: Server(ssl=...) with generated clients over pooled and multiplexed connections."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pki import PKI

import rpcpoll
from rpcpoll.examples.echo import EchoHandler
from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceClient
from rpcpoll.server import Server
from rpcpoll.transport import ServerTLS, TLSConnection, client_context

PROMPT = 2.0
MODES = {"pool": {}, "mux": {"mux": 2}}


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def run(handler: Any = None, **options: Any) -> Server:
        server = Server("127.0.0.1:0", handler or EchoHandler(), **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield run
    finally:
        for server in servers:
            server.shutdown(1.0)


def call(server: Server, request: EchoRequest | None = None, **options: Any) -> EchoResponse:
    request = request or EchoRequest(message="hi", payload=b"\x00\x01")
    with EchoServiceClient(server.address, timeout=5.0, **options) as client:
        reply: EchoResponse = client.echo(request)
        return reply


@pytest.mark.parametrize("mode", MODES)
def test_echo_over_tls(
    start: Callable[..., Server],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    mode: str,
) -> None:
    server = start(ssl=server_tls)
    with EchoServiceClient(server.address, timeout=5.0, ssl=client_ssl, **MODES[mode]) as client:
        for i in range(20):
            reply = client.echo(EchoRequest(message=f"m{i}", payload=bytes([i]) * i))
            assert (reply.message, reply.payload) == (f"m{i}", bytes([i]) * i)
    connections = server.connections()
    assert all(isinstance(conn, TLSConnection) for conn in connections)
    assert server_tls.handshakes >= 1 and server_tls.failures == 0


@pytest.mark.parametrize("mode", MODES)
def test_megabyte_requests_and_replies(
    start: Callable[..., Server],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    mode: str,
) -> None:
    server = start(ssl=server_tls)
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB each way
    reply = call(server, EchoRequest(payload=payload), ssl=client_ssl, **MODES[mode])
    assert reply.payload == payload


def test_tls_true_uses_the_system_cas_and_so_refuses_a_private_ca(
    start: Callable[..., Server], server_tls: ServerTLS
) -> None:
    server = start(ssl=server_tls)
    with pytest.raises(rpcpoll.UnavailableError, match="certificate verify failed"):
        call(server, tls=True)


@pytest.mark.parametrize("mode", MODES)
def test_mtls_refuses_a_client_without_a_certificate(
    start: Callable[..., Server], mtls: ServerTLS, client_ssl: ssl.SSLContext, mode: str
) -> None:
    server = start(ssl=mtls)
    started = time.monotonic()
    with pytest.raises(rpcpoll.UnavailableError, match="certificate required"):
        call(server, ssl=client_ssl, **MODES[mode])
    assert time.monotonic() - started < PROMPT


@pytest.mark.parametrize("mode", MODES)
def test_mtls_refuses_a_client_from_another_ca(
    start: Callable[..., Server], mtls: ServerTLS, pki: PKI, mode: str
) -> None:
    server = start(ssl=mtls)
    stranger = client_context(pki.ca.cert, pki.stranger.cert, pki.stranger.key)
    with pytest.raises(rpcpoll.UnavailableError, match="unknown ca"):
        call(server, ssl=stranger, **MODES[mode])


@pytest.mark.parametrize("mode", MODES)
def test_a_server_name_the_certificate_lacks_is_refused(
    start: Callable[..., Server], server_tls: ServerTLS, client_ssl: ssl.SSLContext, mode: str
) -> None:
    server = start(ssl=server_tls)
    with pytest.raises(rpcpoll.UnavailableError, match="Hostname mismatch"):
        call(server, ssl=client_ssl, server_hostname="elsewhere.example", **MODES[mode])
    # The right name, given explicitly, works (the certificate has DNS:localhost).
    assert call(server, ssl=client_ssl, server_hostname="localhost").message == "hi"


@pytest.mark.parametrize("mode", MODES)
def test_a_plaintext_client_is_told_the_server_requires_tls(
    start: Callable[..., Server], server_tls: ServerTLS, mode: str
) -> None:
    server = start(ssl=server_tls)
    started = time.monotonic()
    with pytest.raises(rpcpoll.UnavailableError, match="requires TLS"):
        call(server, **MODES[mode])
    assert time.monotonic() - started < PROMPT


@pytest.mark.parametrize("mode", MODES)
def test_a_tls_client_to_a_plaintext_server_fails_promptly(
    start: Callable[..., Server], client_ssl: ssl.SSLContext, mode: str
) -> None:
    server = start()
    started = time.monotonic()
    with pytest.raises(rpcpoll.UnavailableError, match="TLS handshake"):
        call(server, ssl=client_ssl, **MODES[mode])
    assert time.monotonic() - started < PROMPT


def test_a_unix_target_needs_a_server_name_for_tls(client_ssl: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="server_hostname"):
        EchoServiceClient("unix:/tmp/nowhere.sock", ssl=client_ssl)


def test_new_certificates_apply_to_new_connections_only(
    start: Callable[..., Server],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    other_server_context: ssl.SSLContext,
) -> None:
    server = start(ssl=server_tls)
    with EchoServiceClient(server.address, timeout=5.0, ssl=client_ssl, mux=1) as old:
        assert old.echo(EchoRequest(message="before")).message == "before"
        server.tls.set_context(other_server_context)  # type: ignore[union-attr]
        with EchoServiceClient(server.address, timeout=5.0, ssl=client_ssl, mux=1) as new:
            assert new.echo(EchoRequest(message="after")).message == "after"
        assert old.echo(EchoRequest(message="still")).message == "still"
    assert server_tls.handshakes == 2  # and the old connection was never dropped


@pytest.mark.parametrize("async_handler", [False, True], ids=["sync-server", "async-server"])
def test_async_client_over_tls(
    start: Callable[..., Server],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    async_handler: bool,
) -> None:
    import asyncio

    from rpcpoll.examples.echo import AsyncEchoHandler
    from rpcpoll.examples.echo_rpc import EchoServiceAsyncClient

    server = start(AsyncEchoHandler() if async_handler else None, ssl=server_tls)

    async def main() -> list[str]:
        async with EchoServiceAsyncClient(server.address, timeout=5.0, ssl=client_ssl) as client:
            replies = await asyncio.gather(
                *(client.echo(EchoRequest(message=f"m{i}")) for i in range(50))
            )
            return [reply.message for reply in replies]

    assert asyncio.run(main()) == [f"m{i}" for i in range(50)]
    assert all(isinstance(conn, TLSConnection) for conn in server.connections())


def test_async_client_refuses_a_certificate_it_cannot_verify(
    start: Callable[..., Server], server_tls: ServerTLS
) -> None:
    import asyncio

    from rpcpoll.examples.echo_rpc import EchoServiceAsyncClient

    server = start(ssl=server_tls)

    async def main() -> None:
        async with EchoServiceAsyncClient(server.address, timeout=5.0, tls=True) as client:
            with pytest.raises(rpcpoll.UnavailableError, match="certificate"):
                await client.echo(EchoRequest(message="x"))

    asyncio.run(main())
