"""Address strings as users write them: "host:port", "[v6]:port", "unix:/path"."""

from __future__ import annotations

from .net import parse_tcp_address

__all__ = ["format_address", "parse_address"]


def parse_address(spec: str | tuple[str, int]) -> tuple[str, str | tuple[str, int]]:
    """(network, address) for `create_listener` / `dial_connection`.

    "unix:/run/app.sock" -> ("unix", "/run/app.sock"); "127.0.0.1:8080" or ("127.0.0.1", 8080)
    -> ("tcp", ("127.0.0.1", 8080)); "[::1]:8080" -> ("tcp", ("::1", 8080)).

    The one parser of addresses for servers, clients, the CLI and discovery: ValueError with a
    one-line message for anything else (no port, a port over 65535, a URL such as http://).
    """
    if isinstance(spec, str) and spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path:
            raise ValueError("a unix address needs a path: unix:/path/to.sock")
        return "unix", path
    if isinstance(spec, str) and "://" in spec:
        scheme = spec.partition("://")[0]
        raise ValueError(
            f"unsupported address {spec!r}: rpcpoll does not speak {scheme}; use HOST:PORT,"
            " [V6]:PORT, unix:/PATH or (for a client) etcd://HOST:PORT/SERVICE"
        )
    return "tcp", parse_tcp_address(spec)


def format_address(network: str, address: object) -> str:
    """The inverse of `parse_address`, for logs and targets."""
    if network == "unix":
        return f"unix:{address}"
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
