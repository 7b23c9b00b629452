"""Multiplexed client connections (`mux=N`): many threads, few connections, replies out of order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from testutil import wait_until

import rpcpoll
from rpcpoll.client import NO_RETRY, ClientChannel
from rpcpoll.client.mux import MuxConnection, MuxTransport
from rpcpoll.server import Server

from .conftest import Recorder


@pytest.fixture
def server(handler: Any, serve: Callable[..., Server]) -> Server:
    return serve(handler)


@pytest.fixture
def mux_client(rpctest: ModuleType, server: Server) -> Iterator[Any]:
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=2, warmup=1) as made:
        yield made


def mux_connections(client: Any) -> list[MuxConnection]:
    channel: ClientChannel = client.channel
    (endpoint,) = channel._endpoints_by_target().values()
    transport = endpoint.transport
    assert isinstance(transport, MuxTransport)
    return transport.connections


def test_many_threads_share_the_mux_connections(
    rpctest: ModuleType, mux_client: Any, server: Server
) -> None:
    def call(i: int) -> str:
        text = f"call {i}"
        reply = mux_client.echo(rpctest.Req(text=text, blob=bytes([i % 256]) * (i * 37 % 5000)))
        assert reply.blob == bytes([i % 256]) * (i * 37 % 5000)
        return str(reply.text)

    with ThreadPoolExecutor(16) as workers:
        results = list(workers.map(call, range(2000)))
    assert results == [f"call {i}" for i in range(2000)]
    assert len(mux_connections(mux_client)) == 2
    assert len(server.connections()) == 2


def test_a_slow_call_does_not_hold_up_others_on_the_same_connection(
    rpctest: ModuleType, server: Server
) -> None:
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=1) as client:
        client.echo(rpctest.Req(text="warm"))
        with ThreadPoolExecutor(1) as workers:
            slow = workers.submit(client.sleep, rpctest.Req(text="slow", sleep_ms=1000))
            time.sleep(0.05)
            started = time.monotonic()
            for i in range(20):
                assert client.echo(rpctest.Req(text=str(i))).text == str(i)
            elapsed = time.monotonic() - started
            assert not slow.done()
            assert slow.result(5).text == "slow"
        assert elapsed < 0.5
        assert len(server.connections()) == 1


def test_a_timed_out_call_leaves_the_connection_in_use_and_its_late_reply_is_dropped(
    rpctest: ModuleType, server: Server, recorder: Recorder
) -> None:
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=1) as client:
        with pytest.raises(rpcpoll.DeadlineExceededError):
            client.sleep(rpctest.Req(text="late", sleep_ms=300), timeout=0.05)
        (conn,) = mux_connections(client)
        results = [client.echo(rpctest.Req(text=f"x{i}")).text for i in range(100)]
        time.sleep(0.35)  # the late reply arrives meanwhile: nobody waits for it
        results += [client.echo(rpctest.Req(text=f"y{i}")).text for i in range(100)]
        assert results == [f"x{i}" for i in range(100)] + [f"y{i}" for i in range(100)]
        assert mux_connections(client) == [conn] and conn.pending == 0


def test_a_dead_connection_fails_its_pending_calls_at_once_and_the_next_call_redials(
    rpctest: ModuleType, server: Server, recorder: Recorder
) -> None:
    with rpctest.TestServiceClient(server.address, timeout=10.0, mux=1) as client:
        client.echo(rpctest.Req(text="warm"))
        with ThreadPoolExecutor(4) as workers:
            calls = [
                workers.submit(client.sleep, rpctest.Req(text=str(i), sleep_ms=5000))
                for i in range(4)
            ]
            assert wait_until(lambda: len(recorder.contexts) == 4)
            started = time.monotonic()
            for conn in server.connections():
                conn.close()
            for call in calls:
                with pytest.raises(rpcpoll.UnavailableError):
                    call.result(5)  # Sleep is not idempotent: never retried
            assert time.monotonic() - started < 2.0  # not the 10 s deadline
        assert client.echo(rpctest.Req(text="again")).text == "again"


def test_an_idempotent_call_is_retried_when_its_connection_dies(
    rpctest: ModuleType, server: Server, recorder: Recorder
) -> None:
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=1) as client:
        client.echo(rpctest.Req(text="warm"))
        for conn in server.connections():
            conn.close()
        # The client may not have seen the close yet: whether the first attempt finds the
        # connection dead or loses it after writing, an idempotent call is retried.
        assert client.peek(rpctest.Req(text="p")).count >= 1


def test_writes_queued_while_another_thread_writes_go_out_together(
    rpctest: ModuleType, mux_client: Any
) -> None:
    conns = mux_connections(mux_client)
    assert len(conns) == 2  # warmed up: the whole ring is connected
    for conn in conns:
        conn._write_lock.acquire()  # as if another thread were in the middle of a write
    flushes = []
    for conn in conns:
        real_flush = conn._conn.flush

        def counting_flush(real: Any = real_flush) -> None:
            flushes.append(1)
            real()

        conn._conn.flush = counting_flush  # type: ignore[method-assign]
    with ThreadPoolExecutor(8) as workers:
        calls = [workers.submit(mux_client.echo, rpctest.Req(text=str(i))) for i in range(8)]
        assert wait_until(lambda: sum(len(conn._queue) for conn in conns) == 8)
        for conn in conns:  # the "other thread" finishes: it sends what was queued meanwhile
            conn._write_lock.release()
            conn._write_queued(None)
        assert [call.result(5).text for call in calls] == [str(i) for i in range(8)]
    assert len(flushes) == 2


def test_server_shutdown_retires_mux_connections(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], recorder: Recorder
) -> None:
    server = serve(handler)
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=2) as client:
        client.echo(rpctest.Req(text="warm"))
        with ThreadPoolExecutor(10) as workers:
            calls = [
                workers.submit(client.sleep, rpctest.Req(text=str(i), sleep_ms=200))
                for i in range(10)
            ]
            assert wait_until(lambda: len(recorder.contexts) == 10)
            stopper = threading.Thread(target=server.shutdown, args=(5.0,))
            stopper.start()
            assert [call.result(5).text for call in calls] == [str(i) for i in range(10)]
            stopper.join(10)
        assert wait_until(lambda: not mux_connections(client))  # crrst: none handed out again
        with pytest.raises(rpcpoll.UnavailableError):
            client.echo(rpctest.Req(text="server gone"), timeout=1.0)


def test_mux_over_a_unix_socket(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], tmp_path: Any
) -> None:
    server = serve(handler, address=f"unix:{tmp_path / 'mux.sock'}")
    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=3) as client:
        with ThreadPoolExecutor(6) as workers:
            replies = workers.map(lambda i: client.echo(rpctest.Req(text=str(i))), range(60))
            texts = [reply.text for reply in replies]
        assert texts == [str(i) for i in range(60)]
        assert len(server.connections()) == 3


def test_mux_rejects_a_negative_size(rpctest: ModuleType, server: Server) -> None:
    with pytest.raises(ValueError, match="negative"):
        rpctest.TestServiceClient(server.address, mux=-1)


def test_mux_true_uses_the_default_ring_size(rpctest: ModuleType, server: Server) -> None:
    from rpcpoll.client.channel import DEFAULT_MUX_CONNECTIONS

    with rpctest.TestServiceClient(server.address, timeout=5.0, mux=True, warmup=1) as client:
        assert len(mux_connections(client)) == DEFAULT_MUX_CONNECTIONS
        assert client.echo(rpctest.Req(text="ok")).text == "ok"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x10\xde\xad" + b"\x00" * 14,  # wrong magic
        b"\x7f\xff\xff\xff\x10\x00" + b"\x00" * 14,  # a length far over the frame limit
    ],
    ids=["bad-magic", "oversized"],
)
def test_a_server_that_sends_garbage_fails_the_calls_cleanly(
    rpctest: ModuleType, garbage: bytes
) -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def answer_with_garbage() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.recv(65536)
        conn.sendall(garbage)

    thread = threading.Thread(target=answer_with_garbage)
    thread.start()
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with rpctest.TestServiceClient(address, timeout=5.0, mux=1, retry=NO_RETRY) as client:
            started = time.monotonic()
            with pytest.raises(rpcpoll.UnavailableError):
                client.echo(rpctest.Req(text="x"))
            assert time.monotonic() - started < 2.0  # failed at once, not at the deadline
            assert mux_connections(client) == []  # the connection was closed
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
