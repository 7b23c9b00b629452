"""`etcd://` URLs: which etcd to use, and (for clients) which service to find there.

Grammar (no spaces; the scheme is case-insensitive)::

    etcd-url  = ( "etcd://" | "etcds://" ) [ user [ ":" password ] "@" ]
                endpoint *( "," endpoint ) [ "/" [ service ] ] [ "?" param *( "&" param ) ]
    endpoint  = host [ ":" port ]            ; port 1-65535, default 2379
    host      = name | IPv4 | "[" IPv6 "]"
    service   = one path segment, percent-decoded, no "/"
    param     = "prefix=" prefix | "ca=" file | "cert=" file | "key=" file

"etcds://" is HTTPS: the server's certificate is checked against `ca` (default: the system's
CAs) and the endpoint's host name; `cert` and `key` are a client certificate for etcd's
`--client-cert-auth`. `user` and `password` (percent-encoded) authenticate with etcd's
user/password auth; a user without a password takes it from the environment variable
`RPCPOLL_ETCD_PASSWORD`, which keeps it out of process listings.

Examples: "etcd://127.0.0.1:2379", "etcd://10.0.0.1:2379,10.0.0.2:2379/echo",
"etcd://[::1]:2379/echo?prefix=myteam/services",
"etcds://svc@etcd.internal:2379/echo?ca=/etc/ssl/etcd-ca.pem". No fragment, no other query
parameters: anything not in the grammar is a ValueError saying what is wrong.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from .etcd_gateway import parse_endpoint
from .etcd_layout import check_prefix, check_service

__all__ = [
    "DEFAULT_ETCD_PORT",
    "PASSWORD_ENV",
    "EtcdURL",
    "gateway_options",
    "parse_etcd_target",
    "parse_etcd_url",
]

DEFAULT_ETCD_PORT = 2379
PASSWORD_ENV = "RPCPOLL_ETCD_PASSWORD"
_SCHEMES = {"etcd://": False, "etcds://": True}
_FILE_PARAMS = ("ca", "cert", "key")


class EtcdURL(NamedTuple):
    """A parsed etcd URL: endpoints as "host:port" ("[v6]:port"), the service named by the path
    (None without one), the key prefix from `?prefix=` (None: use the default), whether it is
    HTTPS (`etcds://`) with its CA, client certificate and key files, and the user and
    password for etcd's auth (None: no auth)."""

    endpoints: tuple[str, ...]
    service: str | None
    prefix: str | None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None


def _endpoint(text: str, url: str) -> str:
    if not text:
        raise ValueError(f"bad etcd URL {url!r}: empty endpoint (expected host:port)")
    bracketed = text.startswith("[")
    has_port = text.rsplit("]", 1)[-1].startswith(":") if bracketed else ":" in text
    spec = text if has_port else f"{text}:{DEFAULT_ETCD_PORT}"
    try:
        host, port = parse_endpoint(spec)
    except ValueError as exc:
        raise ValueError(f"bad etcd URL {url!r}: {exc}") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_etcd_url(url: str) -> EtcdURL:
    """Parse `etcd[s]://[user[:password]@]host:port[,host:port...][/SERVICE][?prefix=P...]`
    (see the module doc).

    Raises ValueError naming the problem: wrong scheme, no endpoint, a bad host or port, a
    service with "/", an empty user, a fragment, or an unknown query parameter.
    """
    if not isinstance(url, str):
        raise ValueError(f"an etcd URL must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    tls = _SCHEMES.get(scheme.lower() + sep)
    if tls is None:
        raise ValueError(f"bad etcd URL {_shown(url)!r}: must start with etcd:// or etcds://")
    shown = _shown(url)
    if "#" in rest:
        raise ValueError(f"bad etcd URL {shown!r}: fragments (#...) are not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        username, colon, secret = userinfo.partition(":")
        username = unquote(username)
        if not username:
            raise ValueError(f"bad etcd URL {shown!r}: empty user name before '@'")
        password = unquote(secret) if colon else os.environ.get(PASSWORD_ENV)
        if password is None:
            raise ValueError(
                f"bad etcd URL {shown!r}: no password for {username!r} (give user:password@"
                f" or set {PASSWORD_ENV})"
            )
    url = shown  # never repeat a password in an error message
    if not netloc:
        raise ValueError(f"bad etcd URL {url!r}: no endpoint (expected etcd://host:port)")
    endpoints = tuple(_endpoint(part, url) for part in netloc.split(","))

    service = None
    if slash and path:
        try:
            service = check_service(unquote(path, errors="strict"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"bad etcd URL {url!r}: {exc}") from None

    prefix = None
    files: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"bad etcd URL {url!r}: malformed query {query!r}") from None
        for name, value in pairs:
            if name in _FILE_PARAMS:
                if not tls:
                    raise ValueError(f"bad etcd URL {url!r}: {name!r} needs etcds:// (HTTPS)")
                if name in files or not value:
                    raise ValueError(f"bad etcd URL {url!r}: {name!r} given twice or empty")
                files[name] = value
                continue
            if name != "prefix":
                raise ValueError(
                    f"bad etcd URL {url!r}: unknown parameter {name!r} (known: prefix, ca,"
                    " cert, key)"
                )
            if prefix is not None:
                raise ValueError(f"bad etcd URL {url!r}: 'prefix' given twice")
            try:
                prefix = check_prefix(value)
            except ValueError as exc:
                raise ValueError(f"bad etcd URL {url!r}: {exc}") from None
    if "key" in files and "cert" not in files:
        raise ValueError(f"bad etcd URL {url!r}: 'key' needs 'cert'")
    return EtcdURL(
        endpoints,
        service,
        prefix,
        tls,
        files.get("ca"),
        files.get("cert"),
        files.get("key"),
        username,
        password,
    )


def _shown(url: str) -> str:
    """The URL with any password masked, for messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def gateway_options(parsed: EtcdURL) -> dict[str, Any]:
    """The EtcdGateway keywords a parsed URL asks for (TLS context, user, password)."""
    options: dict[str, Any] = {}
    if parsed.tls:
        from ..transport.tls import client_context

        options["ssl"] = client_context(parsed.ca_file, parsed.cert_file, parsed.key_file)
    if parsed.username is not None:
        options["username"] = parsed.username
        options["password"] = parsed.password or ""
    return options


def parse_etcd_target(url: str) -> tuple[tuple[str, ...], str]:
    """(endpoints, service) of a client target "etcd://host:port[,...]/SERVICE[?prefix=P]".

    Like `parse_etcd_url`, but the service is required (ValueError without one). The prefix,
    if any, is for `EtcdResolver.from_url(url)`, which reads it from the same URL.
    """
    parsed = parse_etcd_url(url)
    if parsed.service is None:
        raise ValueError(
            f"bad etcd target {_shown(url)!r}: name the service: etcd://host:port/SERVICE"
        )
    return parsed.endpoints, parsed.service


def with_url_prefix(url: str, parsed: EtcdURL, options: dict[str, Any]) -> dict[str, Any]:
    """`options` plus the URL's `?prefix=` (a ValueError if both give one) and its TLS and
    auth settings (unless given as arguments)."""
    if parsed.prefix is not None:
        if "prefix" in options:
            raise ValueError(f"prefix given both in {_shown(url)!r} and as an argument")
        options = {**options, "prefix": parsed.prefix}
    return {**gateway_options(parsed), **options}
