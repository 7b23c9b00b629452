"""Which address a server should publish in a registry for the address it listens on.

A server listening on "0.0.0.0:8888" or "[::]:8888" cannot publish that: clients on other hosts
need a concrete IP. Like Kitex, take the first non-loopback IPv4 address of this host, and let
the environment override host and port (for NAT, containers, port mapping).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping

__all__ = ["IP_ENV", "PORT_ENV", "advertise_address", "local_ipv4"]

IP_ENV = "RPCPOLL_IP_TO_REGISTRY"  # Kitex: KITEX_IP_TO_REGISTRY
PORT_ENV = "RPCPOLL_PORT_TO_REGISTRY"  # Kitex: KITEX_PORT_TO_REGISTRY

_UNSPECIFIED = {"", "0.0.0.0", "::", "[::]"}
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address

log = logging.getLogger("rpcpoll.discovery")


def _interface_ipv4s() -> list[str]:
    """IPv4 addresses of this host's interfaces, in interface order (Linux), best effort."""
    found: list[str] = []
    if sys.platform.startswith("linux"):
        import fcntl

        try:
            names = [name for _, name in socket.if_nameindex()]
        except OSError:
            names = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for name in names:
                request = struct.pack("256s", name.encode()[:15])
                try:
                    answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                except OSError:  # no IPv4 address on this interface
                    continue
                found.append(socket.inet_ntoa(answer[20:24]))
    try:  # elsewhere (and as a fallback): what the host name resolves to
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        found.extend(str(info[4][0]) for info in infos)
    except OSError:
        pass
    return found


def local_ipv4() -> str | None:
    """The first non-loopback (and non-link-local) IPv4 address of this host, or None."""
    for text in _interface_ipv4s():
        ip = ipaddress.IPv4Address(text)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            return text
    return None


def _split(listen: str) -> tuple[str, str]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port (port 1-65535), got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1] or "::"
    elif ":" in host:
        raise ValueError(f"write an IPv6 host as [addr]:port, got {listen!r}")
    return host, port


def advertise_address(listen: str, *, environ: Mapping[str, str] | None = None) -> str:
    """The "host:port" to publish for a server listening on `listen` ("host:port", "[v6]:port").

    - RPCPOLL_IP_TO_REGISTRY, when set, replaces the host; RPCPOLL_PORT_TO_REGISTRY the port.
    - Otherwise an unspecified host ("", "0.0.0.0", "::") becomes `local_ipv4()`, falling back
      to 127.0.0.1 (with a warning) on a host that has no other IPv4 address.
    - A concrete host is kept as it is. IPv6 hosts come back bracketed: "[2001:db8::1]:8888".

    `environ` defaults to os.environ. Raises ValueError for a malformed address or override.
    """
    env = os.environ if environ is None else environ
    host, port = _split(listen)
    if env.get(IP_ENV):
        host = env[IP_ENV].strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or "/" in host or any(c.isspace() for c in host):
            raise ValueError(f"{IP_ENV}={env[IP_ENV]!r} is not a host")
    elif host in _UNSPECIFIED:
        found = local_ipv4()
        if found is None:
            log.warning("no non-loopback IPv4 address found: advertising 127.0.0.1")
            found = "127.0.0.1"
        host = found
    if env.get(PORT_ENV):
        port = env[PORT_ENV].strip()
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{PORT_ENV}={env[PORT_ENV]!r} is not a port (1-65535)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
