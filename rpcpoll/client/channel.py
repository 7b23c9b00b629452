"""The network Channel behind generated clients: pooled connections, deadlines, safe retries.

A call takes an idle connection from the pool of its address (or dials one), writes one
request frame and reads frames until its reply arrives, all on the calling thread: these
connections are "direct" (no poller), because for one request and one reply the hop to a
poller thread costs more than the I/O it saves. Many threads can call at once; each uses its own
connection.

Timeouts. `timeout=` is the whole call's budget, retries included. It travels to the server
as the caller's remaining time, and the read of the reply stops at the deadline: the call then
raises DEADLINE_EXCEEDED and its connection is closed, so a late reply can never be read as
the reply of another call. `connect_timeout` bounds each dial separately.

Retries. A call is retried only when it provably never reached a handler (the dial failed, or a
pooled connection was found dead before anything was written) or when the method is
idempotent (`option idempotency_level = IDEMPOTENT` in the proto, or `idempotent_methods=`),
within `retry.max_attempts` and the deadline. Nothing else is retried.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    DEFAULT_MAX_FRAME_SIZE,
    FIXED_SIZE,
    FrameReader,
    MessageType,
    ProtocolError,
    RequestTemplate,
    parse_info,
)
from ..protocol.status import (
    DeadlineExceededError,
    InternalError,
    RpcError,
    UnavailableError,
)
from ..service import MethodDescriptor, ServiceDescriptor
from ..transport.address import parse_address
from ..transport.connection import Connection
from ..transport.errors import (
    DialError,
    DialRefusedError,
    DialTimeoutError,
    ReadTimeoutError,
    TransportError,
    WriteTimeoutError,
)
from ..transport.net import dial_connection
from .pool import Pool, PoolOptions

__all__ = ["NO_RETRY", "ClientChannel", "RetryPolicy", "open_channel"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon to retry a call that may be retried (see the module docs).

    `max_attempts` counts the first attempt (Kitex's default of 2 retries is 3 attempts); the
    pause before retry n is `backoff * 2**(n-1)`, at most `max_backoff`.
    """

    max_attempts: int = 3
    backoff: float = 0.005
    max_backoff: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def pause(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)


# (message type, status, status message, metadata, payload) of a reply frame
_Reply = tuple[MessageType, int, str, Mapping[str, str], memoryview]


class _NotSent(Exception):
    """The request provably did not reach the server; safe to retry any method."""


class _MaybeSent(Exception):
    """The connection failed after the request may have reached the server."""


class ClientChannel:
    """A `rpcpoll.service.Channel` to one address: "host:port" or "unix:/path".

    Options: `timeout` (default per-call timeout, None = no limit), `connect_timeout` (per dial,
    default 1 s), `retry` (a RetryPolicy), `idempotent_methods` (wire names, "Service/Method"
    or "Method", to treat as idempotent), `max_frame_size`, and the pool's
    `max_idle_per_address` (10), `max_idle_global` (100), `max_idle_timeout` (60 s).
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        *,
        timeout: float | None = None,
        connect_timeout: float | None = 1.0,
        retry: RetryPolicy | None = None,
        idempotent_methods: Iterable[str] = (),
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_idle_per_address: int = 10,
        max_idle_global: int = 100,
        max_idle_timeout: float = 60.0,
    ) -> None:
        self._network, self._address = parse_address(target)
        self.target = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        self._idempotent = frozenset(idempotent_methods)
        self._frames = FrameReader(max_frame_size)
        self._pool = Pool(PoolOptions(max_idle_per_address, max_idle_global, max_idle_timeout))
        self._templates: dict[tuple[str, str], RequestTemplate] = {}
        self._seq = itertools.count(1)
        self._closed = False

    # ------------------------------------------------------------------ Channel

    def unary_call(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        request: Any,
        *,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
        reply_metadata: dict[str, str] | None = None,
    ) -> Any:
        if self._closed:
            raise UnavailableError(message="the client is closed")
        payload = method.encode_request(request)
        if timeout is None:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        key = (service.full_name, method.name)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = RequestTemplate(service.full_name, method.name)
        attempt = 1
        while True:
            try:
                reply = self._attempt(template, payload, deadline, metadata)
                break
            except _NotSent as exc:
                failure: Exception = exc
                retry = True
            except _MaybeSent as exc:
                failure, retry = exc, self._is_idempotent(service, method)
            if (
                not retry
                or attempt >= self.retry.max_attempts
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                cause = failure.__cause__ or failure
                raise UnavailableError(message=f"{self._describe()}: {cause}") from cause
            pause = self.retry.pause(attempt)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1
        msg_type, status, status_message, received, body = reply
        if reply_metadata is not None:
            reply_metadata.update(received)
        if msg_type is MessageType.EXCEPTION:
            raise RpcError(status, status_message)
        try:
            return method.response_type.from_bytes(body)
        except ValueError as exc:
            raise InternalError(message=f"cannot decode the reply to {method.name}: {exc}") from exc

    def _is_idempotent(self, service: ServiceDescriptor, method: MethodDescriptor) -> bool:
        return (
            method.idempotent
            or method.name in self._idempotent
            or f"{service.full_name}/{method.name}" in self._idempotent
        )

    @property
    def idle_connections(self) -> int:
        """Pooled connections waiting for a call."""
        return self._pool.idle

    def close(self) -> None:
        """Close idle connections; calls in progress finish, later calls fail."""
        self._closed = True
        self._pool.close()

    def __enter__(self) -> ClientChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one attempt

    def _attempt(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> _Reply:
        conn = self._connection(deadline)
        seq_id = next(self._seq) & 0xFFFFFFFF or next(self._seq) & 0xFFFFFFFF
        timeout_ms = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._pool.put(conn)
                raise DeadlineExceededError(message="deadline exceeded before the call was sent")
            timeout_ms = max(1, int(remaining * 1000))
        reusable = False
        try:
            writer = conn.writer()
            template.write(writer, seq_id, payload, timeout_ms, metadata)
            conn.set_write_deadline(deadline)
            conn.flush()
            reply = self._read_reply(conn, seq_id, deadline)
            reusable = CONNECTION_RESET_KEY not in reply[3]
            return reply
        except (ReadTimeoutError, WriteTimeoutError):
            message = f"deadline exceeded calling {template.method}"
            raise DeadlineExceededError(message=message) from None
        except ProtocolError as exc:
            raise InternalError(message=f"protocol error from {self._describe()}: {exc}") from exc
        except TransportError as exc:
            raise _MaybeSent(str(exc)) from exc
        finally:
            if reusable:
                self._pool.put(conn)
            else:
                conn.close()

    def _connection(self, deadline: float | None) -> Connection:
        conn = self._pool.get()  # is_active() checked: a dead one never gets our request
        while conn is not None and len(conn.reader()):
            conn.close()  # bytes nobody asked for: the stream is out of step, never reuse it
            conn = self._pool.get()
        if conn is not None:
            return conn
        timeout = self.connect_timeout
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(message="deadline exceeded before connecting")
            timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            return dial_connection(self._network, self._address, timeout, direct=True)
        except (DialRefusedError, DialError, DialTimeoutError) as exc:
            raise _NotSent(str(exc)) from exc

    def _read_reply(self, conn: Connection, seq_id: int, deadline: float | None) -> _Reply:
        conn.set_read_deadline(deadline)
        reader = conn.reader()
        read = self._frames.read_raw
        needed = FIXED_SIZE  # nothing is buffered yet: the request has only just gone out
        while True:
            conn.wait_readable(needed)
            raw = read(reader)
            if raw is None:
                needed = self._frames.pending_size(reader)
                continue
            needed = FIXED_SIZE
            if raw[0] != seq_id:
                continue  # not ours (a stale reply): dropped, never matched to this call
            msg_type, _method, _service, _timeout, status, message, metadata = parse_info(raw[2])
            if msg_type is not MessageType.REPLY and msg_type is not MessageType.EXCEPTION:
                raise ProtocolError(f"expected a reply, got a {msg_type.name} frame")
            reader.release()
            return msg_type, status, message, metadata, raw[3]

    def _describe(self) -> str:
        return f"{self._network}:{self._address}" if self._network == "unix" else str(self.target)


def open_channel(target: str, **options: Any) -> ClientChannel:
    """The Channel for a target string; what `SClient("host:port", **options)` uses."""
    return ClientChannel(target, **options)
