"""Each limit of issue 14, hit on purpose: what the peer sees, how fast, and that the server
and other clients carry on."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hostile_testutil import Gate, call_frame, host_port, read_frame
from testutil import wait_until

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceAsyncClient, EchoServiceClient
from rpcpoll.protocol.frame import (
    CONNECTION_RESET_KEY,
    Frame,
    MessageType,
    RequestTemplate,
    encode_frame,
)
from rpcpoll.protocol.status import StatusCode
from rpcpoll.server import Server
from rpcpoll.transport.connection import Connection

EXHAUSTED = StatusCode.RESOURCE_EXHAUSTED


def exception_status(frame: Frame | None) -> int:
    assert frame is not None and frame.message_type is MessageType.EXCEPTION, frame
    return frame.status


# ------------------------------------------------------------------ connections


def test_connections_over_the_limit_are_refused_at_once(serve: Callable[..., Server]) -> None:
    server = serve(max_connections=4)
    address = host_port(server.address)
    held = [socket.create_connection(address) for _ in range(4)]
    try:
        wait_until(lambda: len(server.connections()) == 4, message="4 served")
        started = time.monotonic()
        with socket.create_connection(address) as extra:
            extra.settimeout(2)
            refusal = read_frame(extra)
            assert extra.recv(1) == b""
        assert time.monotonic() - started < 0.5
        assert refusal is not None and refusal.seq_id == 0
        assert exception_status(refusal) == EXHAUSTED
        assert "too many connections" in refusal.status_message
        assert CONNECTION_RESET_KEY in refusal.metadata
        # a client is told clearly, and it was never sent (so it was retried, then failed)
        with (
            EchoServiceClient(server.address, timeout=2) as client,
            pytest.raises(rpcpoll.UnavailableError, match="refused the connection"),
        ):
            client.echo(EchoRequest(message="over"))
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: not server.connections(), message="held connections gone")
    with EchoServiceClient(server.address, timeout=2) as client:
        assert client.echo(EchoRequest(message="room")).message == "room"


# ------------------------------------------------------------------ concurrent calls


def test_calls_over_a_connections_limit_get_resource_exhausted(
    serve: Callable[..., Server], gate: Gate
) -> None:
    server = serve(max_calls_per_connection=4, max_calls=100)
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        sock.sendall(b"".join(call_frame(seq, "block", out_of_order=True) for seq in range(1, 11)))
        shed = [read_frame(sock) for _ in range(6)]
        assert time.monotonic() - started < 1.0  # answered at once, not after the calls
        assert {exception_status(frame) for frame in shed} == {EXHAUSTED}
        assert {frame.seq_id for frame in shed if frame} == set(range(5, 11))
        assert gate.entered == 4
        gate.open.set()
        done = [read_frame(sock) for _ in range(4)]
        assert {frame.seq_id for frame in done if frame} == {1, 2, 3, 4}
        assert all(frame and frame.message_type is MessageType.REPLY for frame in done)
        # the connection goes on
        sock.sendall(call_frame(20, "after", out_of_order=True))
        after = read_frame(sock)
        assert after is not None and after.message_type is MessageType.REPLY


def test_calls_over_the_servers_limit_get_resource_exhausted(
    serve: Callable[..., Server], gate: Gate
) -> None:
    server = serve(max_calls_per_connection=100, max_calls=6)
    socks = [socket.create_connection(host_port(server.address)) for _ in range(3)]
    try:
        for sock in socks:
            sock.settimeout(5)
        for sock in socks[:2]:
            sock.sendall(b"".join(call_frame(s, "block", out_of_order=True) for s in (1, 2, 3)))
        wait_until(lambda: gate.entered == 6, message="6 calls running")
        socks[2].sendall(b"".join(call_frame(s, "x", out_of_order=True) for s in (1, 2, 3)))
        shed = [read_frame(socks[2]) for _ in range(3)]
        assert {exception_status(frame) for frame in shed} == {EXHAUSTED}
        assert all(frame and "server overloaded" in frame.status_message for frame in shed)
        gate.open.set()
        replies = [read_frame(sock) for sock in socks[:2] for _ in range(3)]
        assert all(frame and frame.message_type is MessageType.REPLY for frame in replies)
        socks[2].sendall(call_frame(9, "now", out_of_order=True))
        frame = read_frame(socks[2])
        assert frame is not None and frame.message_type is MessageType.REPLY
    finally:
        for sock in socks:
            sock.close()


def test_load_shedding_answers_within_a_millisecond(
    serve: Callable[..., Server], gate: Gate
) -> None:
    server = serve(max_calls=2)
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        sock.sendall(call_frame(1, "block", out_of_order=True))
        sock.sendall(call_frame(2, "block", out_of_order=True))
        wait_until(lambda: gate.entered == 2, message="2 calls running")
        latencies = []
        for seq in range(3, 53):
            started = time.perf_counter()
            sock.sendall(call_frame(seq, "x", out_of_order=True))
            frame = read_frame(sock)
            latencies.append(time.perf_counter() - started)
            assert exception_status(frame) == EXHAUSTED
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.001, latencies  # median round trip under 1 ms


# ------------------------------------------------------------------ frame sizes


def test_a_request_over_the_clients_max_frame_size_is_refused_before_sending(
    serve: Callable[..., Server], gate: Gate
) -> None:
    server = serve()
    with EchoServiceClient(server.address, timeout=2) as client:
        started = time.monotonic()
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="nothing was sent"):
            client.echo(EchoRequest(message="huge", payload=b"x" * (10 * 1024 * 1024)))
        assert time.monotonic() - started < 0.5
        assert "huge" not in gate.runs
        assert not server.connections()  # not even a connection was made
        # metadata counts too
        with pytest.raises(rpcpoll.ResourceExhaustedError):
            client.echo(
                EchoRequest(payload=b"x" * (4 * 1024 * 1024 - 2000)),
                metadata={"k": "v" * 3000},
            )
        assert client.echo(EchoRequest(message="small")).message == "small"


@pytest.mark.parametrize("mux", [0, 2], ids=["pool", "mux"])
def test_a_reply_over_the_servers_max_frame_size_is_answered_resource_exhausted(
    serve: Callable[..., Server], mux: int
) -> None:
    server = serve(max_frame_size=64 * 1024)
    with EchoServiceClient(server.address, timeout=2, mux=mux) as client:
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="exceeds the maximum frame"):
            client.echo(EchoRequest(message="big:200000"))
        assert client.echo(EchoRequest(message="after")).message == "after"


@pytest.mark.parametrize("mux", [0, 2], ids=["pool", "mux"])
def test_a_reply_over_the_clients_max_frame_size_fails_cleanly(
    serve: Callable[..., Server], mux: int
) -> None:
    server = serve()
    with EchoServiceClient(server.address, timeout=2, mux=mux, max_frame_size=64 * 1024) as client:
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="max_frame_size of 65536"):
            client.echo(EchoRequest(message="big:200000"))
        assert client.echo(EchoRequest(message="after")).message == "after"


def test_an_oversized_reply_fails_only_its_call_on_a_multiplexed_connection(
    serve: Callable[..., Server], gate: Gate
) -> None:
    """The reply's bytes are skipped as they arrive; the call waiting on the same connection
    is answered (closing the connection would have failed it as maybe-sent)."""
    server = serve()
    client = EchoServiceClient(server.address, timeout=5, mux=1, max_frame_size=64 * 1024)
    with client, ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(client.echo, EchoRequest(message="block"))
        wait_until(lambda: gate.entered == 1, message="the first call running")
        with pytest.raises(rpcpoll.ResourceExhaustedError, match="max_frame_size of 65536"):
            client.echo(EchoRequest(message="big:200000"))
        assert client.echo(EchoRequest(message="after")).message == "after"
        gate.open.set()
        assert blocked.result(5).message == "block"
    assert len(server.connections()) <= 1, "one connection served the three calls"
    assert gate.runs == {"block": 1, "big:200000": 1, "after": 1}


def test_an_oversized_reply_fails_only_its_call_on_an_async_connection(
    serve: Callable[..., Server], gate: Gate
) -> None:
    server = serve()

    async def main() -> None:
        client = EchoServiceAsyncClient(server.address, timeout=5, max_frame_size=64 * 1024)
        async with client:
            blocked = asyncio.ensure_future(client.echo(EchoRequest(message="block")))
            while gate.entered < 1:
                await asyncio.sleep(0.005)
            with pytest.raises(rpcpoll.ResourceExhaustedError, match="max_frame_size of 65536"):
                await client.echo(EchoRequest(message="big:200000"))
            assert (await client.echo(EchoRequest(message="after"))).message == "after"
            gate.open.set()
            assert (await asyncio.wait_for(blocked, 5)).message == "block"

    asyncio.run(main())
    assert gate.runs == {"block": 1, "big:200000": 1, "after": 1}


# ------------------------------------------------------------------ headers


def test_a_header_over_the_limit_is_answered_and_the_connection_goes_on(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_header_size=1024)
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        sock.sendall(call_frame(1, metadata={"k": "v" * 2000}))
        frame = read_frame(sock)
        assert exception_status(frame) == EXHAUSTED
        assert frame is not None and "header of" in frame.status_message
        sock.sendall(call_frame(2, "next"))
        frame = read_frame(sock)
        assert frame is not None and frame.message_type is MessageType.REPLY


def test_too_many_metadata_entries_are_answered_without_parsing_them(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_header_size=4 * 0xFFFF, max_metadata_entries=8)
    metadata = {f"k{i}": "" for i in range(37_440 // 4)}  # Kitex-sized abuse
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        request = call_frame(1, metadata=metadata)
        started = time.perf_counter()
        sock.sendall(request)
        frame = read_frame(sock)
        elapsed = time.perf_counter() - started
        assert exception_status(frame) == EXHAUSTED
        assert frame is not None and "entries" in frame.status_message
        sock.sendall(call_frame(2, metadata={f"k{i}": "v" for i in range(8)}))
        frame = read_frame(sock)
        assert frame is not None and frame.message_type is MessageType.REPLY
    assert elapsed < 0.05, elapsed


def test_a_header_of_padding_costs_no_more_than_its_bytes(
    serve: Callable[..., Server],
) -> None:
    """Padding bytes used to be skipped one loop turn each: a header of zeros was a CPU
    amplifier. The parse is one C call now."""
    from rpcpoll.protocol.frame import parse_info

    base = RequestTemplate("echo.EchoService", "Echo").header_info()
    info = base[:2] + bytes(4 * 0xFFFF - len(base)) + base[2:]  # padding, then the blocks
    started = time.perf_counter()
    for _ in range(10):
        assert parse_info(info)[1] == "Echo"  # never cached: over 256 bytes
    assert (time.perf_counter() - started) / 10 < 0.002


def test_a_refusal_frame_round_trips() -> None:
    from rpcpoll.protocol.frame import decode_frame, refusal_frame

    frame = decode_frame(refusal_frame(int(EXHAUSTED), "no"))
    assert frame.seq_id == 0 and frame.status == EXHAUSTED and frame.status_message == "no"
    assert encode_frame(frame) == refusal_frame(int(EXHAUSTED), "no")


def test_a_connection_at_its_call_limit_is_read_again_whenever_a_call_ends(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four calls kept in flight against max_calls_per_connection=2: reading pauses at the
    limit on the poller's thread and resumes as a call ends on a worker's. A pause that
    reached the connection after the resume that followed it stopped reading for good (seen
    under bench_aio: calls hung until their deadline, the server's receive queue full).
    Pauses are slowed down here so that resumes overtake them."""
    pause_reading = Connection.pause_reading

    def slow_pause_reading(conn: Connection) -> None:
        time.sleep(0.0005)
        pause_reading(conn)

    monkeypatch.setattr(Connection, "pause_reading", slow_pause_reading)
    server = serve(max_calls_per_connection=2)
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        sock.sendall(b"".join(call_frame(seq, out_of_order=True) for seq in range(1, 5)))
        answered = 0
        for seq in range(5, 1005):
            frame = read_frame(sock)  # a connection no longer read: socket.timeout
            assert frame is not None
            if frame.message_type is MessageType.EXCEPTION:  # shed: read in the same batch
                assert frame.status == EXHAUSTED
            else:
                answered += 1
            sock.sendall(call_frame(seq, out_of_order=True))
        assert answered > 500
