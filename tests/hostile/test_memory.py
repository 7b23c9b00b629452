"""Memory the server must give back: closed connections (issue 14: 20k connect-then-close left
19,758 Connection objects alive for the 600 s idle timeout, through the poller's timer heap),
and buffers after a burst."""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hostile_testutil import ServeProcess, host_port
from testutil import wait_until

from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.server import Server
from rpcpoll.transport import BufferCache
from rpcpoll.transport.connection import Connection
from rpcpoll.transport.memory import MemoryReleaser, release_memory
from rpcpoll.transport.poller import Poller


def live_connections() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Connection)


def test_closed_connections_are_not_kept_alive_by_their_timers(
    serve: Callable[..., Server],
) -> None:
    server = serve(idle_timeout=600, frame_timeout=600)
    before = live_connections()
    address = host_port(server.address)
    for _ in range(500):
        socket.create_connection(address).close()
    wait_until(lambda: not server.connections(), message="connections closed")
    wait_until(lambda: live_connections() <= before + 5, message="Connection objects freed")


def test_a_cancelled_timer_drops_its_callback_and_the_heap_is_compacted() -> None:
    poller = Poller("test-timers")
    try:
        handles = [poller.call_later(600, lambda: None) for _ in range(1000)]
        for handle in handles:
            handle.cancel()
            assert handle.callback is None
        assert poller.pending_timers < 200
    finally:
        poller.close()


def test_the_releaser_empties_the_cache_after_a_quiet_spell() -> None:
    cache = BufferCache()
    poller = Poller("test-releaser")
    releaser = MemoryReleaser(0.1, lambda task: task(), cache=cache, poller=poller)
    try:
        releaser.start()
        for _ in range(8):
            cache.put(cache.get(1 << 20))  # a burst leaves blocks cached
        assert cache.stats().cached_bytes
        wait_until(lambda: not cache.stats().cached_bytes, timeout=3, message="cache emptied")
        assert releaser.releases == 1
        time.sleep(0.3)
        assert releaser.releases == 1  # once per quiet spell
    finally:
        releaser.stop()
        poller.close()
    release_memory(cache)  # also callable directly


def test_after_a_burst_the_servers_rss_returns_near_its_baseline(
    serve_process: Callable[..., ServeProcess],
) -> None:
    server = serve_process("--release-memory-after", "0.3")
    request = EchoRequest(message="burst", payload=b"p" * (1024 * 1024))
    with EchoServiceClient(server.address, timeout=10) as client:
        client.echo(EchoRequest(message="warm"))
        time.sleep(0.8)
        baseline = server.rss_mib()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: client.echo(request), range(160)))
        peak = server.status("VmHWM") / 1024
    wait_until(
        lambda: server.rss_mib() < baseline + 25,
        timeout=10,
        message=f"RSS back near {baseline:.0f} MiB (peak {peak:.0f} MiB)",
    )
    assert peak > baseline + 25  # the burst did grow it: the test measures something
