"""Retries: only calls that provably never reached a handler, or idempotent ones, are retried."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import rpcpoll
from rpcpoll.client import RetryPolicy
from rpcpoll.protocol.frame import FrameReader, MessageType, write_reply
from rpcpoll.transport import LinkBuffer


class FlakyServer:
    """A raw TCP server that reads each request and, for the first `drops` of them, closes the
    connection without answering (as a crashing server would); later requests get a reply."""

    def __init__(self, reply_payload: bytes, drops: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.reply_payload = reply_payload
        self.drops = drops
        self.requests = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        buf = LinkBuffer()
        reader = FrameReader()
        while True:
            frame = reader.read(buf)
            if frame is None:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf.write_binary(data)
                buf.flush()
                continue
            assert frame.message_type is MessageType.CALL
            self.requests += 1
            if self.requests <= self.drops:
                return  # close without a reply
            out = LinkBuffer()
            write_reply(out, frame.seq_id, self.reply_payload)
            out.flush()
            conn.sendall(bytes(out))

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the thread
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def flaky(rpctest: ModuleType) -> Iterator[Any]:
    servers: list[FlakyServer] = []

    def make(drops: int) -> FlakyServer:
        server = FlakyServer(rpctest.Resp(text="ok").to_bytes(), drops)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def test_an_idempotent_method_is_retried_after_the_connection_dies(
    rpctest: ModuleType, flaky: Any
) -> None:
    server = flaky(drops=1)
    with rpctest.TestServiceClient(server.address, timeout=5) as client:
        assert client.peek(rpctest.Req()).text == "ok"  # Peek is marked IDEMPOTENT
    assert server.requests == 2


def test_a_non_idempotent_method_is_not_retried_once_it_may_have_run(
    rpctest: ModuleType, flaky: Any
) -> None:
    server = flaky(drops=1)
    with rpctest.TestServiceClient(server.address, timeout=5) as client:
        with pytest.raises(rpcpoll.UnavailableError):
            client.count(rpctest.Req())
        assert server.requests == 1
        assert client.count(rpctest.Req()).text == "ok"  # the next call uses a new connection
    assert server.requests == 2


def test_methods_can_be_declared_idempotent_by_the_caller(rpctest: ModuleType, flaky: Any) -> None:
    server = flaky(drops=1)
    with rpctest.TestServiceClient(
        server.address, timeout=5, idempotent_methods=["rpctest.TestService/Count"]
    ) as client:
        assert client.count(rpctest.Req()).text == "ok"
    assert server.requests == 2


def test_retries_stop_after_max_attempts(rpctest: ModuleType, flaky: Any) -> None:
    server = flaky(drops=10)
    policy = RetryPolicy(max_attempts=3, backoff=0.001)
    with (
        rpctest.TestServiceClient(server.address, timeout=5, retry=policy) as client,
        pytest.raises(rpcpoll.UnavailableError),
    ):
        client.peek(rpctest.Req())
    assert server.requests == 3
