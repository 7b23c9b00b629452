"""route_guide end to end: the four rpc kinds, sync (pooled and multiplexed) and async clients
against sync and async handlers, and metadata both ways."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from streams_testutil import WAIT, async_client, rectangle, run

from rpcpoll import StatusCode
from rpcpoll.examples.route_guide import GRID, distance
from rpcpoll.examples.route_guide_rpc import Point, RouteGuideClient, RouteNote
from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)

ROUTE = [Point(latitude=i * GRID, longitude=(i % 2) * 5) for i in range(5)]
NOTES = [RouteNote(location=Point(latitude=i % 2), message=str(i)) for i in range(6)]
# RouteChat answers each note with the notes left earlier at the same point.
CHAT = ["0", "1", "0", "2", "1", "3"]


def expected_distance() -> int:
    return sum(distance(a, b) for a, b in itertools.pairwise(ROUTE))


@pytest.mark.parametrize("mux", [0, 2], ids=["pooled", "mux"])
def test_the_four_rpcs_from_a_sync_client(server: Server, mux: int) -> None:
    with RouteGuideClient(server.address, timeout=WAIT, mux=mux) as client:
        assert client.get_feature(Point()).name == "feature 0 0"

        features = list(client.list_features(rectangle(12)))
        assert [f.location.latitude for f in features if f.location] == [
            i * GRID for i in range(12)
        ]

        summary = client.record_route(iter(ROUTE))
        assert (summary.point_count, summary.feature_count) == (5, 3)
        assert summary.distance == expected_distance()

        assert [note.message for note in client.route_chat(iter(NOTES))] == CHAT

        with client.route_chat() as call:  # bidi, request by request
            call.send(RouteNote(message="a"))
            call.send(RouteNote(message="b"))
            assert next(call).message == "a"  # "b" was left at the same point after "a"
            call.close_send()
            assert list(call) == []
            assert call.code is StatusCode.OK
            assert call.done()


def test_the_four_rpcs_from_an_async_client(server: Server) -> None:
    async def notes() -> AsyncIterator[RouteNote]:
        for note in NOTES:
            yield note

    async def main() -> None:
        async with async_client(server) as client:
            assert (await client.get_feature(Point())).name == "feature 0 0"

            features = [f async for f in client.list_features(rectangle(12))]
            assert len(features) == 12

            summary = await client.record_route(ROUTE)  # a plain iterable
            assert (summary.point_count, summary.distance) == (5, expected_distance())
            summary = await client.record_route(aiter_of(ROUTE))  # an async one
            assert summary.point_count == 5

            assert [note.message async for note in client.route_chat(notes())] == CHAT
            assert [note.message async for note in client.route_chat(NOTES)] == CHAT

            async with client.route_chat() as call:
                await call.send(RouteNote(message="a"))
                await call.send(RouteNote(message="b"))
                assert (await anext(call)).message == "a"
                await call.close_send()
                assert [note async for note in call] == []
                assert call.code is StatusCode.OK

    run(main())


async def aiter_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def test_a_sync_client_sends_while_another_thread_reads(server: Server) -> None:
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        call = client.route_chat(metadata={"mode": "echo"})
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.extend(n.message for n in call))
        reader.start()
        for i in range(200):
            call.send(RouteNote(message=str(i)))
        call.close_send()
        reader.join(WAIT)
        assert got == [str(i) for i in range(200)]


# ------------------------------------------------------------------------------- metadata


def test_metadata_both_ways_on_a_sync_client(server: Server, seen: Any) -> None:
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        metadata = {"x-echo": "v1", "who": "me", "mode": "slow"}
        call = client.list_features(rectangle(3), metadata=metadata)
        first = next(call)
        assert first.name == "feature 0 0"
        assert call.initial_metadata() == {"x-reply": "v1"}  # came before the first message
        assert [next(call), next(call)] != []
        assert call.trailing_metadata() == {}  # the handler has not returned yet
        assert not call.done()
        seen.set_release()
        assert list(call) == []
        assert call.trailing_metadata() == {"x-trail": "v1!"}
        assert seen.metadata[-1]["who"] == "me"

        bidi = client.route_chat(iter(NOTES[:2]), metadata={"x-echo": "v2", "mode": "echo"})
        assert [n.message for n in bidi] == ["0", "1"]
        assert bidi.initial_metadata() == {"x-reply": "v2"}
        assert bidi.trailing_metadata() == {"x-trail": "v2!"}


def test_metadata_both_ways_on_an_async_client(server: Server, seen: Any) -> None:
    async def main() -> None:
        async with async_client(server) as client:
            call = client.list_features(rectangle(3), metadata={"x-echo": "v1", "who": "me"})
            first = await anext(call)
            assert first.name == "feature 0 0"
            assert call.initial_metadata() == {"x-reply": "v1"}
            assert [f async for f in call] != []
            assert call.trailing_metadata() == {"x-trail": "v1!"}

            bidi = client.route_chat(NOTES[:2], metadata={"x-echo": "v2", "mode": "echo"})
            assert [n.message async for n in bidi] == ["0", "1"]
            assert (bidi.initial_metadata(), bidi.trailing_metadata()) == (
                {"x-reply": "v2"},
                {"x-trail": "v2!"},
            )

    run(main())
    assert seen.metadata[0]["who"] == "me"


def test_a_client_streams_metadata_reaches_the_handler(server: Server, seen: Any) -> None:
    with RouteGuideClient(server.address, timeout=WAIT) as client:
        client.record_route(iter(ROUTE), metadata={"trace-id": "t-1"})
    assert seen.metadata[-1]["trace-id"] == "t-1"
