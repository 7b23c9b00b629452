"""A client that pipelines requests and never reads the replies cannot grow the server.

Issue 14 found 600k x 1 KiB such requests taking the server to 1.5 GB (1.15 GB and 262
threads with the out-of-order flag). With backpressure, the server stops reading once its
unsent replies reach max_unsent_bytes, so the client's own sends stall: here a client tries
to push 200k requests (200 MiB) and the server's RSS must stay within a few tens of MiB of
where it started, while a well-behaved client's calls keep succeeding.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from hostile_testutil import ServeProcess, call_frame, host_port

from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

REQUESTS = 200_000
STALL = 0.5  # seconds the socket must refuse more bytes before we call it backpressure
RSS_CEILING_MIB = 60  # growth allowed over the server's idle RSS


def flood(address: str, out_of_order: bool) -> int:
    """Pipeline up to REQUESTS 1 KiB requests without reading; returns how many were sent
    before the socket stayed full for STALL seconds."""
    frame = call_frame(1, "flood", b"x" * 1000, out_of_order=out_of_order)
    batch = frame * 64
    sock = socket.create_connection(host_port(address))
    sock.setblocking(False)
    sent = 0
    view = memoryview(batch)
    offset = 0
    stalled_since = 0.0
    try:
        while sent < REQUESTS * len(frame):
            try:
                n = sock.send(view[offset:])
            except BlockingIOError:
                n = 0
            if n:
                stalled_since = 0.0
                sent += n
                offset = (offset + n) % len(batch)
                continue
            now = time.monotonic()
            if not stalled_since:
                stalled_since = now
            elif now - stalled_since > STALL:
                break
            time.sleep(0.005)
        return sent // len(frame)
    finally:
        sock.close()


@pytest.mark.parametrize("out_of_order", [False, True], ids=["in-order", "out-of-order"])
def test_a_client_that_pipelines_and_never_reads_cannot_grow_the_server(
    serve_process: Callable[..., ServeProcess], out_of_order: bool
) -> None:
    server = serve_process()
    with EchoServiceClient(server.address, timeout=5) as good:
        assert good.echo(EchoRequest(message="warm")).message == "warm"
        baseline = server.rss_mib()
        sent = flood(server.address, out_of_order)
        grown = server.rss_mib() - baseline
        threads = server.status("Threads")
        # well-behaved calls still succeed, at once
        for i in range(20):
            assert good.echo(EchoRequest(message=f"ok{i}"), timeout=2).message == f"ok{i}"
    assert sent < REQUESTS, "the server kept reading: no backpressure"
    assert grown < RSS_CEILING_MIB, f"server RSS grew {grown:.0f} MiB ({sent} requests taken)"
    assert threads < 300, threads
