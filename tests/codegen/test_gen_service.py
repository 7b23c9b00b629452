"""Generated clients and handlers, through LocalChannel (the in-process Channel)."""

from __future__ import annotations

import logging
import sys
import time
import types
from types import ModuleType
from typing import Any

import pytest
from codegen_testutil import Generated

import rpcpoll
import rpcpoll.message as rm
from rpcpoll.service import (
    CallContext,
    Channel,
    Client,
    LocalChannel,
    MethodDescriptor,
    ServiceDescriptor,
)


@pytest.fixture(scope="module")
def chat(cases: dict[str, Generated]) -> ModuleType:
    return cases["streaming"].module("streaming_rpc")


def _handler(chat: ModuleType, **methods: Any) -> Any:
    return type("Impl", (chat.ChatHandler,), methods)()


def test_descriptor_lists_every_method_with_wire_names_and_flags(chat: ModuleType) -> None:
    service = chat.CHAT
    assert isinstance(service, ServiceDescriptor)
    assert service.full_name == "cases.streaming.Chat"
    assert list(service.methods) == ["Ask", "Put", "Listen", "Tell", "Talk", "Ping"]
    ask = service.methods["Ask"]
    assert ask == MethodDescriptor("Ask", "ask", chat.Req, chat.Resp, idempotent=True)
    assert service.methods["Put"].idempotent
    assert service.methods["Listen"].server_streaming and not service.methods["Listen"].unary
    assert service.methods["Tell"].client_streaming
    talk = service.methods["Talk"]
    assert talk.client_streaming and talk.server_streaming and not talk.idempotent
    assert service.methods["Ping"].request_type is rm.Empty
    assert chat.ChatClient.SERVICE is service and chat.ChatHandler.SERVICE is service
    with pytest.raises(TypeError):
        service.methods["New"] = ask  # type: ignore[index]


def test_every_kind_of_method_gets_client_and_handler_methods(chat: ModuleType) -> None:
    import inspect

    for name in ("ask", "listen", "tell", "talk", "ping"):
        for cls in (chat.ChatClient, chat.ChatHandler, chat.ChatAsyncClient, chat.ChatAsyncHandler):
            assert callable(getattr(cls, name)), (cls, name)
    # async handlers: coroutines, or async generators where responses stream
    assert inspect.iscoroutinefunction(chat.ChatAsyncHandler.ask)
    assert inspect.iscoroutinefunction(chat.ChatAsyncHandler.tell)
    assert inspect.isasyncgenfunction(chat.ChatAsyncHandler.listen)
    assert inspect.isasyncgenfunction(chat.ChatAsyncHandler.talk)
    # async clients: streams are returned at once (iterated with async for), others awaited
    assert not inspect.iscoroutinefunction(chat.ChatAsyncClient.listen)
    assert not inspect.iscoroutinefunction(chat.ChatAsyncClient.talk)
    assert inspect.iscoroutinefunction(chat.ChatAsyncClient.tell)


def test_streaming_through_a_local_channel_is_refused_clearly(chat: ModuleType) -> None:
    client = chat.ChatClient(LocalChannel(chat.ChatHandler()))
    with pytest.raises(rpcpoll.UnimplementedError, match="does not carry streams"):
        client.listen(chat.Req())


def test_client_call_reaches_the_handler_through_the_wire_form(chat: ModuleType) -> None:
    seen: list[tuple[Any, CallContext]] = []

    def ask(self: Any, request: Any, context: CallContext) -> Any:
        seen.append((request, context))
        context.set_reply_metadata("served-by", "test")
        return chat.Resp(a=request.q.upper())

    client = chat.ChatClient(LocalChannel(_handler(chat, ask=ask)))
    request = chat.Req(q="hello")
    response = client.ask(request, metadata={"user": "ada"}, timeout=5.0)
    assert response == chat.Resp(a="HELLO")
    ((received, context),) = seen
    assert received == request and received is not request  # decoded from bytes
    assert (context.service, context.method) == ("cases.streaming.Chat", "Ask")
    assert dict(context.metadata) == {"user": "ada"}
    assert context.reply_metadata == {"served-by": "test"}
    assert context.deadline is not None
    remaining = context.time_remaining()
    assert remaining is not None and 0 < remaining <= 5.0


def test_without_timeout_there_is_no_deadline(chat: ModuleType) -> None:
    contexts: list[CallContext] = []

    def ask(self: Any, request: Any, context: CallContext) -> Any:
        contexts.append(context)
        return chat.Resp()

    chat.ChatClient(LocalChannel(_handler(chat, ask=ask))).ask(chat.Req())
    assert contexts[0].deadline is None and contexts[0].time_remaining() is None


def test_methods_not_overridden_answer_unimplemented(chat: ModuleType) -> None:
    client = chat.ChatClient(LocalChannel(chat.ChatHandler()))
    with pytest.raises(rpcpoll.UnimplementedError) as caught:
        client.put(chat.Req())
    assert caught.value.code == rpcpoll.StatusCode.UNIMPLEMENTED
    assert "cases.streaming.Chat/Put" in caught.value.message
    with pytest.raises(rpcpoll.UnimplementedError, match="Chat/Ping"):
        client.ping(rm.Empty())


def test_rpc_errors_reach_the_client_with_code_and_message_only(chat: ModuleType) -> None:
    class Custom(rpcpoll.NotFoundError):
        extra = "server-side detail"

    def ask(self: Any, request: Any, context: CallContext) -> Any:
        raise Custom(message="no such question")

    client = chat.ChatClient(LocalChannel(_handler(chat, ask=ask)))
    with pytest.raises(rpcpoll.NotFoundError) as caught:
        client.ask(chat.Req())
    assert type(caught.value) is rpcpoll.NotFoundError
    assert caught.value.message == "no such question"
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_other_exceptions_become_internal_errors_without_details(
    chat: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    def ask(self: Any, request: Any, context: CallContext) -> Any:
        raise KeyError("secret-token-123")

    client = chat.ChatClient(LocalChannel(_handler(chat, ask=ask)))
    with (
        caplog.at_level(logging.ERROR, logger="rpcpoll.service"),
        pytest.raises(rpcpoll.InternalError) as caught,
    ):
        client.ask(chat.Req())
    assert "secret-token-123" not in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert "secret-token-123" in caplog.text  # the traceback is logged on the server side


def test_a_handler_returning_the_wrong_type_is_an_internal_error(chat: ModuleType) -> None:
    def ask(self: Any, request: Any, context: CallContext) -> Any:
        return chat.Req()

    with pytest.raises(rpcpoll.InternalError):
        chat.ChatClient(LocalChannel(_handler(chat, ask=ask))).ask(chat.Req())


def test_unknown_services_and_methods_are_unimplemented(
    chat: ModuleType, cases: dict[str, Generated]
) -> None:
    channel = LocalChannel()
    with pytest.raises(rpcpoll.UnimplementedError, match=r"cases\.streaming\.Chat/Ask"):
        chat.ChatClient(channel).ask(chat.Req())
    channel.register(chat.ChatHandler())
    stranger = MethodDescriptor("Nope", "nope", chat.Req, chat.Resp)
    with pytest.raises(rpcpoll.UnimplementedError):
        channel.unary_call(chat.CHAT, stranger, chat.Req(), timeout=None, metadata=None)
    listen = chat.CHAT.methods["Listen"]
    with pytest.raises(rpcpoll.UnimplementedError, match="streaming"):
        channel.unary_call(chat.CHAT, listen, chat.Req(), timeout=None, metadata=None)


def test_overrunning_the_timeout_is_deadline_exceeded(chat: ModuleType) -> None:
    def ask(self: Any, request: Any, context: CallContext) -> Any:
        time.sleep(0.05)
        return chat.Resp()

    client = chat.ChatClient(LocalChannel(_handler(chat, ask=ask)))
    with pytest.raises(rpcpoll.DeadlineExceededError):
        client.ask(chat.Req(), timeout=0.001)
    with pytest.raises(rpcpoll.DeadlineExceededError):
        client.ask(chat.Req(), timeout=0)


def test_bad_requests_fail_in_the_caller(chat: ModuleType) -> None:
    client = chat.ChatClient(LocalChannel(chat.ChatHandler()))
    with pytest.raises(TypeError, match="Ask takes Req, not Resp"):
        client.ask(chat.Resp())
    with pytest.raises(TypeError, match=r"Req\.q: expected str"):
        client.ask(chat.Req(q=5))


def test_closing_the_client_closes_its_channel(chat: ModuleType) -> None:
    channel = LocalChannel(chat.ChatHandler())
    with chat.ChatClient(channel) as client:
        assert client.channel is channel
    with pytest.raises(rpcpoll.UnavailableError, match="closed"):
        client.ask(chat.Req())


def test_local_channel_is_a_channel() -> None:
    assert isinstance(LocalChannel(), Channel)


def test_address_targets_are_handed_to_the_client_runtime(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, dict[str, Any]]] = []
    fake = types.ModuleType("rpcpoll.client")

    def open_channel(target: str, **options: Any) -> Channel:
        opened.append((target, options))
        return LocalChannel(chat.ChatHandler())

    fake.open_channel = open_channel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rpcpoll.client", fake)
    client = chat.ChatClient("127.0.0.1:9000", pool_size=2)
    assert opened == [("127.0.0.1:9000", {"pool_size": 2})]
    assert isinstance(client.channel, LocalChannel)


def test_address_targets_without_the_client_runtime_raise_a_clear_error(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rpcpoll.client", None)
    with pytest.raises(RuntimeError, match=r"rpcpoll\.client\.open_channel"):
        chat.ChatClient("127.0.0.1:9000")


def test_a_channel_target_takes_no_options(chat: ModuleType) -> None:
    with pytest.raises(TypeError, match="options apply to address targets only"):
        chat.ChatClient(LocalChannel(), pool_size=2)
    with pytest.raises(TypeError):
        Client(42)  # type: ignore[arg-type]


def test_handlers_must_be_generated_handler_classes() -> None:
    with pytest.raises(TypeError, match="not a generated handler"):
        LocalChannel().register(object())  # type: ignore[arg-type]


def test_empty_requests_and_responses_work(chat: ModuleType) -> None:
    def ping(self: Any, request: rm.Empty, context: CallContext) -> rm.Empty:
        return rm.Empty()

    client = chat.ChatClient(LocalChannel(_handler(chat, ping=ping)))
    assert client.ping(rm.Empty()) == rm.Empty()


def test_cross_module_request_and_response_types(cases: dict[str, Generated]) -> None:
    order = cases["cross"].module("acme.shop.order_rpc")
    money = cases["cross"].module("acme.common.money_rpc")

    class Orders(order.OrdersHandler):  # type: ignore[misc]
        def price(self, request: Any, context: CallContext) -> Any:
            total = sum(line.units for line in request.lines)
            return money.Money(currency="EUR", units=total)

    client = order.OrdersClient(LocalChannel(Orders()))
    lines = [money.Money(units=2), money.Money(units=3)]
    assert client.price(order.Order(lines=lines)) == money.Money(currency="EUR", units=5)
    assert order.ORDERS.methods["Price"].response_type is money.Money
