"""The instance circuit breaker's state machine, on a fake clock, and under threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcpoll.client.breaker import (
    NO_BREAKER,
    BreakerState,
    CircuitBreaker,
    InstanceBreaker,
    default_breaker_factory,
)
from rpcpoll.discovery.base import Instance

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: FakeClock, **options: float) -> InstanceBreaker:
    return InstanceBreaker(clock=clock, **options)  # type: ignore[arg-type]


def trip(b: InstanceBreaker, failures: int = 5) -> None:
    for _ in range(failures):
        b.on_failure()
    assert b.state is OPEN


def test_closed_allows() -> None:
    b = breaker(FakeClock())
    assert b.state is CLOSED
    assert all(b.allow() for _ in range(100))


def test_consecutive_failures_open() -> None:
    b = breaker(FakeClock())
    for _ in range(4):
        b.on_failure()
    assert b.state is CLOSED and b.allow()
    b.on_failure()
    assert b.state is OPEN
    assert not b.allow()


def test_success_resets_consecutive_count() -> None:
    b = breaker(FakeClock())
    for _ in range(3):
        for _ in range(4):
            b.on_failure()
        b.on_success()
    assert b.state is CLOSED  # 12 failures, never 5 in a row, 15 samples < min_samples


def test_error_rate_opens_after_min_samples() -> None:
    b = breaker(FakeClock(), failure_threshold=1000)
    for _ in range(9):
        b.on_success()
        b.on_failure()
    b.on_success()
    assert b.state is CLOSED  # 19 samples: below min_samples whatever the rate
    b.on_failure()
    assert b.state is OPEN  # 20 samples, 10 failed: rate 0.5


def test_error_rate_below_threshold_stays_closed() -> None:
    b = breaker(FakeClock(), failure_threshold=1000)
    for n in range(100):
        b.on_failure() if n % 5 < 2 else b.on_success()  # 40 % failures
    assert b.state is CLOSED


def test_error_rate_needs_min_samples() -> None:
    b = breaker(FakeClock(), failure_threshold=1000, min_samples=50)
    for _ in range(49):
        b.on_failure()
    assert b.state is CLOSED
    b.on_failure()
    assert b.state is OPEN


def test_window_rollover_forgets_old_outcomes() -> None:
    clock = FakeClock()
    b = breaker(clock, failure_threshold=1000, min_samples=4, window=10.0)
    for _ in range(3):
        b.on_failure()
    clock.advance(11.0)  # every bucket of those failures has slid out
    b.on_failure()
    assert b.state is CLOSED
    for _ in range(2):
        b.on_failure()
    clock.advance(5.0)  # still inside the window: 4 samples, all failed
    b.on_failure()
    assert b.state is OPEN


def test_window_slides_by_bucket() -> None:
    clock = FakeClock(0.0)
    b = breaker(clock, failure_threshold=1000, min_samples=10, window=10.0)
    for second in range(9):  # one failure a second for 9 s: 9 samples
        clock.now = second + 0.5
        b.on_failure()
    clock.now = 10.5  # the bucket of second 0 has gone: 8 samples, then this one
    b.on_failure()
    assert b.state is CLOSED
    b.on_failure()
    assert b.state is OPEN


def test_cooldown_then_one_probe() -> None:
    clock = FakeClock()
    b = breaker(clock)
    trip(b)
    clock.advance(0.999)
    assert not b.allow()
    assert b.state is OPEN
    clock.advance(0.001)
    assert b.allow()
    assert b.state is HALF_OPEN
    assert not b.allow()
    assert not b.allow()


def test_probe_success_closes_and_resets() -> None:
    clock = FakeClock()
    b = breaker(clock)
    trip(b)
    clock.advance(1.0)
    assert b.allow()
    b.on_failure()  # the probe failed: cooldown doubles
    assert b.cooldown == 2.0
    clock.advance(2.0)
    assert b.allow()
    b.on_success()
    assert b.state is CLOSED and b.cooldown == 1.0
    assert b.allow()
    for _ in range(4):  # counters were cleared: four more failures do not open it
        b.on_failure()
    assert b.state is CLOSED
    b.on_failure()
    assert b.state is OPEN
    clock.advance(1.0)  # the cooldown is the initial one again
    assert b.allow()


def test_close_clears_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock, failure_threshold=1000)
    for _ in range(10):
        b.on_success()
    for _ in range(10):
        b.on_failure()
    assert b.state is OPEN  # by error rate: 10 of 20
    clock.advance(1.0)
    assert b.allow()
    b.on_success()
    b.on_failure()
    assert b.state is CLOSED  # 1 sample, not 21
    for _ in range(18):
        b.on_failure()
    assert b.state is CLOSED
    b.on_failure()
    assert b.state is OPEN  # 20 samples since the close, all failed


def test_probe_failure_doubles_cooldown_up_to_max() -> None:
    clock = FakeClock()
    b = breaker(clock, cooldown=1.0, max_cooldown=30.0)
    trip(b)
    waits = []
    for _ in range(8):
        waits.append(b.cooldown)
        clock.advance(b.cooldown - 0.01)
        assert not b.allow()
        clock.advance(0.01)
        assert b.allow()
        b.on_failure()
        assert b.state is OPEN
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_lost_probe_lets_another_through() -> None:
    clock = FakeClock()
    b = breaker(clock)
    trip(b)
    clock.advance(1.0)
    assert b.allow()  # the probe's caller never reports
    clock.advance(0.5)
    assert not b.allow()
    clock.advance(0.5)
    assert b.allow()
    assert not b.allow()
    b.on_success()
    assert b.state is CLOSED


def test_outcomes_while_open_are_ignored() -> None:
    clock = FakeClock()
    b = breaker(clock)
    trip(b)
    b.on_success()  # a call let through before the breaker opened
    assert b.state is OPEN and not b.allow()
    b.on_failure()
    assert b.state is OPEN and b.cooldown == 1.0
    clock.advance(1.0)
    assert b.allow()


def race_for_probe(threads: int) -> tuple[int, BreakerState]:
    """Threads calling allow() on a breaker whose cooldown has just passed: how many got
    True, and the state after."""
    clock = FakeClock()
    b = breaker(clock)
    trip(b)
    clock.advance(1.0)
    barrier = threading.Barrier(threads)
    answers: list[bool] = []

    def ask() -> None:
        barrier.wait()
        answers.extend(b.allow() for _ in range(50))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers.count(True), b.state


def test_half_open_admits_exactly_one_thread() -> None:
    for _ in range(20):
        assert race_for_probe(16) == (1, HALF_OPEN)


def test_concurrent_reports() -> None:
    b = InstanceBreaker(failure_threshold=10**6, min_samples=10**6)
    barrier = threading.Barrier(8)

    def report(n: int) -> None:
        barrier.wait()
        for i in range(2000):
            assert b.allow()
            b.on_failure() if (i + n) % 2 else b.on_success()

    threads = [threading.Thread(target=report, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert b.state is CLOSED
    trip(InstanceBreaker())


def test_no_breaker_always_allows() -> None:
    b: CircuitBreaker = NO_BREAKER(Instance("a:1"))
    for _ in range(100):
        b.on_failure()
    assert b.allow() and b.state is CLOSED


def test_default_factory() -> None:
    one, two = default_breaker_factory(Instance("a:1")), default_breaker_factory(Instance("a:1"))
    assert isinstance(one, InstanceBreaker) and one is not two


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"min_samples": 0},
        {"window": 0.0},
        {"buckets": 0},
        {"cooldown": 0.0},
        {"cooldown": 5.0, "max_cooldown": 1.0},
    ],
)
def test_invalid_settings(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InstanceBreaker(**options)  # type: ignore[arg-type]


Step = tuple[str, float]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["allow", "ok", "fail"]), st.just(0.0)),
            st.tuples(st.just("wait"), st.floats(0.0, 5.0)),
        ),
        max_size=120,
    )
)
def test_invariants(steps: list[Step]) -> None:
    clock = FakeClock(0.0)
    b = InstanceBreaker(failure_threshold=3, min_samples=4, clock=clock, max_cooldown=8.0)
    for op, seconds in steps:
        before = b.state
        if op == "wait":
            clock.advance(seconds)
        elif op == "allow":
            allowed = b.allow()
            if before is CLOSED:
                assert allowed
            if allowed and before is not CLOSED:
                assert b.state is HALF_OPEN
                assert not b.allow()  # one probe at a time
        elif op == "ok":
            b.on_success()
            if before is not OPEN:
                assert b.state is CLOSED
        else:
            b.on_failure()
            if before is HALF_OPEN:
                assert b.state is OPEN
        assert b.cooldown in (1.0, 2.0, 4.0, 8.0)
