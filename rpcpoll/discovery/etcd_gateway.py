"""A small client for etcd's v3 JSON gateway (etcd 3.4+), on the standard library only.

Each call is one HTTP/1.1 POST of a JSON body to `/v3/...` on one of the configured endpoints.
The gateway speaks proto3 JSON, which this module hides from its callers:

- every `bytes` field (keys, values, range ends) is base64; callers pass and get `bytes`;
- every int64 (revisions, lease IDs, TTLs, counts) travels as a JSON *string*; callers get `int`;
- fields equal to their default (0, "", false, empty lists) are omitted: a missing key has no
  `kvs`, a PUT watch event has no `type`, a keepalive on a lost lease has no `TTL`.

Endpoints are tried in turn: a connection error, a timeout or a "no leader" answer on one moves
to the next (and the next call starts from the one that answered). Errors are typed:
`EtcdUnavailable` (no endpoint answered), `EtcdResponseError` (etcd answered with an error
status), `EtcdAuthError` (etcd refused the user or password), `EtcdProtocolError` (an answer
that is not what the gateway sends). A call that timed out may still have been applied; every
call the registry makes is safe to repeat.

TLS and auth. `https://` endpoints or `ssl=` (an SSLContext: CA, client certificate) make
every call HTTPS. With `username`/`password`, the gateway's `/v3/auth/authenticate` gives a
token that every call (watches included) carries in the `Authorization` header; it is fetched
at the first call and again when etcd says it is invalid (simple tokens expire after
`--auth-token-ttl` of disuse; a restarted etcd forgets them), and the call is repeated once.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import socket
import ssl as _ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import DiscoveryError

__all__ = [
    "DEFAULT_TIMEOUT",
    "EtcdAuthError",
    "EtcdError",
    "EtcdGateway",
    "EtcdProtocolError",
    "EtcdResponseError",
    "EtcdUnavailable",
    "KeyValue",
    "Lease",
    "RangeResult",
    "WatchEvent",
    "WatchResponse",
    "WatchStream",
    "parse_endpoint",
    "prefix_range_end",
]

DEFAULT_TIMEOUT = 3.0  # seconds for connecting and for a whole unary call
GRPC_CANCELED = 1
GRPC_NOT_FOUND = 5
GRPC_PERMISSION_DENIED = 7
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16
_INVALID_TOKEN = "invalid auth token"


class EtcdError(DiscoveryError):
    """Talking to etcd failed."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered: connection refused or reset, timeout, or no leader."""


class EtcdResponseError(EtcdError):
    """etcd answered with an error: `status` is the HTTP status, `code` the gRPC code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"etcd error (HTTP {status}, code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def not_found(self) -> bool:
        """True for "requested lease not found" and the like (gRPC NOT_FOUND)."""
        return self.code == GRPC_NOT_FOUND


class EtcdAuthError(EtcdResponseError):
    """etcd refused our credentials: a wrong user or password, or auth needed and none given."""


class EtcdProtocolError(EtcdError):
    """An answer that is not valid gateway JSON (wrong service on that port, or a bug)."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0  # 0: not attached to a lease


@dataclass(frozen=True)
class RangeResult:
    """The keys found and the store revision they were read at (watch from `revision + 1`)."""

    kvs: list[KeyValue]
    revision: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int  # seconds granted (etcd grants at least 2 s whatever was asked)


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue


@dataclass(frozen=True)
class WatchResponse:
    """One line of a watch stream. After `canceled`, the stream carries nothing more."""

    revision: int = 0
    events: list[WatchEvent] = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0  # set when canceled because start_revision was compacted
    cancel_reason: str = ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise EtcdProtocolError(f"expected a base64 string, got {text!r}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EtcdProtocolError(f"bad base64 from etcd: {text!r}") from exc


def _int(value: object) -> int:
    """An int64 field: a JSON string (or number), or absent (None) meaning 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise EtcdProtocolError(f"expected an int64, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise EtcdProtocolError(f"expected an int64, got {value!r}") from exc


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EtcdProtocolError(f"expected a JSON object for {what}, got {value!r}")
    return value


def _key_value(raw: object) -> KeyValue:
    kv = _object(raw, "kv")
    return KeyValue(
        key=_unb64(kv.get("key", "")),
        value=_unb64(kv.get("value", "")),
        create_revision=_int(kv.get("create_revision")),
        mod_revision=_int(kv.get("mod_revision")),
        version=_int(kv.get("version")),
        lease=_int(kv.get("lease")),
    )


def _revision(body: Mapping[str, Any]) -> int:
    return _int(_object(body.get("header"), "header").get("revision"))


def prefix_range_end(prefix: bytes) -> bytes:
    """The `range_end` that makes a range or watch cover every key starting with `prefix`.

    That is the prefix with its last byte incremented, after dropping trailing 0xff bytes;
    b"\\0" (the whole keyspace) when nothing is left.
    """
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """("host", port) from "host:port", "[v6]:port", "http://host:port" or "https://host:port".

    Raises ValueError naming what is wrong.
    """
    spec = endpoint.strip()
    for scheme in ("http://", "https://"):
        if spec.startswith(scheme):
            spec = spec[len(scheme) :].rstrip("/")
            break
    else:
        if "://" in spec:
            raise ValueError(f"etcd endpoint {endpoint!r}: only http:// or https://")
    host, sep, port = spec.rpartition(":")
    if not sep or not host:
        raise ValueError(f"etcd endpoint {endpoint!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"etcd endpoint {endpoint!r}: empty IPv6 address")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"etcd endpoint {endpoint!r}: write an IPv6 host as [addr]:port")
    if "/" in host or any(c.isspace() for c in host):
        raise ValueError(f"etcd endpoint {endpoint!r}: bad host {host!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint {endpoint!r}: port must be 1-65535, got {port!r}")
    return host, int(port)


def _error_from(status: int, data: bytes) -> EtcdResponseError:
    try:
        body = json.loads(data)
        code, message = int(body.get("code", 0)), str(body.get("message") or body.get("error"))
    except (ValueError, TypeError, AttributeError):
        code, message = 0, data[:200].decode("utf-8", "replace").strip()
    return EtcdResponseError(status, code, message)


class EtcdGateway:
    """Calls etcd's v3 JSON gateway on `endpoints` ("host:port", tried in turn).

    Thread-safe: each call uses its own HTTP connection (calls are rare: leases, lists and
    watches, not a data path), so nothing but the preferred endpoint index and the auth token
    is shared. `ssl` (an SSLContext) or https:// endpoints: HTTPS; `username` and `password`:
    etcd's auth (module docs).
    """

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl: _ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        endpoints = [e.strip() for e in endpoints]
        self.endpoints: tuple[tuple[str, int], ...] = tuple(parse_endpoint(e) for e in endpoints)
        if not self.endpoints:
            raise ValueError("etcd needs at least one endpoint")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        secure = {e.startswith("https://") for e in endpoints if "://" in e}
        if len(secure) > 1:
            raise ValueError("etcd endpoints must be all http:// or all https://")
        if ssl is None and secure == {True}:
            ssl = _ssl.create_default_context()
        self.timeout = timeout
        self.ssl = ssl
        self._credentials = None if username is None else (username, password or "")
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._preferred = 0  # index of the endpoint that answered last

    def __repr__(self) -> str:
        scheme = "https://" if self.ssl is not None else ""
        return f"EtcdGateway({[f'{scheme}{h}:{p}' for h, p in self.endpoints]!r})"

    def _connect(self, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        if self.ssl is None:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ssl)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._credentials is not None:
            token = self._token or self._authenticate(None)
            headers["Authorization"] = token
        return headers

    def _denied(self, exc: EtcdResponseError) -> str:
        if self._credentials is None:
            return f"{exc.message} (etcd has auth on: give a user and password)"
        return f"{exc.message} (user {self._credentials[0]!r} lacks a role for these keys)"

    def _authenticate(self, stale: str | None) -> str:
        """A token for our user: a new one unless another thread already replaced `stale`."""
        assert self._credentials is not None
        with self._auth_lock:
            if self._token is not None and self._token != stale:
                return self._token
            name, password = self._credentials
            try:
                answer = self._post("/v3/auth/authenticate", {"name": name, "password": password})
            except EtcdResponseError as exc:
                raise EtcdAuthError(
                    exc.status, exc.code, f"etcd refused user {name!r}: {exc.message}"
                ) from None
            token = answer.get("token")
            if not isinstance(token, str) or not token:
                raise EtcdProtocolError(f"authenticate: no token in {answer!r}")
            self._token = token
            return token

    def _order(self) -> list[int]:
        first, n = self._preferred, len(self.endpoints)
        return [(first + i) % n for i in range(n)]

    def call(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST `body` to `path` ("/v3/kv/range"...) and return the decoded JSON answer.

        Fails over to the next endpoint when one cannot be reached, times out or has no leader;
        raises EtcdUnavailable when none answered, EtcdResponseError for an etcd error status
        (EtcdAuthError for refused credentials). An expired auth token is renewed and the call
        made again, once.
        """
        headers = self._headers()
        try:
            return self._post(path, body, timeout=timeout, headers=headers)
        except EtcdResponseError as exc:
            stale = headers.get("Authorization")
            if stale is None or _INVALID_TOKEN not in exc.message:
                if exc.code == GRPC_PERMISSION_DENIED or "user name is empty" in exc.message:
                    raise EtcdAuthError(exc.status, exc.code, self._denied(exc)) from None
                raise
        headers["Authorization"] = self._authenticate(stale)
        return self._post(path, body, timeout=timeout, headers=headers)

    def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        headers = headers or {"Content-Type": "application/json"}
        failures = []
        for index in self._order():
            host, port = self.endpoints[index]
            conn = self._connect(host, port, timeout or self.timeout)
            try:
                conn.request("POST", path, payload, headers)
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
            except _ssl.SSLError as exc:  # not worth trying elsewhere: say why, now
                conn.close()
                raise EtcdUnavailable(f"TLS with etcd at {host}:{port} failed: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{host}:{port}: {exc!r}")
                continue
            finally:
                conn.close()
            if status != 200:
                error = _error_from(status, data)
                if status == 503 or error.code == GRPC_UNAVAILABLE:  # this member has no leader
                    failures.append(f"{host}:{port}: {error}")
                    continue
                self._preferred = index
                raise error
            self._preferred = index
            try:
                decoded = json.loads(data)
            except ValueError as exc:
                raise EtcdProtocolError(
                    f"{path} on {host}:{port}: not JSON: {data[:200]!r}"
                ) from exc
            return _object(decoded, path)
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: " + "; ".join(failures))

    # --- kv -------------------------------------------------------------------------------

    def range(
        self, key: bytes, range_end: bytes = b"", *, timeout: float | None = None
    ) -> RangeResult:
        """The keys in [key, range_end) (just `key` when range_end is empty)."""
        body = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        answer = self.call("/v3/kv/range", body, timeout=timeout)
        kvs = answer.get("kvs") or []
        if not isinstance(kvs, list):
            raise EtcdProtocolError(f"range: kvs is not a list: {kvs!r}")
        return RangeResult([_key_value(kv) for kv in kvs], _revision(answer))

    def get_prefix(self, prefix: bytes, *, timeout: float | None = None) -> RangeResult:
        """Every key starting with `prefix`, in key order, in one call."""
        return self.range(prefix, prefix_range_end(prefix), timeout=timeout)

    def get(self, key: bytes, *, timeout: float | None = None) -> KeyValue | None:
        kvs = self.range(key, timeout=timeout).kvs
        return kvs[0] if kvs else None

    def put(self, key: bytes, value: bytes, *, lease: int = 0, timeout: float | None = None) -> int:
        """Store `value` under `key` (bound to `lease` when not 0); returns the new revision.

        A lease that does not exist raises EtcdResponseError with `not_found`.
        """
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(self.call("/v3/kv/put", body, timeout=timeout))

    def delete(self, key: bytes, range_end: bytes = b"", *, timeout: float | None = None) -> int:
        """Delete `key` (or [key, range_end)); returns how many keys were deleted."""
        body = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        return _int(self.call("/v3/kv/deleterange", body, timeout=timeout).get("deleted"))

    def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Drop history before `revision`; watches from older revisions get canceled."""
        self.call("/v3/kv/compaction", {"revision": str(revision)}, timeout=timeout)

    # --- leases ---------------------------------------------------------------------------

    def grant(self, ttl: int, *, timeout: float | None = None) -> Lease:
        answer = self.call("/v3/lease/grant", {"TTL": str(ttl)}, timeout=timeout)
        if answer.get("error"):
            raise EtcdResponseError(200, 0, str(answer["error"]))
        lease = Lease(_int(answer.get("ID")), _int(answer.get("TTL")))
        if lease.id == 0 or lease.ttl <= 0:
            raise EtcdProtocolError(f"grant: no lease in {answer!r}")
        return lease

    def keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew the lease once; returns its TTL, or 0 when the lease is gone.

        A lost (expired or revoked) lease is not an error status: etcd answers 200 without TTL.
        """
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease_id)}, timeout=timeout)
        # A stream RPC: the message is wrapped in {"result": ...}.
        return max(_int(_object(answer.get("result"), "result").get("TTL")), 0)

    def revoke(self, lease_id: int, *, timeout: float | None = None) -> bool:
        """Revoke the lease, deleting its keys at once; False if it did not exist (anymore)."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)}, timeout=timeout)
        except EtcdResponseError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def time_to_live(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Seconds the lease has left; -1 when it does not exist."""
        answer = self.call("/v3/lease/timetolive", {"ID": str(lease_id)}, timeout=timeout)
        return _int(answer.get("TTL"))

    # --- watch ----------------------------------------------------------------------------

    def watch(self, prefix: bytes, start_revision: int, *, _renewed: bool = False) -> WatchStream:
        """Open a watch on every key starting with `prefix`, from `start_revision` on.

        Returns once etcd has accepted it; read it with `WatchStream.read`. Tries the
        endpoints in turn like `call`.
        """
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_range_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        payload = json.dumps(body).encode()
        failures = []
        headers = self._headers()
        for index in self._order():
            host, port = self.endpoints[index]
            conn = self._connect(host, port, self.timeout)
            try:
                conn.request("POST", "/v3/watch", payload, headers)
                # Taken now: getresponse() drops conn.sock when the answer says it will close.
                sock = conn.sock
                resp = conn.getresponse()
                if resp.status != 200:
                    error = _error_from(resp.status, resp.read())
                    conn.close()
                    if resp.status == 503 or error.code == GRPC_UNAVAILABLE:
                        failures.append(f"{host}:{port}: {error}")
                        continue
                    stale = headers.get("Authorization")
                    if _INVALID_TOKEN in error.message and stale is not None and not _renewed:
                        self._authenticate(stale)
                        return self.watch(prefix, start_revision, _renewed=True)
                    raise error
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                failures.append(f"{host}:{port}: {exc!r}")
                continue
            self._preferred = index
            return WatchStream(conn, resp, sock)
        raise EtcdUnavailable("no etcd endpoint answered /v3/watch: " + "; ".join(failures))


class WatchStream:
    """An open `/v3/watch`: a chunked HTTP response carrying one JSON message per line.

    One thread reads (`read`); any thread may `close`, which wakes a blocked `read` at once
    (it shuts the socket down) and makes it return None.
    """

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        sock: socket.socket | None,
    ) -> None:
        self._conn = conn
        self._resp = resp
        self._sock = sock
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False  # a read is in progress: it, not close(), releases the socket

    def read(self, timeout: float | None = None) -> WatchResponse | None:
        """The next message; None at the end of the stream (etcd went away, or `close`).

        Raises TimeoutError when nothing arrived within `timeout` seconds (None: wait for ever;
        an idle watch sends nothing), after which the stream is unusable: close it. An error
        message in the stream raises EtcdUnavailable (etcd is stopping: "transport is closing")
        or EtcdResponseError; garbage raises EtcdProtocolError.
        Only one thread may read.
        """
        with self._lock:
            if self._closed or self._sock is None:
                return None
            self._reading = True
        try:
            self._sock.settimeout(timeout)
            line = self._resp.readline()
        except TimeoutError:
            if self._closed:
                return None
            raise
        except (OSError, ValueError, http.client.HTTPException):
            # Reset, or shut down by close(): either way, the stream is over.
            return None
        finally:
            with self._lock:
                self._reading = False
                release = self._closed
            if release:
                self._release()
        if not line or self._closed:
            return None
        return self._decode(line)

    @staticmethod
    def _decode(line: bytes) -> WatchResponse:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise EtcdProtocolError(f"watch: not JSON: {line[:200]!r}") from exc
        message = _object(message, "watch message")
        if "error" in message:
            # A stream error. A graceful etcd stop sends one, then EOF: either grpc_code 14
            # (http_code 503, "transport is closing") or 1 (CANCELED, http_code 408, "grpc:
            # the client connection is closing"), depending on timing.
            error = message["error"]
            if not isinstance(error, dict):
                raise EtcdResponseError(0, 0, str(error))
            code, text = _int(error.get("grpc_code")), str(error.get("message"))
            if code in (GRPC_CANCELED, GRPC_UNAVAILABLE):
                raise EtcdUnavailable(f"watch stream ended: {text}")
            raise EtcdResponseError(_int(error.get("http_code")), code, text)
        result = _object(message.get("result"), "watch result")
        events = []
        raw_events = result.get("events") or []
        if not isinstance(raw_events, list):
            raise EtcdProtocolError(f"watch: events is not a list: {raw_events!r}")
        for raw in raw_events:
            event = _object(raw, "event")
            kind = event.get("type") or "PUT"  # PUT is the default (0), so it is omitted
            if kind not in ("PUT", "DELETE"):
                raise EtcdProtocolError(f"watch: unknown event type {kind!r}")
            events.append(WatchEvent(kind, _key_value(event.get("kv"))))
        return WatchResponse(
            revision=_revision(result),
            events=events,
            created=bool(result.get("created")),
            canceled=bool(result.get("canceled")),
            compact_revision=_int(result.get("compact_revision")),
            cancel_reason=str(result.get("cancel_reason") or ""),
        )

    def close(self) -> None:
        """End the stream (idempotent, from any thread); a blocked `read` returns None."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        if self._sock is not None:
            try:
                # Wakes a reader blocked in recv. Closing the fd under it would not, and could
                # let the number be reused while it reads; the reader closes it on its way out.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if not reading:
            self._release()

    def _release(self) -> None:
        self._resp.close()
        self._conn.close()
        if self._sock is not None:
            self._sock.close()  # the response's file object held a reference to it

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
