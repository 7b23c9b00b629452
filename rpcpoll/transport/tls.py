"""TLS settings: server and client SSLContexts, certificate reloading, readable SSL errors.

The I/O lives in `tls_connection.py`; this module only decides which `ssl.SSLContext` a new
connection gets and how failures are worded.

- `ServerTLS` is what a listener serves with: the current SSLContext (swapped atomically by
  `reload()` or `set_context()`, so new handshakes use new certificates while established
  connections keep theirs), a handshake timeout, what a plaintext peer is told, and counters.
- `server_context()` / `client_context()` build contexts from PEM files with this project's
  defaults: TLS 1.2 or newer, verification on, renegotiation off.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import TLSCertificateError, TLSConfigError, TLSHandshakeError, TLSSessionError

if TYPE_CHECKING:
    import socket

    from .connection import Runner
    from .poller import Poller
    from .tls_connection import TLSConnection

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "ServerTLS",
    "as_server_tls",
    "client_context",
    "describe_ssl_error",
    "handshake_error",
    "server_context",
    "session_error",
]

log = logging.getLogger("rpcpoll.transport")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Renegotiation is a TLS 1.2 feature with a history of attacks and no use here.
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return context


def server_context(
    cert_file: str, key_file: str | None = None, client_ca_file: str | None = None
) -> ssl.SSLContext:
    """A server context presenting `cert_file` (a PEM chain, leaf first) with `key_file`
    (None: the key is in `cert_file`). With `client_ca_file`, clients must present a
    certificate signed by one of its CAs (mTLS). Raises `TLSConfigError` naming the file."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, cert_file, key_file)
    if client_ca_file is not None:
        _load_cas(context, client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context that verifies servers against `ca_file` (None: the system's CAs) and
    their name (unless `check_hostname` is False), presenting `cert_file`/`key_file` when a
    server asks for a client certificate (mTLS). Raises `TLSConfigError` naming the file."""
    context = _harden(ssl.create_default_context())
    if ca_file is not None:
        _load_cas(context, ca_file)
    if cert_file is not None:
        _load_chain(context, cert_file, key_file)
    context.check_hostname = check_hostname
    return context


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        missing = exc.filename or f"{cert_file} or {key_file}"
        raise TLSConfigError(f"cannot load the TLS certificate: no such file {missing}") from None
    except (ssl.SSLError, OSError) as exc:
        key = key_file or cert_file
        raise TLSConfigError(
            f"cannot load the TLS certificate {cert_file} with the key {key}: {_reason(exc)}"
            " (both must be PEM, and the key must match the certificate)"
        ) from None


def _load_cas(context: ssl.SSLContext, ca_file: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except FileNotFoundError:
        raise TLSConfigError(f"cannot load the CA file: no such file {ca_file}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load the CA file {ca_file}: {_reason(exc)}") from None


class ServerTLS:
    """A listener's TLS: the SSLContext that new handshakes use, and how they are run.

    `context` is used for every new connection; `set_context()` replaces it and `reload()`
    rebuilds it with `loader` (given, or set by `from_files`). Connections already
    established keep the context they were made with, so replacing one drops nothing.

    `handshake_timeout`: seconds a client has to complete its handshake (None: no limit).
    `plaintext_reply`: bytes sent to a peer whose first byte is not a TLS handshake record
    before it is closed (the RPC server sets a refusal frame its clients can read).
    `handshakes` and `failures` count completed and failed handshakes.
    """

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        loader: Callable[[], ssl.SSLContext] | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        plaintext_reply: bytes = b"",
    ) -> None:
        if context is None:
            if loader is None:
                raise ValueError("ServerTLS needs a context or a loader")
            context = loader()
        if handshake_timeout is not None and handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be positive, got {handshake_timeout}")
        self._context = context
        self._loader = loader
        self._reload_lock = threading.Lock()
        self.handshake_timeout = handshake_timeout
        self.plaintext_reply = plaintext_reply
        self.handshakes = 0
        self.failures = 0

    @classmethod
    def from_files(
        cls,
        cert_file: str,
        key_file: str | None = None,
        client_ca_file: str | None = None,
        **options: object,
    ) -> ServerTLS:
        """Serve `cert_file`/`key_file`, requiring client certificates signed by
        `client_ca_file` when given; `reload()` reads the files again."""

        def load() -> ssl.SSLContext:
            return server_context(cert_file, key_file, client_ca_file)

        return cls(loader=load, **options)  # type: ignore[arg-type]

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def set_context(self, context: ssl.SSLContext) -> None:
        """Use `context` for handshakes from now on."""
        self._context = context

    def reload(self) -> None:
        """Rebuild the context with the loader (the files again); on failure the current
        context stays and the error (`TLSConfigError`) is raised."""
        if self._loader is None:
            raise TLSConfigError("this ServerTLS has no loader: use set_context() instead")
        with self._reload_lock:
            self._context = self._loader()

    def accept(
        self, sock: socket.socket, runner: Runner | None, poller: Poller | None = None
    ) -> TLSConnection:
        """The server side of a TLS connection on an accepted socket (handshake pending),
        on `poller` (None: the manager picks one)."""
        from .tls_connection import TLSConnection

        return TLSConnection(
            sock,
            self._context,
            server_side=True,
            runner=runner,
            poller=poller,
            handshake_timeout=self.handshake_timeout,
            plaintext_reply=self.plaintext_reply,
            owner=self,
        )

    def note_failure(self, peer: object, reason: str) -> None:
        """Count a failed handshake; log the first and every hundredth (a storm of bad
        clients must not flood the log), the others at debug level."""
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning(
                "TLS handshake from %r failed: %s (%d failed so far)", peer, reason, self.failures
            )
        else:
            log.debug("TLS handshake from %r failed: %s", peer, reason)


def as_server_tls(tls: ServerTLS | ssl.SSLContext) -> ServerTLS:
    """A ServerTLS for what `Server(ssl=...)` or `EventLoop(ssl=...)` was given."""
    if isinstance(tls, ServerTLS):
        return tls
    if isinstance(tls, ssl.SSLContext):
        return ServerTLS(tls)
    raise TypeError(f"ssl must be an ssl.SSLContext or a ServerTLS, not {type(tls).__name__}")


# ---------------------------------------------------------------------- error wording

_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
}
_HINTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no common protocol or cipher, or a client certificate"
    " was required",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA of our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer presented no certificate and one is required",
    "NO_SHARED_CIPHER": "no cipher both sides accept",
    "UNSUPPORTED_PROTOCOL": "no TLS version both sides accept",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version both sides accept",
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc)


def describe_ssl_error(exc: BaseException) -> str:
    """One line: what OpenSSL said, and what it usually means."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None) or ""
    if reason in _NOT_TLS:
        return f"{_reason(exc)}: the peer does not speak TLS (a plaintext peer?)"
    hint = _HINTS.get(reason)
    return f"{_reason(exc)} ({hint})" if hint else _reason(exc)


def handshake_error(exc: BaseException, peer: str) -> TLSHandshakeError:
    """The typed error of a failed client handshake with `peer`."""
    text = f"TLS handshake with {peer} failed: {describe_ssl_error(exc)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSCertificateError(text, exc.verify_code or 0, str(exc.verify_message or ""))
    return TLSHandshakeError(text)


def session_error(exc: BaseException, peer: object) -> TLSSessionError:
    """The typed error of a TLS session with `peer` that failed after its handshake."""
    return TLSSessionError(f"TLS session with {peer!r} failed: {describe_ssl_error(exc)}")
