"""Pollers and the poller manager (netpoll's poll_test.go and poll_manager_test.go)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from transport_testutil import IO_TIMEOUT, Clients, recv_exactly, recv_until_eof, wait_until

from rpcpoll.transport import (
    Connection,
    Poller,
    WouldBlockOnPollerError,
    configure,
    initialize,
    manager,
)
from rpcpoll.transport import poller as poller_module
from rpcpoll.transport.poll_backend import HANGUP, READABLE

pytestmark = pytest.mark.timeout(30)  # a hang fails fast (the global limit is 120 s)


@pytest.fixture
def poller() -> Iterator[Poller]:
    made = Poller("test-poller")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def restore_configuration() -> Iterator[None]:
    """Put the process-wide pollers back to one, round robin, once the test is done."""
    try:
        yield
    finally:
        configure(num_loops=1, load_balance="round_robin")
        initialize()  # retire the extra pollers (they stop once idle)


def poller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rpcpoll-poller")]


def echo(ctx: Any, conn: Connection) -> None:
    conn.write(conn.next(len(conn.reader())))


# ---------------------------------------------------------------------------- one poller


def test_close_unblocks_the_wait_and_the_thread_exits():
    """TestPollClose."""
    made = Poller("test-poller")
    thread = next(t for t in threading.enumerate() if t.name == "test-poller")
    assert not thread.join(0.02) and thread.is_alive(), "an idle poller waits"
    closer = threading.Thread(target=made.close, name="closer")
    started = time.monotonic()
    closer.start()
    closer.join(IO_TIMEOUT)
    thread.join(IO_TIMEOUT)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5
    assert made.closed
    made.close()  # idempotent


def test_call_soon_runs_callbacks_on_the_poller_thread_in_order(poller: Poller):
    ran: list[tuple[int, str]] = []
    done = threading.Event()
    for i in range(100):
        poller.call_soon(lambda i=i: ran.append((i, threading.current_thread().name)))
    poller.call_soon(done.set)
    assert done.wait(IO_TIMEOUT)
    assert [i for i, _ in ran] == list(range(100))
    assert {name for _, name in ran} == {"test-poller"}


def test_call_later_runs_in_time_order_and_cancel_stops_a_timer(poller: Poller):
    ran: list[str] = []
    done = threading.Event()
    started = time.monotonic()
    poller.call_later(0.06, lambda: ran.append("60ms"))
    poller.call_later(0.02, lambda: ran.append("20ms"))
    poller.call_later(0.04, lambda: ran.append("cancelled")).cancel()
    poller.call_later(0.08, done.set)
    assert done.wait(IO_TIMEOUT)
    assert ran == ["20ms", "60ms"]
    assert 0.075 <= time.monotonic() - started <= 0.14


def test_a_failing_callback_or_handler_is_logged_and_the_loop_goes_on(
    poller: Poller, caplog: pytest.LogCaptureFixture
):
    done = threading.Event()
    poller.call_soon(lambda: 1 / 0)
    poller.call_soon(done.set)
    assert done.wait(IO_TIMEOUT)

    a, b = socket.socketpair()
    try:
        events: list[int] = []

        def handler(mask: int) -> None:
            events.append(mask)
            a.recv(100)
            raise ValueError("handler failed on purpose")

        poller.register(a.fileno(), handler)
        b.sendall(b"x")
        wait_until(lambda: events, message="the handler")
        b.sendall(b"y")
        wait_until(lambda: len(events) == 2, message="the handler again")
        assert all(mask & READABLE for mask in events)
        poller.unregister(a.fileno())
        poller.unregister(a.fileno())  # twice is fine
    finally:
        a.close()
        b.close()
    failures = [r.exc_info[0] for r in caplog.records if r.exc_info]
    assert ZeroDivisionError in failures
    assert ValueError in failures


def test_a_peer_hangup_is_reported(poller: Poller):
    """TestPollMod: closing the peer fires the hang-up bits."""
    a, b = socket.socketpair()
    try:
        masks: list[int] = []

        def handler(mask: int) -> None:
            masks.append(mask)
            poller.unregister(a.fileno())

        poller.register(a.fileno(), handler)
        b.close()
        wait_until(lambda: masks, message="the hang-up event")
        assert masks[0] & HANGUP
    finally:
        a.close()


def test_write_interest_is_reported_until_removed(poller: Poller):
    """TestPollMod: reads alone give no event on an idle socket; asking for writes does."""
    a, b = socket.socketpair()
    try:
        masks: list[int] = []
        poller.register(a.fileno(), masks.append)
        poller.call_soon(lambda: None)
        time.sleep(0.02)
        assert masks == []
        poller.modify(a.fileno(), write=True)
        wait_until(lambda: masks, message="a writable event")
        poller.modify(a.fileno(), write=False)
        settled = threading.Event()
        poller.call_soon(settled.set)
        assert settled.wait(IO_TIMEOUT)
        count = len(masks)
        time.sleep(0.02)
        assert len(masks) == count, "level-triggered writes kept firing after modify(False)"
        poller.unregister(a.fileno())
    finally:
        a.close()
        b.close()


def test_no_wakeup_is_lost_when_a_wakeup_races_with_the_drain(
    poller: Poller, monkeypatch: pytest.MonkeyPatch
):
    """Regression: the poller drained its wake-up fd after clearing its "wake-up pending"
    flag. A wake-up landing between the two (another thread sets the flag and writes; the
    drain reads that write) left the flag set with nothing to read, and every later call_soon
    skipped its wake-up: on a quiet poller those callbacks never ran (a closed connection's
    socket stayed open)."""
    raced = threading.Event()

    def read(fd: int, size: int) -> bytes:
        if poller.in_poller_thread() and not raced.is_set():
            raced.set()
            poller._wake()  # what another thread's call_soon does at this moment
        return os.read(fd, size)

    monkeypatch.setattr(poller_module, "os", SimpleNamespace(**{**vars(os), "read": read}))
    first = threading.Event()
    poller.call_soon(first.set)
    assert first.wait(IO_TIMEOUT)
    assert raced.is_set()
    monkeypatch.undo()

    second = threading.Event()
    poller.call_soon(second.set)
    assert second.wait(1.0), "call_soon on an idle poller did not run: its wake-up was lost"


def test_wakeups_on_a_closed_poller_never_write_to_a_reused_fd():
    """Regression: call_soon and call_later on a closed poller wrote its wake-up bytes into
    whatever file now has the closed wake-up fd's number."""
    made = Poller("test-poller")
    wake_fd = made._wake_w
    made.close()
    pipes: list[tuple[int, int]] = []
    try:
        for _ in range(64):  # take the freed descriptor number back
            pipes.append(os.pipe())
            if wake_fd in pipes[-1]:
                break
        else:
            pytest.skip("could not reuse the closed wake-up fd number")
        ran: list[str] = []
        made.call_soon(lambda: ran.append("soon"))
        made.call_later(0.0, lambda: ran.append("later"))
        made.close()
        for r, _ in pipes:
            os.set_blocking(r, False)
            try:
                leaked = os.read(r, 100)
            except BlockingIOError:
                leaked = b""
            assert leaked == b"", f"a closed poller wrote {leaked!r} into a reused fd"
        assert ran[:1] == ["soon"], "call_soon on a stopped poller must still run its callback"
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


# ---------------------------------------------------------------------------- the manager


def test_configure_rejects_invalid_values(restore_configuration: None):
    with pytest.raises(ValueError):
        configure(num_loops=0)
    with pytest.raises(ValueError):
        configure(load_balance="least_loaded")
    assert manager().num_loops == 1


def test_three_loops_take_new_connections_round_robin(
    restore_configuration: None, serve: Any, clients: Clients
):
    """TestPollManagerReset / SetNumLoops: the count follows num_loops; picks go round robin."""
    configure(num_loops=3)
    pollers = manager().initialize()
    assert len(pollers) == 3
    assert len({id(p) for p in pollers}) == 3
    assert len(poller_threads()) == 3
    picks = [manager().pick() for _ in range(9)]
    first = pollers.index(picks[0])
    assert picks == [pollers[(first + i) % 3] for i in range(9)]

    before = [p.registered for p in manager().pollers()]
    server = serve(echo)  # the listener takes a poller too
    conns = [clients.dial(server) for _ in range(3)]
    for conn in conns:
        conn.write(b"x")
        assert conn.read_binary(1) == b"x"
    wait_until(lambda: len(server.loop.connections()) == 3, message="3 server connections")
    added = [p.registered - b for p, b in zip(manager().pollers(), before, strict=True)]
    assert sorted(added) == [2, 2, 3], "7 fds (listener, 3 dialed, 3 accepted) over 3 pollers"


def test_random_load_balance_uses_every_poller(restore_configuration: None):
    configure(num_loops=3, load_balance="random")
    pollers = manager().initialize()
    picks = [manager().pick() for _ in range(90)]
    assert set(map(id, picks)) == set(map(id, pollers))


def test_shrinking_retires_a_poller_only_once_its_connections_are_gone(
    restore_configuration: None, serve: Any, clients: Clients
):
    configure(num_loops=2)
    first, second = manager().initialize()
    server = serve(echo)
    conns = [clients.dial(server) for _ in range(4)]  # each poller gets some
    wait_until(lambda: len(server.loop.connections()) == 4, message="4 server connections")
    assert second.registered > 0
    second_thread = next(t for t in poller_threads() if t.name == "rpcpoll-poller-1")

    configure(num_loops=1)
    assert manager().initialize() == [first]
    time.sleep(0.25)  # the retirement check runs every 100 ms: give it two chances
    assert second_thread.is_alive(), "a poller with connections must not stop"
    for conn in conns:  # and it still serves them
        conn.write(b"still served")
        assert conn.read_binary(12) == b"still served"

    for conn in conns:
        conn.close()
    server.stop()
    second_thread.join(IO_TIMEOUT)
    assert not second_thread.is_alive(), "the retired poller did not stop once idle"
    assert second.closed
    assert [t.name for t in poller_threads()] == ["rpcpoll-poller-0"]


def test_a_blocking_read_on_any_poller_thread_raises_would_block(
    restore_configuration: None, serve: Any, clients: Clients, caplog: pytest.LogCaptureFixture
):
    """With several pollers, on_connect runs on the listener's poller, not the connection's:
    a blocking read there must still raise WouldBlockOnPollerError, not stall that poller."""
    configure(num_loops=2)
    manager().initialize()

    connected = [0]

    def on_connect(ctx: Any, conn: Connection) -> Any:
        connected[0] += 1
        if connected[0] == 1:
            conn.next(4)  # nothing buffered yet: this would block a poller thread
        return ctx

    server = serve(echo, on_connect=on_connect, run_on_poller=True)
    # Raw clients take no poller, so the accepted connections alternate: the first lands on
    # the poller that is not the listener's.
    blocked = clients.raw(server)
    assert recv_until_eof(blocked) == b""
    assert any(r.exc_info and r.exc_info[0] is WouldBlockOnPollerError for r in caplog.records)
    other = clients.raw(server)  # the listener's poller still accepts and serves
    other.sendall(b"ping")
    assert recv_exactly(other, 4) == b"ping"


# ---------------------------------------------------------------------------- hand-off


def _socket_pair_on(poller: Poller, handler: Any) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    poller.register(b.fileno(), lambda mask: handler(b, mask))
    return a, b


def test_a_blocked_handler_loses_the_loop_and_other_fds_are_served(poller: Poller) -> None:
    poller.watch_stalls(0.005)
    release = threading.Event()
    served = threading.Event()
    handler_threads: list[int] = []

    def blocking(sock: socket.socket, mask: int) -> None:
        sock.recv(100)
        handler_threads.append(threading.get_ident())
        release.wait(IO_TIMEOUT)

    def quick(sock: socket.socket, mask: int) -> None:
        sock.recv(100)
        served.set()

    slow_a, slow_b = _socket_pair_on(poller, blocking)
    quick_a, quick_b = _socket_pair_on(poller, quick)
    try:
        slow_a.send(b"block")
        wait_until(lambda: handler_threads, message="the blocking handler runs")
        quick_a.send(b"hello")
        started = time.monotonic()
        assert served.wait(IO_TIMEOUT)
        assert time.monotonic() - started < 0.5  # not held until the blocked handler returns
        assert poller.handoffs == 1
        assert not poller.in_poller_thread()
        release.set()
        # The old thread leaves once its handler returns: one loop thread again.
        wait_until(
            lambda: [t.name for t in threading.enumerate()].count("test-poller") == 1,
            message="the stalled thread leaves",
        )
        served.clear()
        quick_a.send(b"again")
        assert served.wait(IO_TIMEOUT)  # the new loop thread serves as the poller now
    finally:
        release.set()
        poller.unwatch_stalls()
        for sock in (slow_b, quick_b):
            poller.unregister(sock.fileno())
        for sock in (slow_a, slow_b, quick_a, quick_b):
            sock.close()


def test_hand_off_from_a_handler_gives_the_loop_away_at_once(poller: Poller) -> None:
    release = threading.Event()
    was_poller: list[bool] = []
    served = threading.Event()

    def known_to_block(sock: socket.socket, mask: int) -> None:
        sock.recv(100)
        poller.hand_off()
        was_poller.append(poller.in_poller_thread())
        release.wait(IO_TIMEOUT)

    def quick(sock: socket.socket, mask: int) -> None:
        sock.recv(100)
        served.set()

    slow_a, slow_b = _socket_pair_on(poller, known_to_block)
    quick_a, quick_b = _socket_pair_on(poller, quick)
    try:
        slow_a.send(b"block")
        wait_until(lambda: was_poller, message="the handler hands off")
        quick_a.send(b"hello")
        assert served.wait(IO_TIMEOUT)
        assert was_poller == [False] and poller.handoffs == 1
    finally:
        release.set()
        for sock in (slow_b, quick_b):
            poller.unregister(sock.fileno())
        for sock in (slow_a, slow_b, quick_a, quick_b):
            sock.close()


def test_the_watchdog_parks_when_idle_and_stops_when_unwatched(poller: Poller) -> None:
    poller.watch_stalls()
    wait_until(lambda: poller._watchdog_parked, message="the idle watchdog parks")
    poller.unwatch_stalls()
    wait_until(lambda: poller._watchdog is None, message="the watchdog stops")
    assert poller.handoffs == 0
