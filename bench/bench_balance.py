"""Cost of balancing and circuit breaking per call.

Prints, for each balancer over 3 and 100 instances (equal weights, and mixed weights 1..10 x
10): ns per pick with no exclusion and with one excluded instance, and the time to build the
picker; then ns per allow() + on_success() of a closed InstanceBreaker. Consistent-hash picks
use a different string key each time (a pool of 4096). Best of several rounds.
Run: python bench/bench_balance.py [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence

from rpcpoll.client.balance import Balancer, ConsistentHash, WeightedRandom, WeightedRoundRobin
from rpcpoll.client.breaker import InstanceBreaker
from rpcpoll.discovery.base import Instance

PICKS = 200_000
KEYS = [f"user-{n}" for n in range(4096)]


def instances(count: int, mixed: bool) -> list[Instance]:
    return [
        Instance(f"10.0.{i // 256}.{i % 256}:8888", weight=10 * (1 + i % 10) if mixed else 10)
        for i in range(count)
    ]


def best_of(rounds: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(rounds))


def time_picks(balancer: Balancer, group: Sequence[Instance], exclude: bool) -> float:
    """ns per pick."""
    picker = balancer.picker(group)
    pick = picker.pick
    excluded = {group[0]} if exclude else set()
    keys = itertools.islice(itertools.cycle(KEYS), PICKS)
    if isinstance(balancer, ConsistentHash):
        start = time.perf_counter_ns()
        for key in keys:
            pick(key, excluded)
    else:
        start = time.perf_counter_ns()
        for _ in keys:
            pick(None, excluded)
    return (time.perf_counter_ns() - start) / PICKS


def time_loop() -> float:
    """ns per iteration of the timing loop alone: included in the numbers above."""
    noop = {}.get
    start = time.perf_counter_ns()
    for _ in itertools.islice(itertools.cycle(KEYS), PICKS):
        noop(None, None)
    return (time.perf_counter_ns() - start) / PICKS


def time_build(balancer: Balancer, group: Sequence[Instance]) -> float:
    """µs per picker() call."""
    start = time.perf_counter_ns()
    for _ in range(5):
        balancer.picker(group)
    return (time.perf_counter_ns() - start) / 5 / 1000


def time_breaker() -> float:
    """ns per allow() + on_success() on a closed breaker."""
    breaker = InstanceBreaker()
    allow, success = breaker.allow, breaker.on_success
    start = time.perf_counter_ns()
    for _ in range(PICKS):
        if allow():
            success()
    return (time.perf_counter_ns() - start) / PICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    balancers: list[tuple[str, Callable[[], Balancer]]] = [
        ("weighted_round_robin", WeightedRoundRobin),
        ("weighted_random", WeightedRandom),
        ("consistent_hash", ConsistentHash),
    ]
    header = f"{'balancer':<22}{'n':>5} {'weights':<8}{'ns/pick':>9}{'1 excl.':>9}{'build µs':>11}"
    print(header)
    print("-" * len(header))
    for name, make in balancers:
        for count in (3, 100):
            for mixed in (False, True):
                group = instances(count, mixed)
                plain = best_of(rounds, lambda: time_picks(make(), group, False))  # noqa: B023
                excl = best_of(rounds, lambda: time_picks(make(), group, True))  # noqa: B023
                build = best_of(rounds, lambda: time_build(make(), group))  # noqa: B023
                kind = "mixed" if mixed else "equal"
                print(f"{name:<22}{count:>5} {kind:<8}{plain:>9.0f}{excl:>9.0f}{build:>11.0f}")
    print(f"\nloop + one call overhead (included above): {best_of(rounds, time_loop):.0f} ns")
    print(f"InstanceBreaker allow() + on_success(): {best_of(rounds, time_breaker):.0f} ns")


if __name__ == "__main__":
    main()
