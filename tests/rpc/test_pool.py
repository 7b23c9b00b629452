"""The long-connection pool's rules (Kitex's LongPool), with stand-in connections."""

from __future__ import annotations

import pytest

from rpcpoll.client.pool import IdleBudget, Pool, PoolOptions


class FakeConnection:
    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.closed_calls = 0

    def is_active(self) -> bool:
        return self.alive and not self.closed_calls

    @property
    def closed(self) -> bool:
        return bool(self.closed_calls)

    def close(self) -> None:
        self.closed_calls += 1


def pool(budget: IdleBudget | None = None, **options: float) -> Pool:
    return Pool(PoolOptions(**options), budget or IdleBudget())  # type: ignore[arg-type]


def test_get_returns_the_most_recently_returned_connection() -> None:
    p = pool()
    a, b = FakeConnection(), FakeConnection()
    p.put(a)  # type: ignore[arg-type]
    p.put(b)  # type: ignore[arg-type]
    assert p.get() is b and p.get() is a and p.get() is None


def test_dead_idle_connections_are_closed_and_skipped() -> None:
    p = pool()
    alive, dead = FakeConnection(), FakeConnection()
    p.put(alive)  # type: ignore[arg-type]
    p.put(dead)  # type: ignore[arg-type]
    dead.alive = False  # the peer closed it while it was idle
    assert p.get() is alive
    assert dead.closed_calls == 1 and p.idle == 0


def test_idle_connections_are_capped_per_address_and_overall() -> None:
    budget = IdleBudget()
    first = pool(budget, max_idle_per_address=2, max_idle_global=3)
    second = pool(budget, max_idle_per_address=2, max_idle_global=3)
    conns = [FakeConnection() for _ in range(5)]
    for conn in conns[:3]:
        first.put(conn)  # type: ignore[arg-type]
    assert first.idle == 2 and conns[2].closed_calls == 1  # per-address cap
    for conn in conns[3:]:
        second.put(conn)  # type: ignore[arg-type]
    assert second.idle == 1 and conns[4].closed_calls == 1  # global cap of 3
    assert budget.idle == 3
    first.get()
    assert budget.idle == 2


def test_connections_idle_too_long_are_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    import rpcpoll.client.pool as pool_module

    now = [1000.0]
    monkeypatch.setattr(pool_module.time, "monotonic", lambda: now[0])
    p = pool(max_idle_timeout=60.0)
    old = FakeConnection()
    p.put(old)  # type: ignore[arg-type]
    now[0] += 61
    assert p.get() is None and old.closed_calls == 1


def test_put_sweeps_expired_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    import rpcpoll.client.pool as pool_module

    now = [1000.0]
    monkeypatch.setattr(pool_module.time, "monotonic", lambda: now[0])
    p = pool(max_idle_timeout=10.0)
    old = FakeConnection()
    p.put(old)  # type: ignore[arg-type]
    now[0] += 11
    fresh = FakeConnection()
    p.put(fresh)  # type: ignore[arg-type]
    assert old.closed_calls == 1 and p.idle == 1


def test_closed_connections_and_a_closed_pool_keep_nothing() -> None:
    p = pool()
    gone = FakeConnection()
    gone.close()
    p.put(gone)  # type: ignore[arg-type]
    assert p.idle == 0
    kept = FakeConnection()
    p.put(kept)  # type: ignore[arg-type]
    p.close()
    assert kept.closed_calls == 1 and p.idle == 0
    late = FakeConnection()
    p.put(late)  # type: ignore[arg-type]
    assert late.closed_calls == 1


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        PoolOptions(max_idle_per_address=-1)
    with pytest.raises(ValueError):
        PoolOptions(max_idle_timeout=0)
