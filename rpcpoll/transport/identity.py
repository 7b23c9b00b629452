"""The verified identity of a TLS peer, as a handler or an `on_connect` sees it.

Built once per connection from the certificate the peer presented and OpenSSL verified (a
server sees one only with mTLS: a client CA configured). Plain data: comparing it, logging
it or putting it in a set costs nothing, and nothing in it refers back to the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PeerIdentity"]


@dataclass(frozen=True)
class PeerIdentity:
    """Who the peer proved to be.

    `subject` and `issuer` are RFC 4514-style strings ("CN=client-a,O=Example"), most specific
    attribute first; `common_name` is the subject's CN. The subjectAltName entries are split by
    kind: `dns_names`, `ip_addresses`, `uris` (SPIFFE IDs live here) and `emails`.
    `certificate` is the DER bytes of the peer's certificate, for anything else.
    """

    subject: str
    common_name: str | None
    issuer: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    serial_number: str = ""
    not_after: str = ""
    certificate: bytes = b""

    @classmethod
    def from_certificate(cls, decoded: dict[str, Any], der: bytes = b"") -> PeerIdentity:
        """From `SSLObject.getpeercert()` (the decoded form, present once verified) and its
        DER bytes."""
        subject = _names(decoded.get("subject", ()))
        alt: dict[str, list[str]] = {}
        for kind, value in decoded.get("subjectAltName", ()):
            alt.setdefault(kind, []).append(str(value).strip())
        return cls(
            subject=_rfc4514(subject),
            common_name=next((value for key, value in subject if key == "commonName"), None),
            issuer=_rfc4514(_names(decoded.get("issuer", ()))),
            dns_names=tuple(alt.get("DNS", ())),
            ip_addresses=tuple(alt.get("IP Address", ())),
            uris=tuple(alt.get("URI", ())),
            emails=tuple(alt.get("email", ())),
            serial_number=str(decoded.get("serialNumber", "")),
            not_after=str(decoded.get("notAfter", "")),
            certificate=der,
        )

    def __str__(self) -> str:
        return self.subject or (self.uris + self.dns_names + ("(no subject)",))[0]

    def __repr__(self) -> str:
        # The DER bytes are long and say nothing at a glance.
        return f"PeerIdentity(subject={self.subject!r}, dns_names={self.dns_names!r})"


_SHORT = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "emailAddress",
}


def _names(rdns: Any) -> list[tuple[str, str]]:
    """The (attribute, value) pairs of a decoded name, in the certificate's order."""
    return [(str(key), str(value)) for rdn in rdns for key, value in rdn]


def _rfc4514(pairs: list[tuple[str, str]]) -> str:
    # RFC 4514 writes the most specific attribute first: the reverse of the encoded order.
    return ",".join(f"{_SHORT.get(key, key)}={_escape(value)}" for key, value in reversed(pairs))


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
