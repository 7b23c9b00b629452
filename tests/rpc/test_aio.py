"""asyncio: async handlers on the server, async generated clients, and both with sync peers."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from testutil import wait_until

import rpcpoll
from rpcpoll.protocol.frame import (
    FLAG_OUT_OF_ORDER,
    Frame,
    MessageType,
    decode_frame,
    encode_frame,
)
from rpcpoll.server import Server
from rpcpoll.service import CallContext

pytestmark = pytest.mark.timeout(60)


def _loop_factories() -> list[Any]:
    factories: list[Any] = [asyncio.new_event_loop]
    try:
        import uvloop

        factories.append(uvloop.new_event_loop)
    except ImportError:
        pass
    return factories


LOOPS = _loop_factories()
LOOP_IDS = [f.__module__.split(".")[0] for f in LOOPS]


def run(coro: Any, new_loop: Any = asyncio.new_event_loop) -> Any:
    """Run `coro` to completion on a fresh loop made by `new_loop`."""
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class Seen:
    """What the async handler saw."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.started: list[str] = []
        self.threads: set[int] = set()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def async_handler(rpctest: ModuleType, seen: Seen) -> Any:
    Resp = rpctest.Resp

    class AsyncTestHandler(rpctest.TestServiceAsyncHandler):  # type: ignore[misc, name-defined]
        async def echo(self, request: Any, context: CallContext) -> Any:
            seen.threads.add(threading.get_ident())
            return Resp(text=request.text, blob=request.blob)

        async def fail(self, request: Any, context: CallContext) -> Any:
            raise rpcpoll.RpcError(request.code, request.text)

        async def crash(self, request: Any, context: CallContext) -> Any:
            if request.text == "cancel-myself":
                raise asyncio.CancelledError()
            raise ValueError("secret internal detail")

        async def sleep(self, request: Any, context: CallContext) -> Any:
            seen.started.append(request.text)
            try:
                await asyncio.sleep(request.sleep_ms / 1000)
            except asyncio.CancelledError:
                seen.cancelled.append(request.text)
                raise
            remaining = context.time_remaining()
            return Resp(text=request.text, remaining=-1.0 if remaining is None else remaining)

        async def meta(self, request: Any, context: CallContext) -> Any:
            context.set_reply_metadata("echo", request.text)
            return Resp(metadata=dict(context.metadata))

    return AsyncTestHandler()


@pytest.fixture(params=LOOPS, ids=LOOP_IDS)
def aserver(
    request: pytest.FixtureRequest, async_handler: Any, serve: Callable[..., Server]
) -> Server:
    """A server running the async test handler on its own event loop (asyncio or uvloop)."""
    return serve(async_handler, uvloop=request.param is not asyncio.new_event_loop)


# -- the server ----------------------------------------------------------------------------------


def test_async_handlers_answer_a_sync_client_from_the_event_loop(
    rpctest: ModuleType, aserver: Server, seen: Seen
) -> None:
    assert aserver.mode == "asyncio"
    with rpctest.TestServiceClient(aserver.address, timeout=5.0) as client:
        for i in range(20):
            assert client.echo(rpctest.Req(text=str(i), blob=b"x" * i)).blob == b"x" * i
        reply_metadata: dict[str, str] = {}
        got = client.meta(
            rpctest.Req(text="hi"), metadata={"k": "v"}, reply_metadata=reply_metadata
        )
        assert got.metadata == {"k": "v"} and reply_metadata == {"echo": "hi"}
    assert len(seen.threads) == 1 and threading.get_ident() not in seen.threads


@pytest.mark.parametrize(
    ("method", "text", "code", "message"),
    [
        ("fail", "not here", rpcpoll.StatusCode.NOT_FOUND, "not here"),
        (
            "crash",
            "",
            rpcpoll.StatusCode.INTERNAL,
            "rpctest.TestService/Crash failed on the server",
        ),
        ("crash", "cancel-myself", rpcpoll.StatusCode.CANCELLED, "was cancelled on the server"),
    ],
)
def test_async_handler_errors_follow_the_error_contract(
    rpctest: ModuleType, aserver: Server, method: str, text: str, code: int, message: str
) -> None:
    with rpctest.TestServiceClient(aserver.address, timeout=5.0) as client:
        with pytest.raises(rpcpoll.RpcError) as caught:
            getattr(client, method)(rpctest.Req(text=text, code=rpcpoll.StatusCode.NOT_FOUND))
        assert caught.value.code == code and message in caught.value.message
        assert "secret" not in caught.value.message
        assert client.echo(rpctest.Req(text="after")).text == "after"  # the connection lives


def test_a_deadline_cancels_the_async_handler_and_answers_deadline_exceeded(
    rpctest: ModuleType, aserver: Server, seen: Seen
) -> None:
    with rpctest.TestServiceClient(aserver.address, timeout=5.0) as client:
        started = time.monotonic()
        with pytest.raises(rpcpoll.DeadlineExceededError):
            client.sleep(rpctest.Req(text="slow", sleep_ms=5000), timeout=0.2)
        assert time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    while "slow" not in seen.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen.cancelled == ["slow"]  # the server's own deadline timer cancelled the task


def test_pipelined_in_order_calls_are_answered_in_order(
    rpctest: ModuleType, aserver: Server
) -> None:
    # No out-of-order flag: replies must come in request order although later calls finish
    # first (the first sleeps 300 ms, the others not at all).
    host, port = aserver.address.rsplit(":", 1)
    frames = [
        Frame(seq, MessageType.CALL, "Sleep", "rpctest.TestService",
              rpctest.Req(text=str(seq), sleep_ms=300 if seq == 1 else 0).to_bytes())
        for seq in range(1, 11)
    ]  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"".join(encode_frame(frame) for frame in frames))
        order = [read_frame(sock).seq_id for _ in frames]
    assert order == list(range(1, 11))


def test_out_of_order_calls_are_answered_as_they_finish(
    rpctest: ModuleType, aserver: Server
) -> None:
    host, port = aserver.address.rsplit(":", 1)
    frames = [
        Frame(seq, MessageType.CALL, "Sleep", "rpctest.TestService",
              rpctest.Req(text=str(seq), sleep_ms=400 if seq == 1 else 0).to_bytes(),
              flags=FLAG_OUT_OF_ORDER)
        for seq in range(1, 6)
    ]  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"".join(encode_frame(frame) for frame in frames))
        order = [read_frame(sock).seq_id for _ in frames]
    assert order[-1] == 1 and sorted(order) == [1, 2, 3, 4, 5]


REQUEST_TEXT: contextvars.ContextVar[str] = contextvars.ContextVar("request_text", default="")


@pytest.mark.parametrize("new_loop", LOOPS, ids=LOOP_IDS)
def test_an_async_handler_is_a_task_of_its_own_from_its_first_step(
    rpctest: ModuleType, serve: Callable[..., Server], new_loop: Any
) -> None:
    """Calls start before the loop's next round (eagerly), yet each runs as a task: in its
    first step and after suspending, `current_task()` is that task, `asyncio.timeout` works,
    and a context variable it sets is its own."""
    seen: list[tuple[bool, bool, str, str]] = []
    timeout = getattr(asyncio, "timeout", None)  # Python 3.11+

    class Handler(rpctest.TestServiceAsyncHandler):  # type: ignore[misc, name-defined]
        async def echo(self, request: Any, context: CallContext) -> Any:
            task = asyncio.current_task()
            before = REQUEST_TEXT.get()
            REQUEST_TEXT.set(request.text)
            if timeout is not None:
                async with timeout(5.0):
                    if request.text.startswith("suspend"):
                        await asyncio.sleep(0.01)
            elif request.text.startswith("suspend"):
                await asyncio.wait_for(asyncio.sleep(0.01), 5.0)
            after = asyncio.current_task()
            seen.append((task is not None, task is after, before, REQUEST_TEXT.get()))
            return rpctest.Resp(text=request.text)

    server = serve(Handler(), uvloop=new_loop is not asyncio.new_event_loop)
    with rpctest.TestServiceClient(server.address, timeout=5.0) as client:
        texts = ["at once", "suspend 1", "at once again", "suspend 2"]
        assert [client.echo(rpctest.Req(text=text)).text for text in texts] == texts
    assert seen == [(True, True, "", text) for text in texts]


def test_sync_and_async_handlers_share_a_server(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    # The sync handler of the fixtures and an async one of another service cannot share a
    # service name, so the async side here is the bundled echo service.
    from rpcpoll.examples.echo import AsyncEchoHandler
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    server = serve(handler, AsyncEchoHandler())
    assert server.mode == "asyncio"
    with (
        rpctest.TestServiceClient(server.address, timeout=5.0) as sync_side,
        EchoServiceClient(server.address, timeout=5.0) as async_side,
    ):
        for i in range(10):
            assert sync_side.echo(rpctest.Req(text=str(i))).text == str(i)
            assert async_side.echo(EchoRequest(message=str(i))).message == str(i)
        # a sync handler that blocks runs on the worker pool: async calls go on meanwhile
        blocked = threading.Thread(
            target=lambda: sync_side.sleep(rpctest.Req(text="block", sleep_ms=500))
        )
        blocked.start()
        time.sleep(0.05)
        started = time.monotonic()
        assert async_side.echo(EchoRequest(message="quick")).message == "quick"
        assert time.monotonic() - started < 0.3
        blocked.join(5)


def test_a_handler_that_blocks_the_loop_delays_only_its_own_server(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    class Blocking(rpctest.TestServiceAsyncHandler):  # type: ignore[misc, name-defined]
        async def sleep(self, request: Any, context: CallContext) -> Any:
            time.sleep(request.sleep_ms / 1000)  # a bug: blocks the event loop
            return rpctest.Resp(text=request.text)

        async def echo(self, request: Any, context: CallContext) -> Any:
            return rpctest.Resp(text=request.text)

    blocking = serve(Blocking())
    other = serve(handler)  # a sync server on the process's pollers
    with (
        rpctest.TestServiceClient(blocking.address, timeout=5.0) as client,
        rpctest.TestServiceClient(other.address, timeout=5.0) as other_client,
    ):
        stuck = threading.Thread(target=lambda: client.sleep(rpctest.Req(text="x", sleep_ms=800)))
        stuck.start()
        time.sleep(0.1)
        started = time.monotonic()
        assert other_client.echo(rpctest.Req(text="fine")).text == "fine"
        assert time.monotonic() - started < 0.3  # other servers are not stalled
        with rpctest.TestServiceClient(blocking.address, timeout=5.0) as second:
            started = time.monotonic()
            assert second.echo(rpctest.Req(text="late")).text == "late"
            assert time.monotonic() - started > 0.3  # this one waited for the loop
        stuck.join(5)


def test_graceful_shutdown_drains_async_calls(
    rpctest: ModuleType, async_handler: Any, seen: Seen
) -> None:
    server = Server("127.0.0.1:0", async_handler)
    server.start()
    results: list[str] = []
    errors: list[Exception] = []

    def call(i: int) -> None:
        try:
            with rpctest.TestServiceClient(server.address, timeout=5.0) as client:
                results.append(client.sleep(rpctest.Req(text=str(i), sleep_ms=500)).text)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    # Every call is in its handler first: what is drained is calls in flight. A connection
    # still idle 100 ms after the server stops accepting is closed, so a slow thread's
    # request could meet a closed connection (as with Kitex, which waits as long).
    wait_until(lambda: len(seen.started) == 10, 5, "every call to be in its handler")
    assert server.shutdown(5.0) is True
    for t in threads:
        t.join(5)
    assert not errors and sorted(results) == sorted(str(i) for i in range(10))


def test_shutdown_keeps_a_connection_open_until_its_queued_reply_is_sent(
    rpctest: ModuleType, async_handler: Any, seen: Seen
) -> None:
    """An async call's reply goes out in the loop's next round; the call no longer counts by
    then. Here the loop is held in between (by work scheduled before that round) while the
    server shuts down: the connection must stay open until the reply is written."""

    class HoldsTheLoopAfterReturning(type(async_handler)):  # type: ignore[misc]
        async def sleep(self, request: Any, context: CallContext) -> Any:
            seen.started.append(request.text)
            await asyncio.sleep(request.sleep_ms / 1000)
            # A task's done callbacks run a round after it ends (the server's one counts the
            # call out and queues its reply, to be flushed a round later); this blocking sleep
            # is queued in that same round just before it, so it runs before the flush.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, time.sleep, 0.5)
            return rpctest.Resp(text=request.text)

    server = Server("127.0.0.1:0", HoldsTheLoopAfterReturning())
    server.start()
    outcome: list[Any] = []

    def call() -> None:
        with rpctest.TestServiceClient(server.address, timeout=5.0) as client:
            try:
                outcome.append(client.sleep(rpctest.Req(text="held", sleep_ms=300)).text)
            except rpcpoll.RpcError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: seen.started, 5, "the call to be in its handler")
    assert server.shutdown(5.0) is True  # its 100 ms grace ends while the call sleeps
    caller.join(5)
    assert outcome == ["held"]


@pytest.mark.parametrize("new_loop", LOOPS, ids=LOOP_IDS)
def test_a_server_on_the_applications_loop(
    rpctest: ModuleType, async_handler: Any, seen: Seen, new_loop: Any
) -> None:
    async def main() -> None:
        server = Server("127.0.0.1:0", async_handler, loop=asyncio.get_running_loop())
        server.start()  # returns at once: the loop serves it while this coroutine awaits
        try:
            async with rpctest.TestServiceAsyncClient(server.address, timeout=5.0) as client:
                replies = await asyncio.gather(
                    *(client.echo(rpctest.Req(text=str(i))) for i in range(50))
                )
                assert [reply.text for reply in replies] == [str(i) for i in range(50)]
                slow = asyncio.ensure_future(client.sleep(rpctest.Req(text="s", sleep_ms=200)))
                await asyncio.sleep(0.05)
                closing = asyncio.ensure_future(server.aclose(5.0))
                assert (await slow).text == "s"  # drained while the loop kept running
                assert await closing is True
        finally:
            await server.aclose(1.0)
        assert seen.threads == {threading.get_ident()}  # every handler ran on this loop

    run(main(), new_loop)


# -- in-process ----------------------------------------------------------------------------------


def test_async_local_channel_serves_async_and_sync_handlers(
    rpctest: ModuleType, async_handler: Any, handler: Any
) -> None:
    from rpcpoll.examples.echo import EchoHandler
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceAsyncClient
    from rpcpoll.service import AsyncLocalChannel

    async def main() -> None:
        channel = AsyncLocalChannel(async_handler, EchoHandler())
        client = rpctest.TestServiceAsyncClient(channel)
        assert (await client.echo(rpctest.Req(text="a"))).text == "a"
        reply_metadata: dict[str, str] = {}
        got = await client.meta(
            rpctest.Req(text="m"), metadata={"k": "v"}, reply_metadata=reply_metadata
        )
        assert got.metadata == {"k": "v"} and reply_metadata == {"echo": "m"}
        with pytest.raises(rpcpoll.NotFoundError) as raised:
            await client.fail(rpctest.Req(text="gone", code=rpcpoll.StatusCode.NOT_FOUND))
        assert raised.value.__cause__ is None and raised.value.__context__ is None
        with pytest.raises(rpcpoll.InternalError) as crashed:
            await client.crash(rpctest.Req())
        assert "secret" not in str(crashed.value)
        echo = EchoServiceAsyncClient(channel)  # a sync handler, run off the loop
        assert (await echo.echo(EchoRequest(message="x"))).message == "x"
        channel.close()
        with pytest.raises(rpcpoll.UnavailableError):
            await echo.echo(EchoRequest(message="x"))

    run(main())


def test_async_local_channel_cancels_the_handler_at_the_deadline_and_with_the_caller(
    rpctest: ModuleType, async_handler: Any, seen: Seen
) -> None:
    from rpcpoll.service import AsyncLocalChannel

    async def main() -> None:
        client = rpctest.TestServiceAsyncClient(AsyncLocalChannel(async_handler))
        with pytest.raises(rpcpoll.DeadlineExceededError):
            await client.sleep(rpctest.Req(text="late", sleep_ms=2000), timeout=0.05)
        call = asyncio.ensure_future(client.sleep(rpctest.Req(text="gone", sleep_ms=2000)))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0)  # the handler's task sees its cancellation
        assert seen.cancelled == ["late", "gone"]

    run(main())


def test_local_channels_refuse_what_is_not_a_handler(
    rpctest: ModuleType, async_handler: Any
) -> None:
    from rpcpoll.service import AsyncLocalChannel, LocalChannel

    with pytest.raises(TypeError, match="not a generated handler"):
        LocalChannel(async_handler)  # a sync channel cannot await an async handler
    with pytest.raises(TypeError, match="not a generated handler"):
        AsyncLocalChannel(object())  # type: ignore[arg-type]


# -- the client ----------------------------------------------------------------------------------


@pytest.mark.parametrize("new_loop", LOOPS, ids=LOOP_IDS)
def test_an_async_client_calls_a_sync_server(
    rpctest: ModuleType, client: Any, new_loop: Any
) -> None:
    aclient = rpctest.TestServiceAsyncClient(client.server.address, timeout=5.0)  # no loop yet

    async def main() -> None:
        async with aclient:
            assert (await aclient.echo(rpctest.Req(text="hi"))).text == "hi"
            reply_metadata: dict[str, str] = {}
            got = await aclient.meta(
                rpctest.Req(text="m"), metadata={"a": "b"}, reply_metadata=reply_metadata
            )
            assert got.metadata == {"a": "b"} and reply_metadata == {"echo": "m"}
            with pytest.raises(rpcpoll.NotFoundError):
                await aclient.fail(rpctest.Req(text="gone", code=rpcpoll.StatusCode.NOT_FOUND))
            with pytest.raises(rpcpoll.InternalError):
                await aclient.crash(rpctest.Req())

    run(main(), new_loop)


@pytest.mark.parametrize("new_loop", LOOPS, ids=LOOP_IDS)
def test_a_thousand_tasks_share_a_few_connections(
    rpctest: ModuleType, aserver: Server, new_loop: Any
) -> None:
    async def main() -> list[str]:
        async with rpctest.TestServiceAsyncClient(aserver.address, timeout=10.0) as aclient:
            replies = await asyncio.gather(
                *(aclient.echo(rpctest.Req(text=str(i))) for i in range(1000))
            )
            connections = len(aserver.connections())
            assert 1 <= connections <= rpcpoll.client.DEFAULT_MUX_CONNECTIONS
            return [reply.text for reply in replies]

    assert run(main(), new_loop) == [str(i) for i in range(1000)]


def test_the_ring_grows_only_when_every_connection_is_half_full(
    rpctest: ModuleType, aserver: Server
) -> None:
    """A connection's batch costs one send and one receive whatever its size: calls share
    one connection up to half of max_calls_per_connection waiting, then the ring grows."""

    async def main() -> None:
        async with rpctest.TestServiceAsyncClient(
            aserver.address, timeout=10.0, max_calls_per_connection=20
        ) as aclient:

            async def wave(calls: int) -> int:
                requests = [rpctest.Req(text=str(i), sleep_ms=300) for i in range(calls)]
                waiting = asyncio.gather(*(aclient.sleep(request) for request in requests))
                await asyncio.sleep(0.15)  # every call is waiting now
                connections = len(aserver.connections())
                await waiting
                return connections

            assert await wave(10) == 1
            assert await wave(25) == 2  # the 11th call dialed; those after it waited for it

    run(main())


def test_cancelling_the_task_cancels_the_call_on_the_server(
    rpctest: ModuleType, aserver: Server, seen: Seen
) -> None:
    async def main() -> None:
        async with rpctest.TestServiceAsyncClient(aserver.address, timeout=10.0) as aclient:
            task = asyncio.ensure_future(aclient.sleep(rpctest.Req(text="doomed", sleep_ms=5000)))
            while "doomed" not in seen.started:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the connection stays in use, and no late reply goes to another call
            for i in range(50):
                assert (await aclient.echo(rpctest.Req(text=str(i)))).text == str(i)
            for _ in range(200):
                if "doomed" in seen.cancelled:
                    break
                await asyncio.sleep(0.01)
            assert seen.cancelled == ["doomed"]
            assert len(aserver.connections()) == 1

    run(main())


def test_an_async_deadline_raises_deadline_exceeded_on_both_sides(
    rpctest: ModuleType, aserver: Server, seen: Seen
) -> None:
    async def main() -> None:
        async with rpctest.TestServiceAsyncClient(aserver.address) as aclient:
            started = time.monotonic()
            with pytest.raises(rpcpoll.DeadlineExceededError):
                await aclient.sleep(rpctest.Req(text="late", sleep_ms=5000), timeout=0.2)
            assert time.monotonic() - started < 1.5
            for _ in range(200):
                if "late" in seen.cancelled:
                    break
                await asyncio.sleep(0.01)
            assert seen.cancelled == ["late"]
            assert (await aclient.echo(rpctest.Req(text="next"))).text == "next"

    run(main())


def test_calls_on_one_connection_expire_each_at_its_own_deadline(
    rpctest: ModuleType, aserver: Server, seen: Seen
) -> None:
    """Deadlines of one connection share a timer armed for the earliest: a shorter deadline
    that comes later still fires first, a call that ended is never failed, and calls without
    a deadline wait on."""

    async def main() -> None:
        async with rpctest.TestServiceAsyncClient(aserver.address, mux=1) as aclient:
            started = time.monotonic()
            failed_at: dict[str, float] = {}

            async def call(text: str, timeout: float | None, sleep_ms: int = 5000) -> str:
                try:
                    request = rpctest.Req(text=text, sleep_ms=sleep_ms)
                    return str((await aclient.sleep(request, timeout=timeout)).text)
                except rpcpoll.DeadlineExceededError:
                    failed_at[text] = time.monotonic() - started
                    return "expired"

            patient = asyncio.ensure_future(call("patient", None, sleep_ms=1200))
            results = await asyncio.gather(
                call("long", 0.9), call("done", 0.5, sleep_ms=50), call("short", 0.2),
                call("middle", 0.5),
            )  # fmt: skip
            assert results == ["expired", "done", "expired", "expired"]
            assert 0.2 <= failed_at["short"] < failed_at["middle"] < failed_at["long"]
            assert failed_at["middle"] >= 0.5 and failed_at["long"] >= 0.9
            assert failed_at["long"] < 0.9 + 0.5
            assert await patient == "patient"
            assert len(aserver.connections()) == 1

    run(main())


def test_a_client_follows_its_user_into_a_new_event_loop(rpctest: ModuleType, client: Any) -> None:
    aclient = rpctest.TestServiceAsyncClient(client.server.address, timeout=5.0)

    async def once(text: str) -> str:
        return str((await aclient.echo(rpctest.Req(text=text))).text)

    try:
        assert run(once("first")) == "first"
        assert run(once("second")) == "second"  # a new asyncio.run: fresh connections
    finally:
        aclient.close()


def test_async_and_sync_clients_give_the_same_errors_for_a_dead_server(
    rpctest: ModuleType,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there

    async def main() -> None:
        async with rpctest.TestServiceAsyncClient(address, timeout=2.0) as aclient:
            with pytest.raises(rpcpoll.UnavailableError):
                await aclient.echo(rpctest.Req(text="x"))

    run(main())


def read_frame(sock: socket.socket) -> Frame:
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        assert chunk, "the server closed the connection"
        body += chunk
    return decode_frame(head + body)
