"""etcd over HTTPS with client certificates and user/password auth, against a real etcd.

One etcd for the module, started with `--client-cert-auth` and a certificate from a CA made
at run time; auth is then enabled with a user `svc` allowed to read and write one prefix.
Client certificates carry no CN: with auth on, etcd 3.4's gateway refuses requests whose
certificate has one (it will not map CNs to users there).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from discovery_testutil import Changes, EtcdProcess, EtcdTLS, find_etcd
from pki import CertAuthority
from testutil import wait_until

import rpcpoll
from rpcpoll.client import ClientChannel
from rpcpoll.discovery import EtcdGateway, EtcdRegistry, EtcdResolver, Instance
from rpcpoll.discovery.etcd_gateway import EtcdAuthError, EtcdUnavailable, prefix_range_end
from rpcpoll.examples.echo import EchoHandler
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.server import Server
from rpcpoll.transport import client_context, server_context

PREFIX = "tls-auth"
USER, PASSWORD = "svc", "s3cret pw"


class Setup:
    def __init__(self, etcd: EtcdProcess, ca: CertAuthority, cert: str, key: str) -> None:
        self.etcd = etcd
        self.ca = ca
        self.cert = cert  # a client certificate without a CN
        self.key = key

    def url(self, user: str = f"{USER}:s3cret%20pw", path: str = "", **params: str) -> str:
        query = {"ca": self.ca.cert, "cert": self.cert, "key": self.key, "prefix": PREFIX}
        query.update(params)
        shown = "&".join(f"{k}={v}" for k, v in query.items() if v)
        at = f"{user}@" if user else ""
        return f"etcds://{at}127.0.0.1:{self.etcd.client_port}{path}?{shown}"

    def tls(self) -> ssl.SSLContext:
        return client_context(self.ca.cert, self.cert, self.key)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    binary = find_etcd()
    if binary is None:
        pytest.skip("etcd not installed: run scripts/install-etcd")
    directory = tmp_path_factory.mktemp("etcd-tls")
    ca = CertAuthority(directory, "etcd CA")
    member = ca.issue("etcd", client=True, server=True)
    client = ca.issue("", dns=(), ips=(), client=True, organization="svc")
    context = client_context(ca.cert, client.cert, client.key)
    etcd = EtcdProcess(
        binary, directory / "data", "tls", EtcdTLS(member.cert, member.key, ca.cert, context)
    )
    etcd.start()
    try:
        _enable_auth(EtcdGateway(f"https://127.0.0.1:{etcd.client_port}", ssl=context))
        yield Setup(etcd, ca, client.cert, client.key)
    finally:
        etcd.kill()


def _enable_auth(root: EtcdGateway) -> None:
    """root (role root), and svc with read-write on PREFIX; then auth on."""

    def b64(data: bytes) -> str:
        import base64

        return base64.b64encode(data).decode()

    key = f"{PREFIX}/".encode()
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": "root-pw"}),
        ("/v3/auth/role/add", {"name": "root"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/user/add", {"name": USER, "password": PASSWORD}),
        ("/v3/auth/role/add", {"name": "rw"}),
        (
            "/v3/auth/role/grant",
            {
                "name": "rw",
                "perm": {
                    "permType": "READWRITE",
                    "key": b64(key),
                    "range_end": b64(prefix_range_end(key)),
                },
            },
        ),
        ("/v3/auth/user/grant", {"user": USER, "role": "rw"}),
        ("/v3/auth/enable", {}),
    ]:
        root.call(path, json.loads(json.dumps(body)))


def test_register_and_resolve_over_https_as_a_user(secured: Setup) -> None:
    registry = EtcdRegistry.from_url(secured.url(), ttl=5)
    resolver = EtcdResolver.from_url(secured.url(path="/echo"))
    try:
        assert registry.gateway.ssl is not None
        changes = Changes()
        subscription = resolver.subscribe("echo", changes)  # a watch carries the token too
        try:
            registry.register("echo", Instance("127.0.0.1:7001"))
            changes.wait_for({"127.0.0.1:7001"})
            assert [i.address for i in resolver.resolve("echo")] == ["127.0.0.1:7001"]
        finally:
            subscription.close()
    finally:
        registry.close()
        resolver.close()


def test_an_expired_token_is_renewed_and_the_call_repeated(secured: Setup) -> None:
    gateway = EtcdResolver.from_url(secured.url()).gateway
    gateway.put(f"{PREFIX}/k".encode(), b"v1")
    gateway._token = "expired.1"  # what etcd says after --auth-token-ttl, or a restart
    assert gateway.get(f"{PREFIX}/k".encode()) is not None
    assert gateway._token != "expired.1"
    gateway._token = "expired.2"
    with gateway.watch(f"{PREFIX}/".encode(), 1) as stream:  # a watch renews it too
        assert stream.read(5.0) is not None


def test_a_wrong_password_is_an_auth_error_without_the_password(secured: Setup) -> None:
    gateway = EtcdResolver.from_url(secured.url(user=f"{USER}:wrong")).gateway
    with pytest.raises(EtcdAuthError, match=f"refused user '{USER}'") as caught:
        gateway.get(f"{PREFIX}/k".encode())
    assert "wrong" not in str(caught.value)


def test_no_credentials_says_etcd_wants_them(secured: Setup) -> None:
    gateway = EtcdGateway(f"127.0.0.1:{secured.etcd.client_port}", ssl=secured.tls())
    with pytest.raises(EtcdAuthError, match="give a user and password"):
        gateway.get(f"{PREFIX}/k".encode())


def test_keys_outside_the_users_role_are_denied_by_name(secured: Setup) -> None:
    gateway = EtcdResolver.from_url(secured.url()).gateway
    with pytest.raises(EtcdAuthError, match=f"user '{USER}' lacks a role"):
        gateway.get(b"elsewhere/k")


def test_a_user_without_a_password_takes_it_from_the_environment(
    secured: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RPCPOLL_ETCD_PASSWORD", PASSWORD)
    gateway = EtcdResolver.from_url(secured.url(user=USER)).gateway
    gateway.put(f"{PREFIX}/env".encode(), b"ok")


def test_an_etcd_certificate_from_an_unknown_ca_is_unavailable_with_the_reason(
    secured: Setup, tmp_path: Path
) -> None:
    other = CertAuthority(tmp_path, "other CA")
    gateway = EtcdResolver.from_url(secured.url(ca=other.cert)).gateway
    with pytest.raises(EtcdUnavailable, match="certificate verify failed"):
        gateway.get(f"{PREFIX}/k".encode())


def test_a_tls_service_found_through_a_tls_etcd(secured: Setup) -> None:
    """Both legs encrypted: the registry and resolver to etcd, the client to the server."""
    issued = secured.ca.issue("echo-server")
    server = Server("127.0.0.1:0", EchoHandler(), ssl=server_context(issued.cert, issued.key))
    server.start()
    registry = EtcdRegistry.from_url(secured.url(), ttl=5)
    try:
        registry.register("echo", Instance(server.address))
        options: dict[str, Any] = {"timeout": 5.0, "ssl": secured.tls()}
        with EchoServiceClient(secured.url(path="/echo"), **options) as client:
            channel = client._channel
            assert isinstance(channel, ClientChannel)
            wait_until(lambda: channel.instances, message="the instance to be resolved")
            assert client.echo(EchoRequest(message="both legs")).message == "both legs"
        with EchoServiceClient(secured.url(path="/echo"), timeout=2.0) as plain:
            wait_until(lambda: plain._channel.instances, message="resolved")  # type: ignore[attr-defined]
            with pytest.raises(rpcpoll.UnavailableError, match="requires TLS"):
                plain.echo(EchoRequest(message="no TLS"))
    finally:
        registry.close()
        server.shutdown(1.0)
