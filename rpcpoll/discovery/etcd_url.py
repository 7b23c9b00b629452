"""`etcd://` URLs: which etcd to use, and (for clients) which service to find there.

Grammar (no spaces; the scheme is case-insensitive)::

    etcd-url  = "etcd://" endpoint *( "," endpoint ) [ "/" [ service ] ] [ "?prefix=" prefix ]
    endpoint  = host [ ":" port ]            ; port 1-65535, default 2379
    host      = name | IPv4 | "[" IPv6 "]"
    service   = one path segment, percent-decoded, no "/"

Examples: "etcd://127.0.0.1:2379", "etcd://10.0.0.1:2379,10.0.0.2:2379/echo",
"etcd://[::1]:2379/echo?prefix=myteam/services". No user info, no fragment, no other query
parameters: anything not in the grammar is a ValueError saying what is wrong.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from .etcd_gateway import parse_endpoint
from .etcd_layout import check_prefix, check_service

__all__ = ["DEFAULT_ETCD_PORT", "EtcdURL", "parse_etcd_target", "parse_etcd_url"]

DEFAULT_ETCD_PORT = 2379
_SCHEME = "etcd://"


class EtcdURL(NamedTuple):
    """A parsed etcd URL: endpoints as "host:port" ("[v6]:port"), the service named by the path
    (None without one) and the key prefix from `?prefix=` (None: use the default)."""

    endpoints: tuple[str, ...]
    service: str | None
    prefix: str | None


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
    """Parse `etcd://host:port[,host:port...][/SERVICE][?prefix=P]` (see the module doc).

    Raises ValueError naming the problem: wrong scheme, no endpoint, a bad host or port, a
    service with "/", user info, a fragment, or an unknown query parameter.
    """
    if not isinstance(url, str):
        raise ValueError(f"an etcd URL must be a string, got {url!r}")
    if url[: len(_SCHEME)].lower() != _SCHEME:
        raise ValueError(f"bad etcd URL {url!r}: must start with {_SCHEME}")
    rest = url[len(_SCHEME) :]
    if "#" in rest:
        raise ValueError(f"bad etcd URL {url!r}: fragments (#...) are not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        raise ValueError(f"bad etcd URL {url!r}: user info (user@host) is not supported")
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
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"bad etcd URL {url!r}: malformed query {query!r}") from None
        for name, value in pairs:
            if name != "prefix":
                raise ValueError(
                    f"bad etcd URL {url!r}: unknown parameter {name!r} (only 'prefix' is known)"
                )
            if prefix is not None:
                raise ValueError(f"bad etcd URL {url!r}: 'prefix' given twice")
            try:
                prefix = check_prefix(value)
            except ValueError as exc:
                raise ValueError(f"bad etcd URL {url!r}: {exc}") from None
    return EtcdURL(endpoints, service, prefix)


def parse_etcd_target(url: str) -> tuple[tuple[str, ...], str]:
    """(endpoints, service) of a client target "etcd://host:port[,...]/SERVICE[?prefix=P]".

    Like `parse_etcd_url`, but the service is required (ValueError without one). The prefix,
    if any, is for `EtcdResolver.from_url(url)`, which reads it from the same URL.
    """
    parsed = parse_etcd_url(url)
    if parsed.service is None:
        raise ValueError(f"bad etcd target {url!r}: name the service: etcd://host:port/SERVICE")
    return parsed.endpoints, parsed.service


def with_url_prefix(url: str, parsed: EtcdURL, options: dict[str, Any]) -> dict[str, Any]:
    """`options` plus the URL's `?prefix=` (a ValueError if both give one)."""
    if parsed.prefix is not None:
        if "prefix" in options:
            raise ValueError(f"prefix given both in {url!r} and as an argument")
        options = {**options, "prefix": parsed.prefix}
    return options
