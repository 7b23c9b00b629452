"""Certificates made at run time for the TLS tests: CAs, server and client certificates.

ECDSA P-256 keys: made in about a millisecond, and cheap to handshake with. Nothing is
checked in; every file lives in the test's temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)
_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: str
    key: str


class CertAuthority:
    """A self-signed CA that issues certificates into `directory`."""

    def __init__(self, directory: Path, name: str = "rpcpoll test CA") -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = str(directory / f"{_slug(name)}.pem")
        Path(self.cert).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        uris: tuple[str, ...] = (),
        client: bool = False,
        server: bool | None = None,
        expired: bool = False,
        organization: str | None = None,
    ) -> Issued:
        """A leaf certificate for a server, a client (`client=True`) or both (`client=True,
        server=True`: etcd's own certificate, which its gateway also presents as a client)."""
        key = ec.generate_private_key(ec.SECP256R1())
        # An empty common_name leaves CN out (etcd's gateway refuses client certificates
        # with a CN once auth is on: it will not map CNs to users there).
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        if organization is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = (now - 3 * _DAY, now - 2 * _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server or (server is None and not client):
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = self.directory / f"{_slug(self.name)}-{_slug(common_name or organization or 'x')}"
        cert_path, key_path = Path(f"{stem}.pem"), Path(f"{stem}.key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(str(cert_path), str(key_path))


@dataclass(frozen=True)
class PKI:
    """What most tests need: a CA with a server and a client certificate, and a second CA
    (with its own client) that the server does not trust."""

    ca: CertAuthority
    server: Issued
    client: Issued
    other_ca: CertAuthority
    stranger: Issued  # a client certificate from other_ca


def make_pki(directory: Path) -> PKI:
    ca = CertAuthority(directory, "rpcpoll test CA")
    other = CertAuthority(directory, "untrusted CA")
    return PKI(
        ca=ca,
        server=ca.issue("server"),
        client=ca.issue("client-a", dns=(), ips=(), uris=("spiffe://test/client-a",), client=True),
        other_ca=other,
        stranger=other.issue("stranger", dns=(), ips=(), client=True),
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)
