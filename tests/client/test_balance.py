"""Balancers: the sequences, the shares, the ring's stability, exclusions, threads."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcpoll.client.balance import (
    Balancer,
    ConsistentHash,
    Picker,
    WeightedRandom,
    WeightedRoundRobin,
    balancer_by_name,
)
from rpcpoll.discovery.base import DEFAULT_WEIGHT, Instance


def make(*weights: int) -> list[Instance]:
    return [Instance(f"10.0.0.{i}:80", weight=w) for i, w in enumerate(weights)]


def names(picks: Sequence[Instance | None]) -> str:
    """Instance i as the letter "abc..."[i] (from its address)."""
    return "".join("abcdefghij"[int(p.address.split(".")[3][:-3])] for p in picks if p)


def nginx_reference(weights: Sequence[int], count: int) -> list[int]:
    """nginx's smooth WRR, written as plainly as possible: the indexes picked."""
    current = [0] * len(weights)
    picked = []
    for _ in range(count):
        best = -1
        for i, weight in enumerate(weights):
            current[i] += weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= sum(weights)
        picked.append(best)
    return picked


ALL_BALANCERS: list[Callable[[], Balancer]] = [
    lambda: WeightedRoundRobin(),
    lambda: WeightedRoundRobin(start=0, max_table=1),  # the step-per-pick variant
    lambda: WeightedRandom(random.Random(7)),
    lambda: ConsistentHash(),
]
BALANCER_IDS = ["wrr", "wrr-step", "random", "hash"]


# ----------------------------------------------------------------------------- common


@pytest.mark.parametrize("factory", ALL_BALANCERS, ids=BALANCER_IDS)
def test_empty_list_picks_none(factory: Callable[[], Balancer]) -> None:
    picker = factory().picker([])
    assert picker.pick() is None
    assert picker.pick("key") is None
    assert picker.pick(None, {Instance("x:1")}) is None


@pytest.mark.parametrize("factory", ALL_BALANCERS, ids=BALANCER_IDS)
def test_single_instance(factory: Callable[[], Balancer]) -> None:
    only = Instance("10.0.0.1:80", weight=3)
    picker = factory().picker([only])
    assert all(picker.pick(key) is only for key in (None, "k", b"k"))
    assert picker.pick("k", {only}) is None
    assert picker.pick(None, {Instance("10.0.0.2:80")}) is only


@pytest.mark.parametrize("factory", ALL_BALANCERS, ids=BALANCER_IDS)
def test_returns_the_given_objects(factory: Callable[[], Balancer]) -> None:
    instances = [Instance(f"h{i}:1", tags={"i": str(i)}) for i in range(5)]
    picker = factory().picker(instances)
    for n in range(200):
        picked = picker.pick(f"key{n}")
        assert any(picked is inst for inst in instances)


@pytest.mark.parametrize("factory", ALL_BALANCERS, ids=BALANCER_IDS)
def test_exclusions(factory: Callable[[], Balancer]) -> None:
    instances = make(5, 1, 1, 3)
    picker = factory().picker(instances)
    for out in range(len(instances)):
        excluded = set(instances[: out + 1])
        for n in range(300):
            picked = picker.pick(f"k{n}", excluded)
            if out == len(instances) - 1:
                assert picked is None
            else:
                assert picked is not None and picked not in excluded


@pytest.mark.parametrize("factory", ALL_BALANCERS, ids=BALANCER_IDS)
@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(-2, 40), min_size=1, max_size=8),
    mask=st.lists(st.booleans(), min_size=8, max_size=8),
    keys=st.lists(st.one_of(st.none(), st.text(max_size=5), st.binary(max_size=5)), max_size=20),
)
def test_exclusions_property(
    factory: Callable[[], Balancer],
    weights: list[int],
    mask: list[bool],
    keys: list[str | bytes | None],
) -> None:
    instances = make(*weights)
    excluded = {inst for inst, out in zip(instances, mask, strict=False) if out}
    picker = factory().picker(instances)
    for key in keys:
        picked = picker.pick(key, excluded)
        if len(excluded) == len(instances):
            assert picked is None
        else:
            assert picked in instances and picked not in excluded


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("round_robin", WeightedRoundRobin),
        ("weighted_round_robin", WeightedRoundRobin),
        ("Round-Robin", WeightedRoundRobin),
        ("random", WeightedRandom),
        ("weighted_random", WeightedRandom),
        ("consistent_hash", ConsistentHash),
    ],
)
def test_balancer_by_name(name: str, kind: type) -> None:
    balancer = balancer_by_name(name)
    assert isinstance(balancer, kind)
    assert balancer_by_name(balancer.name).name == balancer.name


def test_balancer_by_name_unknown() -> None:
    with pytest.raises(ValueError, match=r"unknown balancer 'least_conn'.*consistent_hash"):
        balancer_by_name("least_conn")


def test_nonpositive_weights_count_as_default() -> None:
    instances = [Instance("a:1", weight=0), Instance("b:1", weight=-3), Instance("c:1")]
    picker = WeightedRoundRobin().picker(instances)
    counts = Counter(picker.pick() for _ in range(300))
    assert set(counts.values()) == {100}
    heavy = [Instance("a:1", weight=0), Instance("b:1", weight=2 * DEFAULT_WEIGHT)]
    picker = WeightedRoundRobin().picker(heavy)
    counts = Counter(picker.pick() for _ in range(300))
    assert counts[heavy[0]] == 100 and counts[heavy[1]] == 200


# ----------------------------------------------------------------------------- round-robin


def test_wrr_nginx_sequence() -> None:
    for weights in [(5, 1, 1), (50, 10, 10)]:  # the gcd does not change the sequence
        for max_table in (1 << 15, 1):
            picker = WeightedRoundRobin(start=0, max_table=max_table).picker(make(*weights))
            assert names([picker.pick() for _ in range(14)]) == "aabacaa" * 2


def test_wrr_equal_weights_is_round_robin() -> None:
    instances = make(10, 10, 10, 10)
    picker = WeightedRoundRobin().picker(instances)
    first = [picker.pick() for _ in range(4)]
    assert sorted(names(first)) == list("abcd")
    assert [picker.pick() for _ in range(8)] == first * 2


@settings(max_examples=80, deadline=None)
@given(
    weights=st.lists(st.integers(1, 30), min_size=2, max_size=7),
    start=st.integers(0, 1000),
)
def test_wrr_matches_nginx_and_weights(weights: list[int], start: int) -> None:
    instances = make(*weights)
    total = sum(weights)
    expected = nginx_reference(weights, total + start)[start:]
    for max_table in (1 << 15, 1):
        picker = WeightedRoundRobin(start=start, max_table=max_table).picker(instances)
        picks = [picker.pick() for _ in range(total)]
        counts = Counter(picks)
        assert [counts[inst] for inst in instances] == weights
        if len(set(weights)) > 1:  # equal weights: plain round-robin, same shares
            assert picks == [instances[i] for i in expected]


def test_wrr_random_start_keeps_shares() -> None:
    instances = make(7, 2, 1)
    for _ in range(20):
        picker = WeightedRoundRobin().picker(instances)
        counts = Counter(picker.pick() for _ in range(10 * 50))
        assert [counts[inst] for inst in instances] == [350, 100, 50]


def test_wrr_exclusion_keeps_remaining_shares() -> None:
    instances = make(3, 2, 1)
    picker = WeightedRoundRobin(start=0).picker(instances)
    counts = Counter(picker.pick(None, {instances[2]}) for _ in range(5000))
    assert counts[instances[2]] == 0
    assert counts[instances[0]] / counts[instances[1]] == pytest.approx(1.5, rel=0.01)
    # 5, 1, 1 without "a": b and c alternate
    picker = WeightedRoundRobin(start=0).picker(make(5, 1, 1))
    excluded = {make(5, 1, 1)[0]}
    assert names([picker.pick(None, excluded) for _ in range(6)]) in ("bcbcbc", "cbcbcb")


def test_wrr_long_period_uses_steps() -> None:
    # A period beyond the table: picks are computed one step at a time, still exact.
    weights = [40000, 30001, 1]
    picker = WeightedRoundRobin(start=0, max_table=1 << 15).picker(make(*weights))
    expected = nginx_reference(weights, 2000)
    instances = make(*weights)
    assert [picker.pick() for _ in range(2000)] == [instances[i] for i in expected]


@pytest.mark.parametrize(
    ("weights", "max_table"),
    [((10, 10, 10), 1 << 15), ((3, 2, 1), 1 << 15), ((700, 300, 1), 1 << 15), ((3, 2, 1), 1)],
    ids=["round-robin", "table", "lazy-table", "step"],
)
def test_wrr_threads(weights: tuple[int, ...], max_table: int) -> None:
    instances = make(*weights)
    picker = WeightedRoundRobin(max_table=max_table).picker(instances)
    per_thread = sum(weights) * 6
    results: list[Counter[Instance | None]] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        results.append(Counter(picker.pick() for _ in range(per_thread)))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total: Counter[Instance | None] = sum(results, Counter())
    share = 8 * per_thread // sum(weights)
    assert [total[inst] for inst in instances] == [w * share for w in weights]


# ----------------------------------------------------------------------------- random


def test_random_shares_within_tolerance() -> None:
    instances = make(5, 3, 2)
    picker = WeightedRandom(random.Random(1234)).picker(instances)
    n = 100_000
    counts = Counter(picker.pick() for _ in range(n))
    for inst, weight in zip(instances, (5, 3, 2), strict=True):
        assert counts[inst] / n == pytest.approx(weight / 10, abs=0.01)


def test_random_equal_weights_and_exclusion() -> None:
    instances = make(1, 1, 1, 1)
    picker = WeightedRandom(random.Random(99)).picker(instances)
    n = 80_000
    counts = Counter(picker.pick(None, {instances[0]}) for _ in range(n))
    assert counts[instances[0]] == 0
    for inst in instances[1:]:
        assert counts[inst] / n == pytest.approx(1 / 3, abs=0.01)


def test_random_is_reproducible_with_a_seed() -> None:
    instances = make(5, 3, 2, 1)
    one = WeightedRandom(random.Random(5)).picker(instances)
    two = WeightedRandom(random.Random(5)).picker(instances)
    assert [one.pick() for _ in range(100)] == [two.pick() for _ in range(100)]


def test_random_exclusion_filter_keeps_weights() -> None:
    # The heavy instance is excluded: most draws are rejected, the filter takes over.
    instances = make(1000, 2, 1)
    picker = WeightedRandom(random.Random(3)).picker(instances)
    counts = Counter(picker.pick(None, {instances[0]}) for _ in range(30_000))
    assert counts[instances[1]] / counts[instances[2]] == pytest.approx(2, rel=0.08)


# ----------------------------------------------------------------------------- consistent hash

KEYS = [f"user-{n}" for n in range(10_000)]


def mapping(picker: Picker, keys: Sequence[str] = KEYS) -> dict[str, Instance | None]:
    return {key: picker.pick(key) for key in keys}


def test_hash_same_key_same_instance() -> None:
    instances = make(10, 10, 10, 10, 10)
    picker = ConsistentHash().picker(instances)
    first = mapping(picker)
    assert mapping(picker) == first
    # A rebuilt picker, from the list in another order, is the same ring.
    shuffled = instances[:]
    random.Random(1).shuffle(shuffled)
    assert mapping(ConsistentHash().picker(shuffled)) == first
    assert picker.pick("user-1") == picker.pick(b"user-1")
    assert len(set(first.values())) == 5


def test_hash_is_stable_across_processes() -> None:
    # Not Python's salted hash(): another interpreter with another seed maps keys the same.
    code = (
        "from rpcpoll.client.balance import ConsistentHash\n"
        "from rpcpoll.discovery.base import Instance\n"
        "p = ConsistentHash().picker([Instance(f'10.0.0.{i}:80') for i in range(5)])\n"
        "print(' '.join(p.pick(f'user-{n}').address for n in range(50)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    picker = ConsistentHash().picker(make(10, 10, 10, 10, 10))
    assert out == [picker.pick(f"user-{n}").address for n in range(50)]  # type: ignore[union-attr]


def test_hash_removing_one_moves_only_its_keys() -> None:
    instances = make(*[10] * 10)
    before = mapping(ConsistentHash().picker(instances))
    gone = instances[3]
    after = mapping(ConsistentHash().picker([i for i in instances if i != gone]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == gone for key in moved)
    assert sum(1 for key in KEYS if before[key] == gone) == len(moved)
    assert 0.05 <= len(moved) / len(KEYS) <= 0.15


def test_hash_adding_one_moves_keys_only_to_it() -> None:
    instances = make(*[10] * 10)
    before = mapping(ConsistentHash().picker(instances[:9]))
    after = mapping(ConsistentHash().picker(instances))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == instances[9] for key in moved)
    assert 0.05 <= len(moved) / len(KEYS) <= 0.15


def test_hash_exclusion_is_like_removal() -> None:
    instances = make(10, 20, 10, 5, 10)
    picker = ConsistentHash().picker(instances)
    for out in instances:
        without = ConsistentHash().picker([i for i in instances if i != out])
        keys = KEYS[:2000]
        assert {k: picker.pick(k, {out}) for k in keys} == mapping(without, keys)
    two_out = {instances[0], instances[1]}
    rest = ConsistentHash().picker(instances[2:])
    assert {k: picker.pick(k, two_out) for k in KEYS[:2000]} == mapping(rest, KEYS[:2000])


def test_hash_shares_follow_weights() -> None:
    instances = make(10, 10, 20, 10)
    counts = Counter(mapping(ConsistentHash().picker(instances)).values())
    per_weight = [counts[inst] / inst.weight for inst in instances]
    mean = sum(per_weight) / len(per_weight)
    assert all(0.7 * mean <= share <= 1.3 * mean for share in per_weight)


def test_hash_without_key_round_robins() -> None:
    instances = make(10, 10, 10)
    picker = ConsistentHash().picker(instances)
    for key in (None, "", b""):
        assert sorted(names([picker.pick(key) for _ in range(3)])) == list("abc")
    assert picker.pick(None, set(instances)) is None


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.integers(1, 30), min_size=2, max_size=6),
    key=st.one_of(st.text(min_size=1), st.binary(min_size=1)),
)
def test_hash_walk_matches_removal(weights: list[int], key: str | bytes) -> None:
    instances = make(*weights)
    picker = ConsistentHash(vnodes_per_weight=2).picker(instances)
    owner = picker.pick(key)
    assert owner is not None
    without = ConsistentHash(vnodes_per_weight=2).picker([i for i in instances if i != owner])
    assert picker.pick(key, {owner}) == without.pick(key)
