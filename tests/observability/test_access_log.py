"""AccessLog: one line per call with peer, method, status, duration and sizes; nothing (not
even a size) when its logger is disabled; async calls, client side and streams."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from obs_testutil import AsyncEcho, Echo

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceAsyncClient, EchoServiceClient
from rpcpoll.observability import AccessLog
from rpcpoll.server import Server
from rpcpoll.service import CallContext

LINE = re.compile(
    r"peer=(?P<peer>\S+) rpc=(?P<rpc>\S+) status=(?P<status>\w+) duration_ms=(?P<ms>[\d.]+)"
    r" request_bytes=(?P<request>\d+) response_bytes=(?P<response>\d+)"
    r"(?: requests=(?P<requests>\d+) responses=(?P<responses>\d+))?$"
)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    found = []
    for record in caplog.records:
        if record.name == "rpcpoll.access":
            match = LINE.match(record.getMessage())
            assert match, record.getMessage()
            found.append(match)
    return found


def test_each_call_is_one_line_with_its_peer_status_duration_and_sizes(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpcpoll.access")
    server = serve(Echo(), middleware=[AccessLog()])
    request = EchoRequest(message="hello", payload=b"p" * 50)
    with EchoServiceClient(server.address, timeout=5.0) as client:
        client.echo(request)
        with pytest.raises(rpcpoll.PermissionDeniedError):
            client.echo(EchoRequest(message=f"fail:{int(rpcpoll.StatusCode.PERMISSION_DENIED)}"))
    ok, denied = access_lines(caplog)
    assert ok["peer"].startswith("127.0.0.1:") and ok["peer"] != server.address
    assert ok["rpc"] == "echo.EchoService/Echo" and ok["status"] == "OK"
    assert int(ok["request"]) == int(ok["response"]) == len(request.to_bytes())
    assert 0 < float(ok["ms"]) < 5000
    assert denied["status"] == "PERMISSION_DENIED" and denied["response"] == "0"
    record = next(r for r in caplog.records if r.name == "rpcpoll.access")
    assert record.levelno == logging.INFO
    # the same values, structured, for JSON formatters
    assert (record.rpc_service, record.rpc_method, record.rpc_code) == (  # type: ignore[attr-defined]
        "echo.EchoService", "Echo", "OK"
    )  # fmt: skip


def test_async_calls_are_logged_on_both_sides(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpcpoll.access")
    server = serve(AsyncEcho(), middleware=[AccessLog()])
    client_log = logging.getLogger("test.client.access")
    caplog.set_level(logging.INFO, logger="test.client.access")

    async def main() -> None:
        async with EchoServiceAsyncClient(
            server.address, timeout=5.0, middleware=[AccessLog(client_log)]
        ) as client:
            await client.echo(EchoRequest(message="async"))

    asyncio.run(main())
    by_logger = {r.name: LINE.match(r.getMessage()) for r in caplog.records}
    server_line, client_line = by_logger["rpcpoll.access"], by_logger["test.client.access"]
    assert server_line and client_line
    assert client_line["peer"] == server.address  # the instance the call went to
    assert server_line["status"] == client_line["status"] == "OK"


class CountedMessage:
    """A message that counts its encodings."""

    encodings = 0

    def to_bytes(self) -> bytes:
        CountedMessage.encodings += 1
        return b"1234"


def test_a_disabled_access_log_costs_no_encoding(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog()
    context = CallContext("s.S", "M", peer="127.0.0.1:1")
    caplog.set_level(logging.WARNING, logger="rpcpoll.access")
    CountedMessage.encodings = 0
    log(CountedMessage(), context, lambda request, context: CountedMessage())
    assert CountedMessage.encodings == 0 and access_lines(caplog) == []
    caplog.set_level(logging.INFO, logger="rpcpoll.access")
    log(CountedMessage(), context, lambda request, context: CountedMessage())
    assert CountedMessage.encodings == 2
    (line,) = access_lines(caplog)
    assert (line["request"], line["response"]) == ("4", "4")


def test_a_stream_is_one_line_when_it_ends_with_message_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rpcpoll.access")
    log = AccessLog()

    def bidi(requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in requests:
            yield request
            yield request

    context = CallContext("pkg.Chat", "Talk", peer="127.0.0.1:2", kind="bidi")
    stream = log(iter([CountedMessage(), CountedMessage()]), context, bidi)
    assert access_lines(caplog) == []  # not before the end
    assert len(list(stream)) == 4
    (line,) = access_lines(caplog)
    assert (line["requests"], line["responses"]) == ("2", "4")
    assert (line["request"], line["response"]) == ("8", "16")
