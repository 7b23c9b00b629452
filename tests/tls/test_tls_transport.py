"""TLS on the transport: TLSConnection between EventLoop servers and dialed connections."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pki import PKI
from testutil import wait_until
from tls_testutil import Served

from rpcpoll.transport import (
    Connection,
    ServerTLS,
    TLSCertificateError,
    TLSConnection,
    TLSError,
    TLSHandshakeError,
    TLSSessionError,
    client_context,
    dial_connection,
)

PROMPT = 2.0  # seconds within which a refused or failed connection must be reported


def dial(served: Served, context: ssl.SSLContext, **options: Any) -> Connection:
    return dial_connection(served.network, served.target, 2.0, ssl=context, **options)


def round_trip(conn: Connection, data: bytes) -> bytes:
    conn.write(data)
    conn.set_read_timeout(5.0)
    return bytes(conn.next(len(data)))


@pytest.mark.parametrize("direct", [False, True], ids=["polled", "direct"])
def test_echo_over_tls(
    serve: Callable[..., Served],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    direct: bool,
) -> None:
    served = serve(ssl=server_tls)
    conn = dial(served, client_ssl, direct=direct)
    try:
        assert isinstance(conn, TLSConnection)
        assert conn.tls_version in ("TLSv1.2", "TLSv1.3")
        assert conn.peer_identity is not None and conn.peer_identity.common_name == "server"
        for size in (1, 100, 5000):
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert round_trip(conn, data) == data
    finally:
        conn.close()
    assert server_tls.handshakes == 1 and server_tls.failures == 0


def test_echo_over_tls_on_a_unix_socket_with_a_server_name(
    serve: Callable[..., Served], server_tls: ServerTLS, client_ssl: ssl.SSLContext
) -> None:
    served = serve(ssl=server_tls, network="unix")
    conn = dial(served, client_ssl, server_hostname="localhost", direct=True)
    try:
        assert round_trip(conn, b"over unix") == b"over unix"
    finally:
        conn.close()


@pytest.mark.parametrize("direct", [False, True], ids=["polled", "direct"])
def test_megabyte_messages_cross_both_ways(
    serve: Callable[..., Served],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    direct: bool,
) -> None:
    served = serve(ssl=server_tls)
    conn = dial(served, client_ssl, direct=direct)
    try:
        data = bytes(range(251)) * (6 * 1024 * 1024 // 251)  # 6 MiB, no repeating 16 KiB record
        started = time.monotonic()
        assert round_trip(conn, data) == data
        assert time.monotonic() - started < 10.0
    finally:
        conn.close()


def test_on_connect_runs_after_the_handshake_and_sees_the_client_identity(
    serve: Callable[..., Served], mtls: ServerTLS, client_mtls: ssl.SSLContext
) -> None:
    seen: list[Any] = []

    def on_connect(ctx: Any, conn: Connection) -> Any:
        seen.append(conn.peer_identity)
        return ctx

    served = serve(ssl=mtls, on_connect=on_connect)
    conn = dial(served, client_mtls)
    try:
        assert round_trip(conn, b"hi") == b"hi"
        identity = wait_until(lambda: seen and seen[0], message="on_connect")
        assert identity.common_name == "client-a"
        assert identity.subject == "CN=client-a"
        assert identity.uris == ("spiffe://test/client-a",)
        assert identity.issuer == "CN=rpcpoll test CA"
        assert identity.certificate.startswith(b"\x30")  # DER
    finally:
        conn.close()


def _first_read_or_dial_fails(served: Served, context: ssl.SSLContext, **options: Any) -> TLSError:
    """With TLS 1.3 a client learns that the server refused its certificate only after its
    own handshake is done: when the alert arrives (its first read, or a write after the
    poller received the alert). With TLS 1.2 the dial fails."""
    started = time.monotonic()
    try:
        conn = dial(served, context, **options)
    except TLSHandshakeError as exc:
        failure: TLSError = exc
    else:
        try:
            with pytest.raises(TLSSessionError) as caught:
                round_trip(conn, b"hello")
            failure = caught.value
        finally:
            conn.close()
    assert time.monotonic() - started < PROMPT
    return failure


def test_mtls_refuses_a_client_without_a_certificate(
    serve: Callable[..., Served], mtls: ServerTLS, client_ssl: ssl.SSLContext
) -> None:
    served = serve(ssl=mtls)
    failure = _first_read_or_dial_fails(served, client_ssl)
    assert "certificate required" in str(failure)
    wait_until(lambda: mtls.failures == 1, message="the server to count the failure")
    assert mtls.handshakes == 0


def test_mtls_refuses_a_client_certificate_from_an_unknown_ca(
    serve: Callable[..., Served], mtls: ServerTLS, pki: PKI
) -> None:
    served = serve(ssl=mtls)
    stranger = client_context(pki.ca.cert, pki.stranger.cert, pki.stranger.key)
    failure = _first_read_or_dial_fails(served, stranger)
    assert "unknown ca" in str(failure)


def test_a_name_the_certificate_does_not_cover_is_refused(
    serve: Callable[..., Served], server_tls: ServerTLS, client_ssl: ssl.SSLContext
) -> None:
    served = serve(ssl=server_tls)
    with pytest.raises(TLSCertificateError) as caught:
        dial(served, client_ssl, server_hostname="other.example")
    assert "Hostname mismatch" in caught.value.verify_message
    assert "other.example" in str(caught.value)


def test_a_server_from_an_untrusted_ca_is_refused(
    serve: Callable[..., Served], server_tls: ServerTLS, pki: PKI
) -> None:
    served = serve(ssl=server_tls)
    with pytest.raises(TLSCertificateError, match="unable to get local issuer certificate"):
        dial(served, client_context(pki.other_ca.cert))


def test_a_tls_client_to_a_plaintext_server_fails_promptly(
    serve: Callable[..., Served], client_ssl: ssl.SSLContext
) -> None:
    def strict(_ctx: Any, conn: Connection) -> None:  # a server that closes on garbage
        conn.close()

    served = serve(strict)
    started = time.monotonic()
    with pytest.raises(TLSHandshakeError, match="closed the connection"):
        dial(served, client_ssl)
    assert time.monotonic() - started < PROMPT


def test_a_plaintext_client_gets_the_plaintext_reply_and_a_close(
    serve: Callable[..., Served], pki: PKI
) -> None:
    tls = ServerTLS.from_files(pki.server.cert, pki.server.key, plaintext_reply=b"use TLS\n")
    served = serve(ssl=tls)
    with socket.create_connection(served.address, timeout=PROMPT) as sock:
        sock.sendall(b"\x00\x00\x00\x10plaintext frame")
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    assert received == b"use TLS\n"
    wait_until(lambda: tls.failures == 1, message="the failure to be counted")


def test_a_client_that_never_finishes_its_handshake_is_closed(
    serve: Callable[..., Served], pki: PKI
) -> None:
    tls = ServerTLS.from_files(pki.server.cert, pki.server.key, handshake_timeout=0.3)
    served = serve(ssl=tls)
    with socket.create_connection(served.address, timeout=PROMPT) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.2 < time.monotonic() - started < PROMPT
    wait_until(lambda: not served.loop.connections(), message="the connection to go")


def test_closing_sends_close_notify(
    serve: Callable[..., Served], server_tls: ServerTLS, pki: PKI
) -> None:
    """A stdlib client that refuses ragged EOFs sees a clean end of the TLS stream."""

    def close_at_once(_ctx: Any, conn: Connection) -> None:
        echo_and_close(conn)

    def echo_and_close(conn: Connection) -> None:
        reader = conn.reader()
        data = bytes(reader.next(len(reader)))
        conn.write(data)
        conn.close()

    served = serve(close_at_once, ssl=server_tls)
    context = ssl.create_default_context(cafile=pki.ca.cert)
    raw = socket.create_connection(served.address, timeout=PROMPT)
    with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
        tls.sendall(b"bye")
        assert tls.recv(10) == b"bye"
        assert tls.recv(10) == b""  # close_notify, not SSLEOFError


def test_a_peer_close_notify_ends_the_stream_after_its_bytes(
    serve: Callable[..., Served], server_tls: ServerTLS, pki: PKI
) -> None:
    got: list[bytes] = []
    gone = threading.Event()

    def collect(_ctx: Any, conn: Connection) -> None:
        reader = conn.reader()
        got.append(bytes(reader.next(len(reader))))

    served = serve(collect, ssl=server_tls, on_disconnect=lambda ctx, conn: gone.set())
    context = ssl.create_default_context(cafile=pki.ca.cert)
    raw = socket.create_connection(served.address, timeout=PROMPT)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"last words")
        tls.unwrap()  # close_notify, answered with the server's; TCP stays open
        assert gone.wait(PROMPT), "the server did not see the end of the stream"
    assert b"".join(got) == b"last words"


def test_interoperates_with_a_stdlib_tls_server(pki: PKI, client_ssl: ssl.SSLContext) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve_one() -> None:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(tls.recv(100).upper())

        thread = threading.Thread(target=serve_one)
        thread.start()
        port = listener.getsockname()[1]
        conn = dial_connection("tcp", f"127.0.0.1:{port}", 2.0, ssl=client_ssl, direct=True)
        try:
            assert round_trip(conn, b"shout") == b"SHOUT"
        finally:
            conn.close()
            thread.join(5.0)


def test_new_handshakes_use_a_replaced_context_and_old_connections_stay(
    serve: Callable[..., Served],
    server_tls: ServerTLS,
    client_ssl: ssl.SSLContext,
    other_server_context: ssl.SSLContext,
) -> None:
    served = serve(ssl=server_tls)
    before = dial(served, client_ssl)
    try:
        server_tls.set_context(other_server_context)
        after = dial(served, client_ssl)
        try:
            assert before.peer_identity is not None and after.peer_identity is not None
            assert before.peer_identity.common_name == "server"
            assert after.peer_identity.common_name == "server-b"
            assert round_trip(before, b"still here") == b"still here"
            assert round_trip(after, b"new") == b"new"
        finally:
            after.close()
    finally:
        before.close()


def test_reload_reads_the_files_again_and_keeps_the_old_context_on_error(
    pki: PKI, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(Path(pki.server.cert).read_bytes())
    key.write_bytes(Path(pki.server.key).read_bytes())
    tls = ServerTLS.from_files(str(cert), str(key))
    first = tls.context
    tls.reload()
    assert tls.context is not first
    current = tls.context
    key.write_text("not a key")
    with pytest.raises(TLSError, match="cannot load the TLS certificate"):
        tls.reload()
    assert tls.context is current
