"""LoopPoller: a poller that an asyncio event loop drives (transport/loop_poller.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from transport_testutil import recv_exactly

from rpcpoll.transport import Connection, EventLoop, create_listener
from rpcpoll.transport.loop_poller import LoopPoller
from rpcpoll.transport.poller import on_poller_thread

pytestmark = pytest.mark.timeout(30)


class LoopThread:
    """An asyncio event loop running on a thread of its own (default loop or uvloop)."""

    def __init__(self, new_loop: Any = asyncio.new_event_loop) -> None:
        self.loop = new_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-loop", daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _loops() -> list[Any]:
    loops: list[Any] = [asyncio.new_event_loop]
    try:
        import uvloop

        loops.append(uvloop.new_event_loop)
    except ImportError:
        pass
    return loops


@pytest.fixture(params=_loops(), ids=lambda f: f.__module__.split(".")[0])
def loop_thread(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    thread = LoopThread(request.param)
    yield thread
    thread.stop()


def test_an_event_loop_serves_connections_on_its_own_thread(loop_thread: LoopThread) -> None:
    poller = LoopPoller(loop_thread.loop)
    seen: list[tuple[int, bool]] = []

    def echo(_ctx: Any, conn: Connection) -> None:
        seen.append((threading.get_ident(), on_poller_thread()))
        conn.write(conn.next(len(conn.reader())))

    loop = EventLoop(echo, run_on_poller=True, poller=poller)
    listener = create_listener("tcp", "127.0.0.1:0")
    server = threading.Thread(target=loop.serve, args=(listener,), daemon=True)
    server.start()
    try:
        host, port = listener.address
        with socket.create_connection((host, port), timeout=5) as sock:
            for i in range(20):
                data = b"ping %d" % i
                sock.sendall(data)
                assert recv_exactly(sock, len(data)) == data
        assert seen and all(ident == loop_thread.thread.ident for ident, _ in seen)
        assert all(flag for _, flag in seen)  # the loop's thread counts as a poller thread
    finally:
        assert loop.shutdown(5)
        server.join(5)
        listener.close()
        poller.close()


def test_callbacks_and_timers_from_other_threads_run_on_the_loop(loop_thread: LoopThread) -> None:
    poller = LoopPoller(loop_thread.loop)
    ran: list[tuple[str, int]] = []
    done = threading.Event()
    try:
        poller.call_soon(lambda: ran.append(("soon", threading.get_ident())))
        started = time.monotonic()
        poller.call_later(0.05, lambda: (ran.append(("later", threading.get_ident())), done.set()))
        cancelled = poller.call_later(0.01, lambda: ran.append(("cancelled", 0)))
        cancelled.cancel()
        assert done.wait(5)
        assert time.monotonic() - started >= 0.05
        assert [name for name, _ in ran] == ["soon", "later"]
        assert {ident for _, ident in ran} == {loop_thread.thread.ident}
    finally:
        poller.close()


def test_callbacks_posted_from_the_loop_thread_run_in_the_next_round(
    loop_thread: LoopThread,
) -> None:
    poller = LoopPoller(loop_thread.loop)

    async def post() -> list[str]:
        order: list[str] = []
        finished = asyncio.get_running_loop().create_future()
        poller.call_soon(lambda: order.append("posted"))
        poller.call_later(0.01, lambda: (order.append("timer"), finished.set_result(None)))
        order.append("after posting")
        await finished
        return order

    try:
        assert loop_thread.run(post()) == ["after posting", "posted", "timer"]
    finally:
        poller.close()


def test_a_poller_made_before_the_loop_runs_starts_with_it() -> None:
    loop = asyncio.new_event_loop()
    poller = LoopPoller(loop)
    ran = threading.Event()
    poller.call_soon(ran.set)
    try:
        loop.run_until_complete(asyncio.sleep(0.05))
        assert ran.is_set()
    finally:
        poller.close()
        loop.close()
