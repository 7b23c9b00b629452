"""Where a server runs calls: "auto" (on the poller until a handler blocks), "pool", "poller"."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

from rpcpoll.server import Server
from rpcpoll.server.server import MODES
from rpcpoll.transport import manager

from .conftest import Recorder


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_serves_plain_and_multiplexed_calls(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], mode: str
) -> None:
    server = serve(handler, mode=mode)
    assert server.mode == mode
    for mux in (0, 2):
        with (
            rpctest.TestServiceClient(server.address, timeout=5, mux=mux) as client,
            ThreadPoolExecutor(4) as workers,
        ):
            texts = [
                r.text
                for r in workers.map(lambda i: client.echo(rpctest.Req(text=str(i))), range(200))
            ]
        assert texts == [str(i) for i in range(200)]


def echo_latency(client: Any, rpctest: ModuleType) -> float:
    started = time.monotonic()
    assert client.echo(rpctest.Req(text="quick")).text == "quick"
    return time.monotonic() - started


def test_auto_mode_moves_a_blocking_method_off_the_poller(
    rpctest: ModuleType,
    handler: Any,
    serve: Callable[..., Server],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(handler, mode="auto")
    handoffs = lambda: sum(poller.handoffs for poller in manager().pollers())  # noqa: E731
    with (
        rpctest.TestServiceClient(server.address, timeout=5) as other,
        ThreadPoolExecutor(1) as background,
        caplog.at_level(logging.INFO, logger="rpcpoll.server"),
    ):
        other.echo(rpctest.Req(text="warm"))
        # Round 1: the watchdog takes the loop from the sleeping call. Round 2, on a new
        # connection: Sleep is known to block, so its call gives the loop away at once.
        for round_ in range(2):
            before = handoffs()
            recorder.contexts.clear()
            with rpctest.TestServiceClient(server.address, timeout=5) as sleeper:
                call = background.submit(sleeper.sleep, rpctest.Req(text="zz", sleep_ms=400))
                deadline = time.monotonic() + 5
                while not recorder.contexts and time.monotonic() < deadline:
                    time.sleep(0.001)
                # The sleeping call holds a thread, not the poller: other connections go on.
                assert echo_latency(other, rpctest) < 0.2, f"round {round_}"
                assert not call.done()
                assert call.result(5).text == "zz"
            assert handoffs() == before + 1
    blocking = [r for r in caplog.records if "blocks" in r.getMessage()]
    assert len(blocking) == 1 and "rpctest.TestService/Sleep" in blocking[0].getMessage()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        Server("127.0.0.1:0", mode="threads")


def test_auto_mode_stays_correct_while_the_loop_changes_hands_under_load(
    rpctest: ModuleType, handler: Any, serve: Callable[..., Server], recorder: Recorder
) -> None:
    """Echo traffic on pooled connections while blocking calls on fresh connections keep
    handing the poller's loop to new threads: every reply must match its request."""
    server = serve(handler, mode="auto")
    handoffs = lambda: sum(poller.handoffs for poller in manager().pollers())  # noqa: E731
    before = handoffs()
    stop = time.monotonic() + 2.0
    errors: list[BaseException] = []

    def echo_loop(client: Any, worker: int) -> int:
        calls = 0
        while time.monotonic() < stop:
            text = f"{worker}-{calls}"
            blob = bytes([calls % 256]) * (calls % 3000)
            reply = client.echo(rpctest.Req(text=text, blob=blob))
            if reply.text != text or reply.blob != blob:
                errors.append(AssertionError(f"{text}: got {reply.text}"))
            calls += 1
        return calls

    def sleep_loop() -> int:
        calls = 0
        while time.monotonic() < stop:
            with rpctest.TestServiceClient(server.address, timeout=5) as fresh:
                assert fresh.sleep(rpctest.Req(text="s", sleep_ms=30)).text == "s"
            calls += 1
        return calls

    with (
        rpctest.TestServiceClient(server.address, timeout=5) as client,
        ThreadPoolExecutor(6) as workers,
    ):
        echoes = [workers.submit(echo_loop, client, worker) for worker in range(4)]
        sleeps = [workers.submit(sleep_loop) for _ in range(2)]
        echo_calls = sum(f.result(30) for f in echoes)
        sleep_calls = sum(f.result(30) for f in sleeps)
    assert errors == []
    assert echo_calls > 100 and sleep_calls > 10
    # A 30 ms sleep may end before a 20 ms watchdog look catches it; once one is caught, each
    # fresh connection's Sleep gives the loop away itself.
    assert handoffs() - before >= sleep_calls // 2
