"""One `rpcpoll bench` load process: a closed loop of pipelined calls over raw connections.

The request frame is encoded once by the parent; this loop only patches each copy's sequence
id, so a call costs the load generator one `pack_into` to send and a few slices to match its
reply. Each connection keeps `depth` calls in flight: every reply read is answered with a new
request, sent in the same `send()` as the others of its read batch. Replies are matched by
sequence id (replies to out-of-order calls may come in any order), timed to the microsecond
and counted by status; a reply's payload is not decoded here (the first one is kept for the
parent to check).

The process speaks to its parent through a pipe: ("ready",) once every connection is up (or
("failed", message)), then waits for the start event, runs, and sends ("done", Result). Its
running totals go to a shared array every 50 ms, for the progress display.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ...protocol.frame import MessageType, parse_info
from ...protocol.status import StatusCode

__all__ = ["Result", "WorkerConfig", "run_worker"]

_FIXED = struct.Struct(">IHHIH")  # length, magic, flags, seq id, header size in words
_U32 = struct.Struct(">I")
_SEQ_OFFSET = 8
_MAX_SEQ = 0x7FFFFFFF
_RECV_SIZE = 1 << 18
_PROGRESS_EVERY_NS = 50_000_000


@dataclass(frozen=True)
class WorkerConfig:
    """What one load process does (picklable: it crosses a spawn)."""

    index: int
    network: str  # "tcp" or "unix"
    address: Any  # (host, port) or a path
    frame: bytes  # one request frame, sequence id 0
    ok_info: bytes  # the header info of a plain successful reply
    connections: int
    depth: int  # calls in flight per connection
    calls: int | None  # calls to make, or None: until `seconds`
    seconds: float | None
    drain_seconds: float  # how long replies are awaited once sending stops
    connect_timeout: float


@dataclass
class Result:
    """What one load process measured."""

    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # status name or cause -> count
    latency_us: dict[int, int] = field(default_factory=dict)  # microseconds -> calls
    started_ns: int = 0
    ended_ns: int = 0
    cpu_seconds: float = 0.0
    sample: bytes | None = None  # the first successful reply's payload
    messages: list[str] = field(default_factory=list)  # connection failures, one line each


class _Conn:
    __slots__ = ("dead", "inbuf", "out", "pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = b""  # bytes the kernel did not take yet
        self.pending: dict[int, int] = {}  # seq id -> send time (ns)
        self.dead = False


def _dial(config: WorkerConfig) -> socket.socket:
    family = socket.AF_UNIX if config.network == "unix" else socket.AF_INET
    if config.network != "unix" and ":" in config.address[0]:
        family = socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(config.connect_timeout)
        sock.connect(config.address)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def run_worker(config: WorkerConfig, pipe: Any, start: Any, progress: Any) -> None:
    """The process's entry point (see the module docs)."""
    conns: list[_Conn] = []
    try:
        for _ in range(config.connections):
            conns.append(_Conn(_dial(config)))
    except OSError as exc:
        for conn in conns:
            conn.sock.close()
        pipe.send(("failed", f"cannot connect to {_shown(config)}: {exc.strerror or exc}"))
        return
    pipe.send(("ready",))
    if not start.wait(60):
        for conn in conns:
            conn.sock.close()
        return
    try:
        result = _Loop(config, conns, progress).run()
    finally:
        for conn in conns:
            conn.sock.close()
    pipe.send(("done", result))


def _shown(config: WorkerConfig) -> str:
    if config.network == "unix":
        return f"unix:{config.address}"
    host, port = config.address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Loop:
    def __init__(self, config: WorkerConfig, conns: list[_Conn], progress: Any) -> None:
        self.config = config
        self.conns = conns
        self.by_fd = {conn.sock.fileno(): conn for conn in conns}
        self.progress = progress
        self.result = Result()
        self.frame_len = len(config.frame)
        self.batch = bytearray(config.frame * config.depth)  # sequence ids patched per send
        self.seq = 0
        self.to_send = config.calls  # None: until the clock says stop
        self.poller = select.epoll()
        for fd in self.by_fd:
            self.poller.register(fd, select.EPOLLIN)

    def run(self) -> Result:
        config, result = self.config, self.result
        cpu_start = time.process_time()
        result.started_ns = now = time.perf_counter_ns()
        stop_sending = None if config.seconds is None else now + int(config.seconds * 1e9)
        for conn in self.conns:
            self._send(conn, config.depth, now)
        next_progress = now + _PROGRESS_EVERY_NS
        drain_until: int | None = None
        try:
            while True:
                in_flight = sum(len(conn.pending) for conn in self.conns if not conn.dead)
                sending = self.to_send != 0 and drain_until is None
                if not in_flight and not sending:
                    break
                if drain_until is not None and now >= drain_until:
                    break
                events = self.poller.poll(0.05)
                now = time.perf_counter_ns()
                if stop_sending is not None and now >= stop_sending and drain_until is None:
                    self.to_send = 0
                    drain_until = now + int(config.drain_seconds * 1e9)
                for fd, mask in events:
                    conn = self.by_fd[fd]
                    if mask & select.EPOLLOUT:
                        self._flush(conn)
                    if mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                        self._receive(conn, now)
                if self.to_send == 0 and drain_until is None:
                    drain_until = now + int(config.drain_seconds * 1e9)
                if now >= next_progress:
                    self._report()
                    next_progress = now + _PROGRESS_EVERY_NS
                if all(conn.dead for conn in self.conns):
                    break
        finally:
            self.poller.close()
        for conn in self.conns:  # calls never answered
            if conn.pending:
                self._error("DEADLINE_EXCEEDED (no reply)", len(conn.pending))
                conn.pending.clear()
        result.ended_ns = time.perf_counter_ns()
        result.cpu_seconds = time.process_time() - cpu_start
        self._report()
        return result

    def _send(self, conn: _Conn, count: int, now: int) -> None:
        if self.to_send is not None:
            count = min(count, self.to_send)
            self.to_send -= count
        if count <= 0 or conn.dead:
            return
        batch, size, pending, seq = self.batch, self.frame_len, conn.pending, self.seq
        pack = _U32.pack_into
        offset = _SEQ_OFFSET
        for _ in range(count):
            seq = seq + 1 if seq < _MAX_SEQ else 1
            pack(batch, offset, seq)
            pending[seq] = now
            offset += size
        self.seq = seq
        data = memoryview(batch)[: count * size]
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(conn, exc)
            return
        if sent < len(data):
            conn.out = bytes(data[sent:])
            self.poller.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(conn, exc)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.poller.modify(conn.sock.fileno(), select.EPOLLIN)

    def _receive(self, conn: _Conn, now: int) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(conn, exc)
            return
        if not data:
            self._lost(conn, None)
            return
        buf = conn.inbuf + data if conn.inbuf else data
        end = len(buf)
        pos = 0
        done = 0
        result = self.result
        ok_info = self.config.ok_info
        ok_len = len(ok_info)
        pending = conn.pending
        latency = result.latency_us
        unpack = _FIXED.unpack_from
        while end - pos >= 14:
            length, _magic, _flags, seq, words = unpack(buf, pos)
            total = length + 4
            if end - pos < total:
                break
            sent = pending.pop(seq, None)
            if sent is not None:
                done += 1
                info_end = pos + 14 + (words << 2)
                if words << 2 == ok_len and buf.startswith(ok_info, pos + 14):
                    result.ok += 1
                    us = (now - sent) // 1000
                    latency[us] = latency.get(us, 0) + 1
                    if result.sample is None:
                        result.sample = bytes(buf[info_end : pos + total])
                else:
                    self._other_reply(bytes(buf[pos + 14 : info_end]), buf, info_end, pos + total)
                    us = (now - sent) // 1000
                    latency[us] = latency.get(us, 0) + 1
            pos += total
        conn.inbuf = buf[pos:] if pos < end else b""
        if done:
            self._send(conn, done, now)

    def _other_reply(self, info: bytes, buf: bytes, start: int, end: int) -> None:
        """A reply that is not a plain success: an exception (counted by status) or a reply
        with metadata (a success)."""
        try:
            msg_type, _m, _s, _t, status, _text, _meta, _frame = parse_info(info)
        except ValueError:
            self._error("INTERNAL (malformed reply)", 1)
            return
        if msg_type is MessageType.EXCEPTION:
            try:
                name = StatusCode(status).name
            except ValueError:
                name = f"status {status}"
            self._error(name, 1)
        else:
            self.result.ok += 1
            if self.result.sample is None:
                self.result.sample = bytes(buf[start:end])

    def _error(self, name: str, count: int) -> None:
        errors = self.result.errors
        errors[name] = errors.get(name, 0) + count

    def _lost(self, conn: _Conn, exc: OSError | None) -> None:
        """The connection died: its calls fail; it takes no more."""
        if conn.dead:
            return
        conn.dead = True
        cause = "closed by the server" if exc is None else (exc.strerror or str(exc)).lower()
        if exc is not None and exc.errno == errno.ECONNRESET:
            cause = "reset by the server"
        self.result.messages.append(f"a connection was lost: {cause}")
        if conn.pending:
            self._error("UNAVAILABLE (connection lost)", len(conn.pending))
            conn.pending.clear()
        try:
            self.poller.unregister(conn.sock.fileno())
        except (OSError, ValueError):
            pass

    def _report(self) -> None:
        errors = sum(self.result.errors.values())
        slot = 2 * self.config.index
        self.progress[slot] = self.result.ok + errors
        self.progress[slot + 1] = errors
