"""Middleware on servers and clients: order, what it sees, rejecting, errors, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import rpcpoll
from rpcpoll.middleware import Middleware, observe_stream, status_of
from rpcpoll.server import Server
from rpcpoll.service import CallContext

pytestmark = pytest.mark.timeout(60)


def recording(name: str, log: list[str]) -> Callable[..., Any]:
    def middleware(request: Any, context: Any, next: Callable[..., Any]) -> Any:
        log.append(f"{name} in")
        try:
            return next(request, context)
        finally:
            log.append(f"{name} out")

    return middleware


def test_the_first_middleware_is_the_outermost_on_both_sides(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    log: list[str] = []
    server = serve(handler, middleware=[recording("s1", log), recording("s2", log)])
    client_chain = [recording("c1", log), recording("c2", log)]
    with rpctest.TestServiceClient(server.address, timeout=5.0, middleware=client_chain) as client:
        assert client.echo(rpctest.Req(text="x")).text == "x"
    assert log == ["c1 in", "c2 in", "s1 in", "s2 in", "s2 out", "s1 out", "c2 out", "c1 out"]


def test_a_server_middleware_sees_the_call_and_can_reject_it(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], recorder: Any
) -> None:
    seen: list[tuple[str, str, str, str, dict[str, str], bool]] = []

    def auth(request: Any, context: CallContext, next: Callable[..., Any]) -> Any:
        seen.append(
            (
                context.side,
                context.service,
                context.method,
                context.kind,
                dict(context.metadata),
                context.deadline is not None,
            )
        )
        assert context.peer.startswith("127.0.0.1:")
        if context.metadata.get("token") != "secret":
            raise rpcpoll.UnauthenticatedError(message="a token is needed")
        return next(request, context)

    server = serve(handler, middleware=[auth])
    with rpctest.TestServiceClient(server.address, timeout=5.0) as client:
        with pytest.raises(rpcpoll.UnauthenticatedError, match="a token is needed"):
            client.count(rpctest.Req(text="rejected"))
        got = client.count(rpctest.Req(text="let in"), metadata={"token": "secret"})
        assert got.count == 1
    assert "rejected" not in recorder.counts  # the handler never ran for the rejected call
    assert seen[0] == ("server", "rpctest.TestService", "Count", "unary", {}, True)
    assert seen[1][4] == {"token": "secret"}


def test_a_middleware_that_raises_is_what_a_handler_raising_would_be(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    def broken(request: Any, context: Any, next: Callable[..., Any]) -> Any:
        raise KeyError("internal detail")

    server = serve(handler, middleware=[broken])
    with (
        rpctest.TestServiceClient(server.address, timeout=5.0) as client,
        pytest.raises(rpcpoll.InternalError) as raised,
    ):
        client.echo(rpctest.Req(text="x"))
    assert "internal detail" not in str(raised.value)


def test_a_server_middleware_sees_the_outcome_of_the_handler(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    outcomes: list[rpcpoll.StatusCode] = []

    def status(request: Any, context: Any, next: Callable[..., Any]) -> Any:
        try:
            response = next(request, context)
        except BaseException as exc:
            outcomes.append(status_of(exc))
            raise
        outcomes.append(status_of(None))
        return response

    server = serve(handler, middleware=[status])
    with rpctest.TestServiceClient(server.address, timeout=5.0) as client:
        client.echo(rpctest.Req(text="x"))
        with pytest.raises(rpcpoll.NotFoundError):
            client.fail(rpctest.Req(text="gone", code=rpcpoll.StatusCode.NOT_FOUND))
        with pytest.raises(rpcpoll.InternalError):
            client.crash(rpctest.Req())
    S = rpcpoll.StatusCode
    assert outcomes == [S.OK, S.NOT_FOUND, S.INTERNAL]


def test_a_client_middleware_adds_metadata_and_sees_peer_and_reply_metadata(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    server = serve(handler)
    after: list[tuple[str, int, dict[str, str]]] = []

    def token(request: Any, context: rpcpoll.ClientCallContext, next: Any) -> Any:
        assert context.side == "client" and context.peer == ""
        context.metadata["token"] = "t0k3n"
        response = next(request, context)
        after.append((context.peer, context.attempts, dict(context.reply_metadata)))
        return response

    with rpctest.TestServiceClient(server.address, timeout=5.0, middleware=[token]) as client:
        reply_metadata: dict[str, str] = {}
        got = client.meta(
            rpctest.Req(text="hi"), metadata={"a": "b"}, reply_metadata=reply_metadata
        )
    assert got.metadata == {"a": "b", "token": "t0k3n"}
    assert reply_metadata == {"echo": "hi"}
    assert after == [(server.address, 1, {"echo": "hi"})]


def test_a_client_middleware_can_fail_a_call_before_it_is_sent(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], recorder: Any
) -> None:
    server = serve(handler)

    def refuse(request: Any, context: Any, next: Any) -> Any:
        raise rpcpoll.PermissionDeniedError(message="not from this client")

    with (
        rpctest.TestServiceClient(server.address, timeout=5.0, middleware=[refuse]) as client,
        pytest.raises(rpcpoll.PermissionDeniedError),
    ):
        client.count(rpctest.Req(text="never"))
    assert "never" not in recorder.counts


class Counting(Middleware):
    """Both faces, counting the calls each sees."""

    def __init__(self) -> None:
        self.sync: list[str] = []
        self.async_: list[str] = []

    def __call__(self, request: Any, context: Any, next: Any) -> Any:
        self.sync.append(f"{context.side}:{context.method}")
        return next(request, context)

    async def call_async(self, request: Any, context: Any, next: Any) -> Any:
        self.async_.append(f"{context.side}:{context.method}")
        return await next(request, context)


def test_a_middleware_class_wraps_async_handlers_and_clients(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server]
) -> None:
    from rpcpoll.examples.echo import AsyncEchoHandler
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceAsyncClient

    counting = Counting()
    # a sync handler and an async one on one server: both faces are needed
    server = serve(handler, AsyncEchoHandler(), middleware=[counting])

    async def main() -> None:
        async with EchoServiceAsyncClient(server.address, middleware=[counting]) as client:
            assert (await client.echo(EchoRequest(message="a"))).message == "a"
        async with rpctest.TestServiceAsyncClient(server.address, middleware=[counting]) as other:
            assert (await other.echo(rpctest.Req(text="b"))).text == "b"

    asyncio.run(main())
    assert counting.async_ == ["client:Echo", "server:Echo", "client:Echo"]
    assert counting.sync == ["server:Echo"]  # the sync handler's call, on the pool


def test_async_middleware_can_reject_an_async_call(rpctest: ModuleType) -> None:
    from rpcpoll.examples.echo import AsyncEchoHandler
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceAsyncClient

    async def deny(request: Any, context: Any, next: Any) -> Any:
        await asyncio.sleep(0)
        raise rpcpoll.UnauthenticatedError(message="denied")

    async def main() -> None:
        server = Server(
            "127.0.0.1:0", AsyncEchoHandler(), middleware=[deny], loop=asyncio.get_running_loop()
        )
        server.start()
        try:
            async with EchoServiceAsyncClient(server.address, timeout=5.0) as client:
                with pytest.raises(rpcpoll.UnauthenticatedError, match="denied"):
                    await client.echo(EchoRequest(message="a"))
        finally:
            await server.aclose(1.0)

    asyncio.run(main())


def test_a_middleware_of_the_wrong_kind_is_refused_up_front(
    rpctest: ModuleType, handler: Any
) -> None:
    from rpcpoll.examples.echo import AsyncEchoHandler

    async def async_only(request: Any, context: Any, next: Any) -> Any:
        return await next(request, context)

    def sync_only(request: Any, context: Any, next: Any) -> Any:
        return next(request, context)

    with pytest.raises(TypeError, match="cannot wrap sync calls"):
        Server("127.0.0.1:0", handler, middleware=[async_only])
    with pytest.raises(TypeError, match="cannot wrap async calls"):
        Server("127.0.0.1:0", AsyncEchoHandler(), middleware=[sync_only])
    with pytest.raises(TypeError, match="cannot wrap sync calls"):
        rpctest.TestServiceClient("127.0.0.1:1", middleware=[async_only])
    with pytest.raises(TypeError, match="must be callable"):
        Server("127.0.0.1:0", handler, middleware=[42])


def test_observe_stream_sees_each_message_and_the_end() -> None:
    seen: list[Any] = []
    ends: list[Any] = []
    assert list(observe_stream(iter([1, 2]), seen.append, ends.append)) == [1, 2]
    assert seen == [1, 2] and ends == [None]

    def failing() -> Any:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError):
        list(observe_stream(failing(), None, ends.append))
    assert isinstance(ends[-1], ValueError)
    stream = observe_stream(iter([1, 2, 3]), None, ends.append)
    next(stream)
    stream.close()  # the consumer stopped early
    assert isinstance(ends[-1], GeneratorExit)

    async def numbers() -> Any:
        for i in range(3):
            yield i

    async def main() -> list[int]:
        return [item async for item in observe_stream(numbers(), seen.append, ends.append)]

    assert asyncio.run(main()) == [0, 1, 2] and ends[-1] is None


def test_status_of_maps_errors_as_a_caller_sees_them() -> None:
    S = rpcpoll.StatusCode
    assert status_of(None) is S.OK
    assert status_of(rpcpoll.NotFoundError(message="x")) is S.NOT_FOUND
    assert status_of(ValueError()) is S.INTERNAL
    assert status_of(asyncio.CancelledError()) is S.CANCELLED
