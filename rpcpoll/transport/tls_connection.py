"""TLSConnection: TLS between a netpoll connection's socket and its LinkBuffers.

Theory of operation
-------------------
Where TLS sits. A TLSConnection is a Connection whose socket-facing primitives differ, and
nothing else does: `_receive` does one `recv_into` (a per-thread scratch buffer), feeds the
bytes to the incoming `ssl.MemoryBIO` and decrypts with `SSLObject.read(n, buffer)` straight
into the input LinkBuffer's booked tail block; `_pump` encrypts up to 256 KiB of the output
LinkBuffer with `SSLObject.write`, queues the records in a "wire" LinkBuffer and sends them
with `sendmsg`. Blocking reads, timeouts, on_request, backpressure, the poller draining a full
socket and direct connections are the plain Connection's code, working on plaintext. Each
decrypt drains every whole record the BIO holds, so plaintext never waits inside OpenSSL and
level-triggered readiness keeps its meaning.

Locks. OpenSSL's SSL object is not thread-safe and CPython releases the GIL inside its calls:
`_tls_lock` guards the SSLObject and both BIOs (each hold is one short call, never I/O). The
wire buffer is written under that lock, so records leave in the order OpenSSL made them, and
read by whoever owns the sending side, as the output buffer is: a flusher holding
`_flush_lock`, or the poller while `_draining`. Records made outside a flush (handshake
flights, alerts, close_notify, an answer to a KeyUpdate) are sent by `_kick`, which sends only
when nobody else is the sender (else that sender, or a retry on the poller, sends them).

Handshakes.
- Client (dial): on the dialing thread, before the connection is returned or registered with
  a poller, within the dial's deadline, polled and direct connections alike. A failure is a
  `TLSHandshakeError` (`TLSCertificateError` for a certificate that does not verify).
- Server: on the connection's poller, never blocking it. Received bytes go to the incoming BIO
  and a handshake step (one `do_handshake`, ~0.2 ms of CPU with an ECDSA key) is queued on the
  poller's handshake queue; reading the connection pauses until the step ran. The queue runs
  as a poller timer in slices of at most 2 ms, so the events of established connections are
  served between slices: a storm of new connections delays them by a slice at a time, never by
  the whole storm. A handshake must complete within `handshake_timeout`. A peer whose first
  byte is not a TLS handshake record gets the listener's `plaintext_reply` and is closed. An
  EventLoop's `on_connect` runs once the handshake is done, so it sees `peer_identity`.
- Either side: a failed handshake sends OpenSSL's alert, then closes after discarding what the
  peer had already sent (closing with unread bytes would reset the connection, and the peer
  might never read the alert that says why).

Closing. `close()` sends close_notify when no other thread is sending at that moment (it never
waits); a peer's close_notify is an end of stream like a FIN, after the plaintext before it.
An established session that fails (an alert, a corrupt record) closes the connection; reads
that would say "closed by peer" raise `TLSSessionError` with OpenSSL's reason instead.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, cast

from .connection import (
    _MAX_IOV,
    _MAX_READ,
    _PAUSE_TLS,
    Connection,
    Runner,
    _Closing,
)
from .errors import (
    ConnectionClosedError,
    ConnectionEOFError,
    DialTimeoutError,
    TLSError,
    TLSHandshakeError,
    TLSSessionError,
)
from .identity import PeerIdentity
from .linkbuffer import LinkBuffer
from .poller import Poller, TimerHandle
from .tls import describe_ssl_error, handshake_error, session_error

if TYPE_CHECKING:
    from .tls import ServerTLS

__all__ = ["TLSConnection"]

log = logging.getLogger("rpcpoll.transport")

_SCRATCH = 128 * 1024  # one recv; OpenSSL decrypts records of at most 16 KiB each
_BOOK = 64 * 1024  # input space offered to each SSLObject.read
_ENCRYPT_CHUNK = 256 * 1024  # plaintext encrypted per send round: bounds the ciphertext held
_SLICE = 0.002  # seconds of handshake work per poller timer run
_RETRY = 0.001  # seconds before a kick retries while another thread sends
_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
_DISCARD_LIMIT = 1024 * 1024  # unread bytes dropped before closing a failed handshake

_local = threading.local()


def _scratch() -> memoryview:
    """This thread's receive buffer: bytes stay in it only until they are fed to a BIO."""
    view: memoryview | None = getattr(_local, "scratch", None)
    if view is None:
        view = _local.scratch = memoryview(bytearray(_SCRATCH))
    return view


class TLSConnection(Connection):
    """A Connection carrying TLS (see the module docs); made by `dial_connection(ssl=...)`
    (client) or a listener's `ServerTLS` (server)."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        poller: Poller | None = None,
        runner: Runner | None = None,
        network: str | None = None,
        direct: bool = False,
        handshake_timeout: float | None = None,
        plaintext_reply: bytes = b"",
        owner: ServerTLS | None = None,
    ) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        # First, so that a bad setting (no server_hostname while check_hostname is on) raises
        # before the socket belongs to a Connection.
        tls = context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )
        super().__init__(sock, poller=poller, runner=runner, network=network, direct=direct)
        self._incoming = incoming
        self._outgoing = outgoing
        self._tls = tls
        self._tls_lock = threading.Lock()
        self._wire = LinkBuffer()
        self._tls_server = server_side
        self._established = False
        self._peer: PeerIdentity | None = None
        self._tls_failure: TLSSessionError | None = None
        self._handshake_timeout = handshake_timeout
        self._handshake_timer: TimerHandle | None = None
        self._plaintext_reply = plaintext_reply
        self._first_bytes = True
        self._connect_pending = False
        self._owner = owner
        self.add_close_callback(_forget_handshake)

    # ------------------------------------------------------------------ what TLS adds

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """The peer's verified certificate identity; None until the handshake is done, and on
        a server whose client presented none (no client CA configured)."""
        return self._peer

    @property
    def tls_failure(self) -> TLSSessionError | None:
        """Why the established session failed (an alert from the peer, a corrupt record), if
        it did; reads and writes on the closed connection raise it."""
        return self._tls_failure

    @property
    def handshake_done(self) -> bool:
        return self._established

    @property
    def tls_version(self) -> str | None:
        """ "TLSv1.3", "TLSv1.2"; None before the handshake."""
        return self._tls.version() if self._established else None

    @property
    def cipher(self) -> str | None:
        found = self._tls.cipher() if self._established else None
        return found[0] if found else None

    @property
    def unsent_bytes(self) -> int:
        return super().unsent_bytes + len(self._wire)

    def __repr__(self) -> str:
        return super().__repr__().replace("<Connection ", "<TLSConnection ", 1)

    # ------------------------------------------------------------------ receiving

    def _receive(self, hangup: bool = True) -> int:
        """One recv, then decrypt every whole record into the input buffer; returns the
        plaintext bytes it produced (0 after an end of stream, -1 for none)."""
        scratch = _scratch()
        try:
            n = self._sock.recv_into(scratch)
        except BlockingIOError:
            return -1
        except OSError as exc:
            log.debug("recv on %r failed: %s", self, exc)
            n = 0
        if n == 0:
            if not self._established and self._owner is not None:
                self._owner.note_failure(self._remote, "closed by the client during the handshake")
            if hangup:
                self._hangup()
            return 0
        if not self._established:
            self._on_handshake_bytes(scratch[:n])
            return -1
        with self._tls_lock:
            self._incoming.write(scratch[:n])
        return self._decrypt()

    def _decrypt(self) -> int:
        """Decrypt what the incoming BIO holds into the input buffer (the caller receives)."""
        inbuf = self._input
        total = 0
        ended = False
        failure: ssl.SSLError | None = None
        with self._tls_lock:
            read = self._tls.read
            while True:
                space = inbuf.book(_BOOK, self._max_size)
                try:
                    n = cast(int, read(len(space), space))  # with a buffer: a count
                except ssl.SSLWantReadError:
                    n = -1
                except ssl.SSLZeroReturnError:
                    n = 0
                except ssl.SSLError as exc:
                    failure, n = exc, -1
                finally:
                    del space
                if n <= 0:
                    inbuf.book_ack(0)
                    ended = n == 0  # read() returns 0 only for the peer's close_notify
                    break
                inbuf.book_ack(n)
                total += n
            if ended:  # answer the peer's close_notify with ours (a clean bidirectional end)
                try:
                    self._tls.unwrap()
                except (ssl.SSLError, ValueError):
                    pass
            answer = self._take_outgoing_locked()
        if answer:
            self._kick()
        if total:
            length = len(inbuf)
            if length > self._max_size and self._max_size < _MAX_READ:
                self._max_size = min(_MAX_READ, 1 << (length - 1).bit_length())
            if self._close_idle:
                self._last_active = time.monotonic()
        if failure is not None:
            self._tls_failure = session_error(failure, self._remote)
            log.debug("%s", self._tls_failure)
        if failure is None and not ended:
            return total if total else -1
        # The end of the stream, after the plaintext that came before it.
        if not total or self._direct:
            self._hangup()
        else:
            self._poller.call_soon(self._hangup)  # after on_request has seen those bytes
        return total

    def _closed_error(self, when: str = "") -> ConnectionClosedError:
        failure = self._tls_failure
        if failure is not None:
            return type(failure)(str(failure))
        return super()._closed_error(when)

    def _wait_read(self, n: int) -> None:
        try:
            super()._wait_read(n)
        except ConnectionEOFError as exc:
            failure = self._tls_failure
            if failure is not None:
                raise type(failure)(str(failure)) from exc
            raise

    # ------------------------------------------------------------------ sending

    def _pump(self, out: LinkBuffer) -> bool:
        """Encrypt the output buffer a chunk at a time and send the records (the caller owns
        the sending side). Before a server's handshake completes, plaintext waits in `out`."""
        wire = self._wire
        sendmsg = self._sock.sendmsg
        while True:
            if not len(wire):
                if not len(out) or not self._established:
                    return True
                self._encrypt(out)
            views = wire.get_bytes(_MAX_IOV)
            try:
                sent = sendmsg(views)
            except BlockingIOError:
                return False
            finally:
                del views
            if not sent:
                return False
            wire.skip(sent)
            wire.release()

    def _encrypt(self, out: LinkBuffer) -> None:
        budget = _ENCRYPT_CHUNK
        taken = 0
        with self._tls_lock:
            write = self._tls.write
            views = out.get_bytes(_MAX_IOV)
            try:
                for view in views:
                    part = view if len(view) <= budget else view[:budget]
                    write(part)
                    taken += len(part)
                    budget -= len(part)
                    del part
                    if budget <= 0:
                        break
            finally:
                del views
            self._take_outgoing_locked()
        out.skip(taken)
        out.release()

    def _take_outgoing_locked(self) -> int:
        """Move what OpenSSL wrote to the wire buffer (call with _tls_lock held)."""
        data = self._outgoing.read()
        if data:
            self._wire.write_binary(data)
            LinkBuffer.flush(self._wire)
        return len(data)

    def _kick(self) -> None:
        """Send records made outside a flush, if no other thread is sending right now."""
        if self._draining:
            return  # the poller sends them as the socket drains
        if not self._flush_lock.acquire(blocking=False):
            # A flusher sends; it may have looked at the wire before these records came.
            if not self._direct and not self._poller.closed:
                self._poller.call_later(_RETRY, self._kick)
            return
        try:
            if self._draining or self._input.closed:
                return
            try:
                drained = self._pump(self._output)
            except OSError as exc:
                self._on_send_error(exc)
                return
            if not drained and not self._direct and self._closing is _Closing.OPEN:
                self._set_draining(True)
        finally:
            self._flush_lock.release()

    # ------------------------------------------------------------------ client handshake

    def _client_handshake(self, deadline: float | None, shown: object) -> None:
        """Drive the client handshake on this thread (before the connection is registered),
        until `deadline`. Raises TLSHandshakeError, TLSCertificateError or DialTimeoutError."""
        scratch = _scratch()
        while True:
            failure: ssl.SSLError | None = None
            done = False
            with self._tls_lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    failure = exc
                self._take_outgoing_locked()
            if failure is not None:
                try:  # the alert tells the server why; the error tells our caller
                    self._send_wire_within(time.monotonic(), shown)
                except TLSError:
                    pass
                raise handshake_error(failure, str(shown)) from None
            self._send_wire_within(deadline, shown)
            if done:
                break
            if not self._wait_ready(select.POLLIN, deadline):
                raise DialTimeoutError(f"dial timeout: TLS handshake with {shown} not done")
            try:
                n = self._sock.recv_into(scratch)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TLSHandshakeError(
                    f"TLS handshake with {shown} failed: {exc} (is it a TLS server?)"
                ) from None
            if n == 0:
                raise TLSHandshakeError(
                    f"TLS handshake with {shown} failed: the server closed the connection"
                    " (it may not speak TLS, or it refused this connection)"
                )
            with self._tls_lock:
                self._incoming.write(scratch[:n])
        self._on_established()
        if self._incoming.pending:  # the server spoke first: have it readable now
            self._decrypt()

    def _send_wire_within(self, deadline: float | None, shown: object) -> None:
        wire = self._wire
        while len(wire):
            views = wire.get_bytes(_MAX_IOV)
            try:
                sent = self._sock.sendmsg(views)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise TLSHandshakeError(f"TLS handshake with {shown} failed: {exc}") from None
            finally:
                del views
            if sent:
                wire.skip(sent)
                wire.release()
            elif not self._wait_ready(select.POLLOUT, deadline):
                raise DialTimeoutError(f"dial timeout: TLS handshake with {shown} not done")

    # ------------------------------------------------------------------ server handshake

    def _register(self) -> None:
        super()._register()
        if self._registered and not self._established and self._handshake_timeout:
            self._handshake_timer = self._poller.call_later(
                self._handshake_timeout, self._handshake_expired
            )

    def _on_handshake_bytes(self, data: memoryview) -> None:
        """Server, poller thread: bytes of a handshake in progress."""
        if self._first_bytes:
            self._first_bytes = False
            if data[0] != _HANDSHAKE_RECORD:
                self._refuse_plaintext()
                return
        with self._tls_lock:
            self._incoming.write(data)
        if not self._paused & _PAUSE_TLS:
            self._pause(_PAUSE_TLS)  # no more bytes until the step has run
            _queue_of(self._poller).add(self)

    def _handshake_step(self) -> bool:
        """Run one do_handshake (from the poller's handshake queue). False: another thread is
        receiving on this connection right now (a poller hand-off): try again later."""
        if self._closing is not _Closing.OPEN:
            return True
        if not self._receiving.acquire(blocking=False):
            return False
        produced = -1
        failure: ssl.SSLError | None = None
        done = False
        try:
            with self._tls_lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    failure = exc
                self._take_outgoing_locked()
            self._kick()
            if failure is not None:
                self._handshake_failed(describe_ssl_error(failure))
                return True
            if done:
                self._on_established()
                produced = self._decrypt()  # requests that came with the client's Finished
        finally:
            self._receiving.release()
        if produced == 0:
            return True  # the client ended the session at once: _decrypt closed it
        self._resume(_PAUSE_TLS)
        if done:
            if self._take_pending_connect():
                Connection._launch_connect(self)
            self._kick()  # anything written before the handshake completed
        if produced > 0:
            self._on_received()
        return True

    def _on_established(self) -> None:
        with self._state_lock:
            self._established = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        decoded = self._tls.getpeercert()
        if decoded:  # empty unless the peer's certificate was verified
            der = self._tls.getpeercert(binary_form=True) or b""
            self._peer = PeerIdentity.from_certificate(decoded, der)
        if self._owner is not None:
            self._owner.handshakes += 1

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._established or self._closing is not _Closing.OPEN:
            return
        if self._owner is not None:
            self._owner.note_failure(
                self._remote, f"not completed within {self._handshake_timeout:g} s"
            )
        self.close()

    def _handshake_failed(self, reason: str) -> None:
        if self._owner is not None:
            self._owner.note_failure(self._remote, reason)
        self._close_after_discarding()

    def _refuse_plaintext(self) -> None:
        """The peer's first byte is not a TLS record: tell it (if there is something to say)
        and close."""
        if self._owner is not None:
            self._owner.note_failure(self._remote, "the client does not speak TLS")
        if self._plaintext_reply:
            try:
                self._sock.send(self._plaintext_reply)
            except OSError:
                pass
        self._close_after_discarding()

    def _send_goodbye(self, data: bytes) -> bool:
        # A goodbye would have to go through the TLS session and end with close_notify before
        # the FIN; a TLS connection that is idle at shutdown is closed as before instead.
        return False

    def _close_after_discarding(self) -> None:
        """Close without a reset: drop what the peer sent (bounded), end our side with a FIN
        after the bytes queued for it (an alert, a refusal), then close."""
        discarded = 0
        scratch = _scratch()
        try:
            while discarded < _DISCARD_LIMIT:
                n = self._sock.recv_into(scratch)
                if not n:
                    break
                discarded += n
        except OSError:  # BlockingIOError included: nothing more now
            pass
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close()

    # ------------------------------------------------------------------ on_connect, closing

    def _launch_connect(self) -> None:
        # on_connect waits for the handshake (it may want peer_identity).
        with self._state_lock:
            if not self._established and self._closing is _Closing.OPEN:
                self._connect_pending = True
                return
        if self._established:
            super()._launch_connect()
        else:
            self._runner(self._abandon_connect)

    def _take_pending_connect(self) -> bool:
        with self._state_lock:
            pending, self._connect_pending = self._connect_pending, False
        return pending

    def _abandon_connect(self) -> None:
        """The handshake never completed: skip on_connect, and let the connection finish
        (the request lock, taken for on_connect, is held until then)."""
        with self._state_lock:
            self._connected = True
        self._process()

    def _hangup(self) -> None:
        super()._hangup()
        if self._take_pending_connect():
            self._runner(self._abandon_connect)

    def close(self) -> None:
        if self._closing is _Closing.OPEN and self._established and not self._detaching:
            self._send_close_notify()
        super().close()
        if self._take_pending_connect():
            self._runner(self._abandon_connect)

    def _send_close_notify(self) -> None:
        if not self._flush_lock.acquire(blocking=False):
            return  # a flush is sending: our alert must not land inside its records
        try:
            if self._draining or self._input.closed:
                return
            with self._tls_lock:
                try:
                    self._tls.unwrap()
                except (ssl.SSLError, ValueError):
                    pass  # SSLWantReadError: ours is queued; we do not wait for theirs
                self._take_outgoing_locked()
            wire = self._wire
            while len(wire):  # never waits: what does not fit is dropped with the socket
                views = wire.get_bytes(_MAX_IOV)
                try:
                    sent = self._sock.sendmsg(views)
                except OSError:
                    break
                finally:
                    del views
                if not sent:
                    break
                wire.skip(sent)
                wire.release()
        finally:
            self._flush_lock.release()

    def _release_resources(self) -> None:
        super()._release_resources()
        if self._input.closed and not self._wire.closed:
            self._wire.close()


def _forget_handshake(conn: Connection) -> None:
    """A close callback: the handshake timer must not keep a closed connection alive."""
    if isinstance(conn, TLSConnection) and conn._handshake_timer is not None:
        conn._handshake_timer.cancel()
        conn._handshake_timer = None


class _HandshakeQueue:
    """A poller's pending server handshake steps, run in slices of `_SLICE` seconds as a
    poller timer: events of established connections are handled between two slices."""

    def __init__(self, poller: Poller) -> None:
        self._poller = poller
        self._steps: deque[TLSConnection] = deque()
        self._lock = threading.Lock()
        self._armed = False

    def add(self, conn: TLSConnection) -> None:
        with self._lock:
            self._steps.append(conn)
            if self._armed:
                return
            self._armed = True
        self._poller.call_later(0.0, self._run)

    def _run(self) -> None:
        deadline = time.monotonic() + _SLICE
        steps = self._steps
        later = []
        while True:
            with self._lock:
                if not steps:
                    break
                conn = steps.popleft()
            try:
                if not conn._handshake_step():
                    later.append(conn)
            except Exception:
                log.exception("TLS handshake step of %r failed; closing it", conn)
                conn.close()
            if time.monotonic() >= deadline:
                break
        with self._lock:
            steps.extend(later)
            if not steps:
                self._armed = False
                return
        # A timer, not call_soon: the poller runs every ready callback before it polls again,
        # timers only once per loop, so events are served between two slices.
        self._poller.call_later(0.0 if not later else _RETRY, self._run)


_queues: weakref.WeakKeyDictionary[Poller, _HandshakeQueue] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def _queue_of(poller: Poller) -> _HandshakeQueue:
    queue = _queues.get(poller)
    if queue is None:
        with _queues_lock:
            queue = _queues.get(poller)
            if queue is None:
                queue = _queues[poller] = _HandshakeQueue(poller)
    return queue
