"""Slow clients: a frame that has started must complete within frame_timeout, and incomplete
frames together may hold no more than max_partial_bytes (issue 14: 500 connections trickling a
byte every 5 s were never closed; 100 holding a 4 MiB-minus-one-byte frame cost 400 MB)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from hostile_testutil import call_frame, host_port
from testutil import wait_until

from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.server import Server

FRAME_TIMEOUT = 0.5


def test_trickling_connections_are_closed_by_the_frame_deadline(
    serve: Callable[..., Server],
) -> None:
    server = serve(frame_timeout=FRAME_TIMEOUT)
    frame = call_frame(1, "slow", b"y" * 100)
    socks = [socket.create_connection(host_port(server.address)) for _ in range(20)]
    closed_at: dict[int, float] = {}
    started = time.monotonic()
    try:
        with EchoServiceClient(server.address, timeout=2) as good:
            for tick in range(40):  # one byte per connection every 50 ms: never a whole frame
                for index, sock in enumerate(socks):
                    if index in closed_at:
                        continue
                    try:
                        sock.send(frame[tick : tick + 1])
                    except OSError:
                        closed_at[index] = time.monotonic() - started
                assert good.echo(EchoRequest(message=str(tick))).message == str(tick)
                if len(closed_at) == len(socks):
                    break
                time.sleep(0.05)
            for index, sock in enumerate(socks):  # the server's close shows as EOF on read
                if index not in closed_at:
                    sock.settimeout(2)
                    assert sock.recv(1) == b""
                    closed_at[index] = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert max(closed_at.values()) < FRAME_TIMEOUT + 1.5, closed_at
    wait_until(lambda: len(server.connections()) <= 1, message="trickling connections closed")


def test_incomplete_frames_hold_no_more_than_the_partial_budget(
    serve: Callable[..., Server],
) -> None:
    budget = 1024 * 1024
    server = serve(max_partial_bytes=budget, frame_timeout=30)
    frame = call_frame(1, "big", b"z" * (512 * 1024))
    part = frame[: 300 * 1024]  # over half of the frame, never the rest
    socks = [socket.create_connection(host_port(server.address)) for _ in range(10)]
    try:
        for sock in socks:
            sock.sendall(part)
        loop_budget = server._loop.partial_budget
        assert loop_budget is not None
        # each connection either holds its part within the budget or is closed
        wait_until(
            lambda: len(server.connections()) <= budget // len(part),
            message="connections beyond the budget closed",
        )
        assert loop_budget.used <= budget
        with EchoServiceClient(server.address, timeout=2) as good:
            assert good.echo(EchoRequest(message="fine")).message == "fine"
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: loop_budget.used == 0, message="budget given back on close")


def test_a_slow_but_complete_sender_is_served(serve: Callable[..., Server]) -> None:
    """The deadline is per frame: a client sending frames slowly, each within the deadline,
    keeps its connection."""
    server = serve(frame_timeout=FRAME_TIMEOUT)
    results: list[bytes] = []
    with socket.create_connection(host_port(server.address)) as sock:
        sock.settimeout(5)
        for seq in range(1, 4):
            frame = call_frame(seq, f"m{seq}")
            half = len(frame) // 2
            sock.sendall(frame[:half])
            time.sleep(FRAME_TIMEOUT / 3)
            sock.sendall(frame[half:])
            results.append(sock.recv(1 << 16))
            time.sleep(FRAME_TIMEOUT)  # idle between frames is not a started frame
    assert all(results)


def test_closed_trickling_connections_leave_no_threads(serve: Callable[..., Server]) -> None:
    server = serve(frame_timeout=0.3)
    before = threading.active_count()
    socks = [socket.create_connection(host_port(server.address)) for _ in range(50)]
    try:
        for sock in socks:
            sock.send(b"\x00")
        wait_until(lambda: not server.connections(), timeout=5, message="all closed")
    finally:
        for sock in socks:
            sock.close()
    assert threading.active_count() <= before + 5
