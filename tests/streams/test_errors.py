"""What a failed stream looks like to the client: a handler's RpcError after some messages, an
unexpected exception, an unimplemented method, a stream of a unary method and a unary call of
a streaming one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from streams_testutil import WAIT, async_client, rectangle, run

import rpcpoll
from rpcpoll import StatusCode
from rpcpoll.examples.route_guide_rpc import (
    ROUTE_GUIDE,
    Feature,
    Point,
    Rectangle,
    RouteGuideAsyncHandler,
    RouteGuideClient,
    RouteGuideHandler,
    RouteNote,
)
from rpcpoll.server import Server
from rpcpoll.service import CallContext

pytestmark = pytest.mark.timeout(60)

FAIL = {"mode": "fail", "code": str(int(StatusCode.PERMISSION_DENIED)), "message": "go away"}


def test_messages_sent_before_a_handler_error_arrive_then_the_error(
    sync_client: RouteGuideClient, seen: Any
) -> None:
    call = sync_client.list_features(rectangle(3), metadata={**FAIL, "x-echo": "e"})
    got = []
    with pytest.raises(rpcpoll.PermissionDeniedError) as caught:
        for feature in call:
            got.append(feature.name)
    assert len(got) == 3
    assert caught.value.code is StatusCode.PERMISSION_DENIED
    assert caught.value.message == "go away"
    assert call.code is StatusCode.PERMISSION_DENIED and call.details == "go away"
    assert call.trailing_metadata() == {"x-trail": "e!"}  # trailers come with the error
    with pytest.raises(rpcpoll.PermissionDeniedError):
        next(call)  # the error again, not StopIteration


def test_an_async_client_sees_a_handler_error_after_the_messages(server: Server) -> None:
    async def main() -> None:
        async with async_client(server) as client:
            got = []
            with pytest.raises(rpcpoll.PermissionDeniedError, match="go away"):
                async for feature in client.list_features(rectangle(2), metadata=FAIL):
                    got.append(feature)
            assert len(got) == 2
            with pytest.raises(rpcpoll.PermissionDeniedError):
                await client.record_route([Point()], metadata=FAIL)

    run(main())


def test_a_client_stream_handler_error_reaches_the_sync_caller(
    sync_client: RouteGuideClient,
) -> None:
    with pytest.raises(rpcpoll.PermissionDeniedError, match="go away"):
        sync_client.record_route(iter([Point()] * 3), metadata=FAIL)


def test_any_other_exception_is_internal_without_its_details(
    sync_client: RouteGuideClient, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    got = []
    with pytest.raises(rpcpoll.InternalError) as caught:
        for feature in sync_client.list_features(rectangle(2), metadata={"mode": "crash"}):
            got.append(feature)
    assert len(got) == 2
    assert "secret detail" not in caught.value.message
    assert "ListFeatures" in caught.value.message
    assert any("secret detail" in repr(r.exc_info) for r in caplog.records if r.exc_info)

    async def main() -> None:
        async with async_client(server) as client:
            with pytest.raises(rpcpoll.InternalError):
                async for _ in client.list_features(rectangle(1), metadata={"mode": "crash"}):
                    pass

    run(main())


class Unimplemented(RouteGuideHandler):
    def get_feature(self, request: Point, context: CallContext) -> Feature:
        return Feature()


class AsyncUnimplemented(RouteGuideAsyncHandler):
    async def get_feature(self, request: Point, context: CallContext) -> Feature:
        return Feature()


@pytest.mark.parametrize("handler", [Unimplemented, AsyncUnimplemented], ids=["sync", "async"])
def test_a_streaming_method_not_implemented_answers_unimplemented(
    serve: Callable[..., Server], handler: type
) -> None:
    server = serve(handlers=[handler()])
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        with pytest.raises(rpcpoll.UnimplementedError, match="ListFeatures is not implemented"):
            list(client.list_features(rectangle(1)))
        with pytest.raises(rpcpoll.UnimplementedError, match="RecordRoute"):
            client.record_route(iter([Point()]))
        with pytest.raises(rpcpoll.UnimplementedError, match="RouteChat"):
            list(client.route_chat(iter([RouteNote()])))
        assert client.get_feature(Point()) == Feature()  # the connection is fine


def test_a_unary_call_of_a_streaming_method_is_unimplemented(
    sync_client: RouteGuideClient,
) -> None:
    method = ROUTE_GUIDE.methods["ListFeatures"]
    with pytest.raises(rpcpoll.UnimplementedError) as caught:
        sync_client.channel._unary(  # what a peer that ignores the IDL would send
            ROUTE_GUIDE, method, Rectangle(), WAIT, None, None
        )
    assert "is a streaming method: open a stream to call it" in caught.value.message


def test_a_stream_of_a_unary_method_is_unimplemented(server: Server) -> None:
    method = ROUTE_GUIDE.methods["GetFeature"]
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        call = client.channel.stream_call(  # type: ignore[attr-defined]
            ROUTE_GUIDE, method, None, timeout=WAIT, metadata=None
        )
        with pytest.raises(rpcpoll.UnimplementedError) as caught:
            list(call)
        assert "GetFeature is a unary method: call it without a stream" in caught.value.message
        assert client.get_feature(Point()).name  # unary calls still work

    async def main() -> None:
        async with async_client(server) as aclient:
            acall = aclient.channel.stream_call(  # type: ignore[attr-defined]
                ROUTE_GUIDE, method, None, timeout=WAIT, metadata=None
            )
            with pytest.raises(rpcpoll.UnimplementedError, match="is a unary method"):
                async for _ in acall:
                    pass

    run(main())
