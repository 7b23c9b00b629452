"""Helpers of the hostile-client suite: a test handler, raw frames, servers in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceHandler
from rpcpoll.protocol.frame import (
    FIXED_SIZE,
    FLAG_OUT_OF_ORDER,
    Frame,
    RequestTemplate,
    decode_frame,
)
from rpcpoll.service import CallContext
from rpcpoll.transport.linkbuffer import LinkBuffer

SERVING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")
ECHO = RequestTemplate("echo.EchoService", "Echo")


class Gate:
    """What the test handler shares with the test: a gate blocking calls, and a count of
    executions per request message (to check that no call ran twice)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.runs: dict[str, int] = {}
        self.entered = 0

    def ran(self, key: str) -> None:
        with self.lock:
            self.runs[key] = self.runs.get(key, 0) + 1


class HostileHandler(EchoServiceHandler):
    """Echo, except: message "block" waits for the gate (at most 10 s), "big:N" answers N bytes,
    and every call is counted by message."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        gate = self.gate
        gate.ran(request.message)
        if request.message == "block":
            with gate.lock:
                gate.entered += 1
            gate.open.wait(10)
        elif request.message.startswith("big:"):
            return EchoResponse(payload=b"b" * int(request.message[4:]))
        return EchoResponse(message=request.message, payload=request.payload)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def call_frame(
    seq_id: int,
    message: str = "hi",
    payload: bytes = b"",
    *,
    out_of_order: bool = False,
    metadata: dict[str, str] | None = None,
    timeout_ms: int | None = None,
) -> bytes:
    """The bytes of one Echo call frame."""
    buf = LinkBuffer()
    body = EchoRequest(message=message, payload=payload).to_bytes()
    flags = FLAG_OUT_OF_ORDER if out_of_order else 0
    ECHO.write(buf, seq_id, body, timeout_ms, metadata, flags)
    buf.flush()
    data = bytes(buf)
    buf.close()
    return data


def read_frame(sock: socket.socket) -> Frame | None:
    """The next frame from a blocking socket, or None at EOF."""
    head = recv_exactly(sock, FIXED_SIZE)
    if head is None:
        return None
    rest = recv_exactly(sock, int.from_bytes(head[:4], "big") + 4 - FIXED_SIZE)
    if rest is None:
        return None
    return decode_frame(head + rest)


def recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ servers in a subprocess


class ServeProcess:
    """`rpcpoll serve` (the bundled echo) in its own process, for RSS and signal tests."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        self.log: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = SERVING.search(line)
            if match:
                self.address = match["address"]
                # keep draining stderr so the server never blocks on a full pipe
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return
        self.stop()
        pytest.fail("rpcpoll serve did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def status(self, field: str) -> int:
        """A number from /proc/PID/status (VmRSS and VmHWM in KiB, Threads)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def rss_mib(self) -> float:
        return self.status("VmRSS") / 1024

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            drainer.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode
