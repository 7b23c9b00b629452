"""Calls over pooled long connections: one call per connection at a time (Kitex's LongPool).

A call takes an idle connection from the pool (or dials one), writes one request frame and
reads frames until its reply arrives, all on the calling thread: these connections are
"direct" (no poller), because for one request and one reply the hop to a poller thread costs
more than the I/O it saves. Many threads can call at once; each uses its own connection.

A connection goes back to the pool only after a clean reply without `crrst`; after an error or
a timeout it is closed, so a late reply can never be read as the reply of another call.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..protocol.frame import (
    CONNECTION_RESET_KEY,
    FIXED_SIZE,
    FrameReader,
    FrameTooLargeError,
    MessageType,
    ProtocolError,
    RequestTemplate,
    parse_info,
)
from ..protocol.status import (
    DeadlineExceededError,
    InternalError,
    ResourceExhaustedError,
    StatusCode,
)
from ..transport.connection import Connection, Runner
from ..transport.errors import (
    DialError,
    DialRefusedError,
    DialTimeoutError,
    ReadTimeoutError,
    TransportError,
    WriteTimeoutError,
)
from ..transport.net import dial_connection
from .outcome import MaybeSentError, NotSentError, Reply, timeout_ms_until
from .pool import Pool, PoolOptions

if TYPE_CHECKING:
    from ssl import SSLContext

    from ..transport.linkbuffer import LinkBuffer

__all__ = [
    "LongConnTransport",
    "SkippingFrames",
    "dial_within",
    "refusal_of",
    "reply_of",
    "reply_too_large",
]


def dial_within(
    network: str,
    address: str | tuple[str, int],
    connect_timeout: float | None,
    deadline: float | None,
    *,
    direct: bool,
    runner: Runner | None = None,
    ssl: SSLContext | None = None,
    server_hostname: str | None = None,
) -> Connection:
    """Dial within both the connect timeout and the call's deadline (a TLS handshake
    included); a failure is NotSentError."""
    timeout = connect_timeout
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(message="deadline exceeded before connecting")
        timeout = remaining if timeout is None else min(timeout, remaining)
    try:
        return dial_connection(
            network,
            address,
            timeout,
            direct=direct,
            runner=runner,
            ssl=ssl,
            server_hostname=server_hostname,
        )
    except (DialRefusedError, DialError, DialTimeoutError) as exc:
        raise NotSentError(str(exc)) from exc


class LongConnTransport:
    """Calls to one address over a pool of long connections, one call per connection."""

    def __init__(
        self,
        network: str,
        address: str | tuple[str, int],
        *,
        frames: FrameReader,
        pool_options: PoolOptions,
        connect_timeout: float | None,
        describe: str,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._network = network
        self._address = address
        self._frames = frames
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._pool = Pool(pool_options)
        self._connect_timeout = connect_timeout
        self._describe = describe
        self._seq = itertools.count(1)

    @property
    def idle_connections(self) -> int:
        """Pooled connections waiting for a call."""
        return self._pool.idle

    def warm_up(self, count: int, deadline: float | None = None) -> int:
        """Dial up to `count` connections into the pool; returns how many are idle now."""
        conns = []
        try:
            for _ in range(count - self._pool.idle):
                conns.append(self._dial(deadline))
        finally:
            for conn in conns:
                self._pool.put(conn)
        return self._pool.idle

    def close(self) -> None:
        """Close idle connections; connections in use are closed when their call ends."""
        self._pool.close()

    def call(
        self,
        template: RequestTemplate,
        payload: bytes,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
    ) -> Reply:
        """One attempt: raises NotSentError, MaybeSentError, DeadlineExceededError or
        InternalError (a protocol error from the server)."""
        conn = self._connection(deadline)
        seq_id = next(self._seq) & 0xFFFFFFFF or next(self._seq) & 0xFFFFFFFF
        try:
            timeout_ms = timeout_ms_until(deadline)
        except DeadlineExceededError:
            self._pool.put(conn)
            raise
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
        except FrameTooLargeError as exc:
            raise reply_too_large(exc, self._describe) from None
        except ProtocolError as exc:
            raise InternalError(message=f"protocol error from {self._describe}: {exc}") from exc
        except TransportError as exc:
            raise MaybeSentError(str(exc)) from exc
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
        return self._dial(deadline)

    def _dial(self, deadline: float | None) -> Connection:
        return dial_within(
            self._network,
            self._address,
            self._connect_timeout,
            deadline,
            direct=True,
            ssl=self._ssl,
            server_hostname=self._server_hostname,
        )

    def _read_reply(self, conn: Connection, seq_id: int, deadline: float | None) -> Reply:
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
                if raw[0] == 0:  # a control frame: the server may be refusing the connection
                    refused = refusal_of(raw[2])
                    if refused is not None:
                        raise NotSentError(f"{self._describe} refused the connection: {refused}")
                continue  # not ours (a stale reply): dropped, never matched to this call
            reply = reply_of(raw[2], raw[3])
            reader.release()  # the payload view stays valid (see LinkBuffer.release)
            return reply


def refusal_of(info: bytes) -> str | None:
    """The reason in a control frame by which a server refuses a connection before reading
    from it (an EXCEPTION with sequence id 0, docs/protocol.md), or None for another frame."""
    try:
        msg_type, _method, _service, _timeout, status, message, _metadata, _ = parse_info(info)
    except ProtocolError:
        return None
    if msg_type is not MessageType.EXCEPTION:
        return None
    try:
        code = StatusCode(status).name
    except ValueError:
        code = str(status)
    return f"{code}: {message}" if message else code


class SkippingFrames:
    """The frames a multiplexed client reads from its server: `FrameReader.read_raw`, except
    that a frame over max_frame_size whose sequence id is known goes to `on_oversized` (which
    fails its call or resets its stream) and is then skipped as its bytes arrive, never
    buffered, so the frames after it are read. One per connection (it holds the skip state);
    `next` runs on the connection's reader only."""

    __slots__ = ("_on_oversized", "_read", "_skipping")

    def __init__(
        self, frames: FrameReader, on_oversized: Callable[[FrameTooLargeError], None]
    ) -> None:
        self._read = frames.read_raw
        self._on_oversized = on_oversized
        self._skipping = 0  # bytes of an oversized frame still to skip

    def next(self, reader: LinkBuffer) -> tuple[int, int, bytes, memoryview] | None:
        """The next whole frame as `read_raw` gives it, or None until more bytes arrive.
        Raises ProtocolError for what the connection cannot go on after (a frame over the
        limit with sequence id 0 among them: there is no call to fail)."""
        while True:
            if self._skipping:
                skipped = min(self._skipping, len(reader))
                reader.skip(skipped)
                self._skipping -= skipped
                if self._skipping:
                    return None
            try:
                return self._read(reader)
            except FrameTooLargeError as exc:
                if not exc.seq_id:
                    raise
                self._on_oversized(exc)
                self._skipping = exc.size


def reply_too_large(
    exc: FrameTooLargeError, describe: str, what: str = "the reply"
) -> ResourceExhaustedError:
    """The error of a call whose reply (or a stream whose message) is over this client's
    max_frame_size."""
    return ResourceExhaustedError(
        message=f"{what} from {describe} is {exc.size} bytes, over this client's"
        f" max_frame_size of {exc.limit}"
    )


def reply_of(info: bytes, payload: memoryview) -> Reply:
    """The Reply of a frame's header info and payload; ProtocolError if it is not a reply."""
    msg_type, _method, _service, _timeout, status, message, metadata, _ = parse_info(info)
    if msg_type is not MessageType.REPLY and msg_type is not MessageType.EXCEPTION:
        raise ProtocolError(f"expected a reply, got a {msg_type.name} frame")
    return msg_type, status, message, metadata, payload
