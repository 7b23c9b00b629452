"""grpc.health.v1.Health/Watch end to end: the status now, then each change, until cancelled."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streams_testutil import WAIT, run, wait_until

from rpcpoll.health import HealthService
from rpcpoll.health.health_rpc import HealthAsyncClient, HealthCheckRequest, HealthClient
from rpcpoll.health.service import ServingStatus
from rpcpoll.server import Server

pytestmark = pytest.mark.timeout(60)


def open_streams(server: Server) -> int:
    return sum(len(conn.context.streams.open) for conn in server.connections())


def test_watch_sends_the_status_then_each_change_until_cancelled(
    serve: Callable[..., Server],
) -> None:
    health = HealthService()
    server = serve(handlers=[health])
    with HealthClient(server.address, timeout=WAIT) as client:
        call = client.watch(HealthCheckRequest())
        assert next(call).status is ServingStatus.SERVING
        health.set_status("", ServingStatus.NOT_SERVING)
        assert next(call).status is ServingStatus.NOT_SERVING
        health.set_status("", "SERVING")
        assert next(call).status is ServingStatus.SERVING

        unknown = client.watch(HealthCheckRequest(service="billing"))
        assert next(unknown).status is ServingStatus.SERVICE_UNKNOWN
        health.set_status("billing", "SERVING")
        assert next(unknown).status is ServingStatus.SERVING

        assert open_streams(server) == 2
        call.cancel()
        unknown.cancel()
        wait_until(lambda: open_streams(server) == 0)  # the handlers saw the cancel


def test_watch_ends_with_not_serving_when_the_service_shuts_down(
    serve: Callable[..., Server],
) -> None:
    health = HealthService()
    server = serve(handlers=[health])

    async def main() -> None:
        client = HealthAsyncClient(server.address, timeout=WAIT)
        async with client:
            call = client.watch(HealthCheckRequest())
            assert (await anext(call)).status is ServingStatus.SERVING
            health.enter_shutdown()
            assert [r.status async for r in call] == [ServingStatus.NOT_SERVING]
            assert call.code is not None and call.code.name == "OK"

    run(main())
