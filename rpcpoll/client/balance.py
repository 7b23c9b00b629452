"""Load balancing: which instance a call goes to.

A `Balancer` turns an instance list into a `Picker` each time the list changes; the picker is
asked once per attempt. Contracts every picker here keeps:

- `pick(key, excluded)` returns one of the instances it was built from (the very objects, so
  they can be dict keys) that is not in `excluded`, or None when there is none: an empty list,
  or every instance excluded. It never raises for a well-formed call.
- It is safe to call from any number of threads at once, without a lock on the common path
  (no exclusions); the per-list work is done once, in `Balancer.picker()`.
- A weight <= 0 counts as `DEFAULT_WEIGHT`, as Kitex's resolvers do: a registry that leaves the
  weight unset must not take an instance out of rotation (withdraw it instead).
- Duplicated instances in the list count as many times as they appear.

The balancers: `WeightedRoundRobin` (the default: nginx's smooth weighted round-robin, as
Kitex's since 2023), `WeightedRandom`, and `ConsistentHash` (a ketama-style ring over a
per-call key). `docs/balancing.md` describes the algorithms and their costs.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import struct
import sys
import threading
import zlib
from bisect import bisect_right
from collections.abc import Callable, Container, Sequence
from operator import add
from typing import Protocol

from ..discovery.base import DEFAULT_WEIGHT, Instance

__all__ = [
    "Balancer",
    "ConsistentHash",
    "Picker",
    "WeightedRandom",
    "WeightedRoundRobin",
    "balancer_by_name",
]

# How many more draws a picker makes when its draw is excluded, before it filters the whole
# list (O(n)). Redrawing keeps the shares of the remaining instances exact (it just skips the
# excluded slots of the sequence, or rejects samples); the filter bounds the worst case.
_REDRAWS = 8

# Smooth WRR repeats with a period of sum(weights) picks (after dividing by their gcd). Up to
# this period the sequence is tabulated (lazily, _BATCH entries at a time, O(n) each), so that
# a pick is one counter increment and one list index: O(1) once the table is filled, O(n)
# amortised while it fills. A longer period would cost too much memory (8 bytes an entry) and
# filling time, so beyond it each pick runs one step of nginx's algorithm under a lock, O(n).
# That needs weights whose gcd-reduced sum exceeds 32768: rare, as weights are usually small
# multiples of the default 10.
_MAX_TABLE = 1 << 15
_BATCH = 512

# Under the GIL, next() on an itertools.count is one C call that never releases it: atomic, so
# concurrent pickers each get a distinct number without a lock. A free-threaded build has no
# such guarantee, so there the counter takes a lock.
_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def _counter(start: int) -> Callable[[], int]:
    """A thread-safe source of consecutive integers from `start`."""
    count = itertools.count(start)
    if _GIL:
        return count.__next__
    lock = threading.Lock()

    def tick() -> int:
        with lock:
            return next(count)

    return tick


def _weights(instances: Sequence[Instance]) -> list[int]:
    return [w if w > 0 else DEFAULT_WEIGHT for w in (inst.weight for inst in instances)]


def _remaining(
    instances: Sequence[Instance], weights: Sequence[int], excluded: Container[Instance]
) -> tuple[list[Instance], list[int]]:
    """The instances not excluded, and their cumulative weights."""
    kept: list[Instance] = []
    cumulative: list[int] = []
    total = 0
    for inst, weight in zip(instances, weights, strict=True):
        if inst not in excluded:
            total += weight
            kept.append(inst)
            cumulative.append(total)
    return kept, cumulative


class Picker(Protocol):
    """Chooses the instance for one attempt (see the module docs for the contract)."""

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None: ...


class Balancer(Protocol):
    """Builds a Picker for an instance list; `picker()` is called on every list change."""

    name: str

    def picker(self, instances: Sequence[Instance]) -> Picker: ...


# ----------------------------------------------------------------------------- pickers


class _EmptyPicker:
    __slots__ = ()

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        return None


_EMPTY = _EmptyPicker()


class _SinglePicker:
    __slots__ = ("_instance",)

    def __init__(self, instance: Instance) -> None:
        self._instance = instance

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        instance = self._instance
        if excluded and instance in excluded:
            return None
        return instance


class _Redrawing:
    """The exclusion path of drawing pickers: draw again a few times, then filter.

    Fresh draws skip the excluded instances and leave the others their order and their shares,
    where walking on from a refused slot would hand all of its share to the next instance.
    """

    __slots__ = ("_instances", "_weights")

    def __init__(self, instances: Sequence[Instance], weights: Sequence[int]) -> None:
        self._instances = tuple(instances)
        self._weights = tuple(weights)

    def _next(self) -> Instance:
        raise NotImplementedError

    def _point(self, total: int) -> float:
        """A draw in [0, total) for picking among the instances left."""
        raise NotImplementedError

    def _pick_excluding(self, excluded: Container[Instance]) -> Instance | None:
        for _ in range(_REDRAWS):
            instance = self._next()
            if instance not in excluded:
                return instance
        kept, cumulative = _remaining(self._instances, self._weights, excluded)
        if not kept:
            return None
        return kept[bisect_right(cumulative, self._point(cumulative[-1]))]


class _Sequenced(_Redrawing):
    """Pickers that follow a sequence, numbered by a shared counter."""

    __slots__ = ("_tick",)

    def __init__(self, instances: Sequence[Instance], weights: Sequence[int], start: int) -> None:
        super().__init__(instances, weights)
        self._tick = _counter(start)

    def _point(self, total: int) -> float:
        return self._tick() % total


class _RoundRobinPicker(_Sequenced):
    __slots__ = ("_n",)

    def __init__(self, instances: Sequence[Instance], start: int) -> None:
        super().__init__(instances, [1] * len(instances), start)
        self._n = len(instances)

    def _next(self) -> Instance:
        return self._instances[self._tick() % self._n]

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        instance = self._instances[self._tick() % self._n]
        if excluded and instance in excluded:
            return self._pick_excluding(excluded)
        return instance


def _smooth_steps(
    instances: Sequence[Instance],
    weights: Sequence[int],
    total: int,
    current: list[int],
    count: int,
) -> tuple[list[Instance], list[int]]:
    """`count` steps of nginx's smooth WRR from the `current` weights: the picks, the new
    current weights. Each step adds every weight to its current weight and picks the first
    largest, which then gives back the total."""
    picks: list[Instance] = []
    for _ in range(count):
        current = list(map(add, current, weights))
        best = current.index(max(current))
        current[best] -= total
        picks.append(instances[best])
    return picks, current


class _SmoothTablePicker(_Sequenced):
    """Smooth WRR read from a table of one period, filled lazily (see _MAX_TABLE)."""

    __slots__ = ("_current", "_filled", "_lock", "_period", "_table")

    def __init__(self, instances: Sequence[Instance], weights: Sequence[int], start: int) -> None:
        super().__init__(instances, weights, start)
        self._period = sum(weights)
        self._table: list[Instance | None] = [None] * self._period
        self._current = [0] * len(weights)
        self._filled = 0
        self._lock = threading.Lock()
        self._fill(0)  # the first batch now, off the call path

    def _fill(self, index: int) -> Instance:
        with self._lock:
            # Another thread may have filled it while this one waited for the lock.
            if self._filled <= index:
                end = min(self._period, max(index + 1, self._filled + _BATCH))
                picks, self._current = _smooth_steps(
                    self._instances, self._weights, self._period, self._current, end - self._filled
                )
                self._table[self._filled : end] = picks
                self._filled = end
            found = self._table[index]
        assert found is not None
        return found

    def _next(self) -> Instance:
        index = self._tick() % self._period
        return self._table[index] or self._fill(index)

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        index = self._tick() % self._period
        instance = self._table[index] or self._fill(index)
        if excluded and instance in excluded:
            return self._pick_excluding(excluded)
        return instance


class _SmoothStepPicker(_Sequenced):
    """Smooth WRR one step per pick, under a lock: for periods too long to tabulate."""

    __slots__ = ("_current", "_lock", "_total")

    def __init__(self, instances: Sequence[Instance], weights: Sequence[int], start: int) -> None:
        super().__init__(instances, weights, 0)
        self._total = sum(weights)
        self._current = [0] * len(weights)
        self._lock = threading.Lock()
        with self._lock:
            _, self._current = _smooth_steps(
                instances, weights, self._total, self._current, start % self._total
            )

    def _next(self) -> Instance:
        with self._lock:
            picks, self._current = _smooth_steps(
                self._instances, self._weights, self._total, self._current, 1
            )
        return picks[0]

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        instance = self._next()
        if excluded and instance in excluded:
            return self._pick_excluding(excluded)
        return instance


class _RandomPicker(_Redrawing):
    """Uniform or weighted sampling; exclusions are rejected and redrawn, then filtered."""

    __slots__ = ("_cumulative", "_n", "_random", "_total")

    def __init__(
        self, instances: Sequence[Instance], weights: Sequence[int], rand: Callable[[], float]
    ) -> None:
        super().__init__(instances, weights)
        self._n = len(instances)
        # Floats: the draw is a float, and float-to-float comparisons are faster than mixed
        # ones (exact, as the sums stay far below 2**53).
        self._cumulative = [float(c) for c in itertools.accumulate(weights)]
        self._total = self._cumulative[-1]
        self._random = rand

    def _next(self) -> Instance:
        return self._instances[bisect_right(self._cumulative, self._random() * self._total)]

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        # random() < 1, so random() * total < total for any total below 2**53: the index is
        # always in range.
        instance = self._instances[bisect_right(self._cumulative, self._random() * self._total)]
        if excluded and instance in excluded:
            return self._pick_excluding(excluded)
        return instance

    def _point(self, total: int) -> float:
        return self._random() * total


class _UniformPicker(_RandomPicker):
    __slots__ = ()

    def _next(self) -> Instance:
        return self._instances[int(self._random() * self._n)]

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        instance = self._instances[int(self._random() * self._n)]
        if excluded and instance in excluded:
            return self._pick_excluding(excluded)
        return instance


_MASK64 = (1 << 64) - 1


def _key_hash(data: bytes) -> int:
    """A key's place on the ring: CRC-32 spread over 64 bits by Fibonacci hashing. Stable
    across processes (unlike `hash()`), and 3x cheaper than a cryptographic digest; the ring's
    points need no such speed and are BLAKE2b (see _ring_points)."""
    h = (zlib.crc32(data) * 0x9E3779B97F4A7C15) & _MASK64
    return h ^ (h >> 29)


class _RingPicker:
    """A consistent-hash ring: a key goes to the owner of the first point after its hash."""

    __slots__ = ("_fallback", "_instances", "_owners", "_points", "_size")

    def __init__(
        self,
        instances: Sequence[Instance],
        weights: Sequence[int],
        vnodes_per_weight: int,
        fallback: Picker,
    ) -> None:
        # Ranking the instances by address makes the ring a function of the set of
        # instances, whatever their order in the list, down to ties between points.
        ranked = sorted(instances, key=lambda inst: (inst.network, inst.address, inst.weight))
        by_rank = {id(inst): rank for rank, inst in enumerate(ranked)}
        shift = len(ranked).bit_length()
        # A point and its owner's rank as one int: sorting ints is several times faster than
        # sorting tuples, and the ring can hold 10^5 points.
        ring: list[int] = []
        for inst, weight in zip(instances, weights, strict=True):
            rank = by_rank[id(inst)]
            ring.extend(
                point << shift | rank for point in _ring_points(inst, weight * vnodes_per_weight)
            )
        ring.sort()
        mask = (1 << shift) - 1
        self._points = [entry >> shift for entry in ring]
        self._owners = tuple(ranked[entry & mask] for entry in ring)
        self._size = len(ring)
        self._instances = tuple(instances)
        self._fallback = fallback

    def pick(
        self, key: str | bytes | None = None, excluded: Container[Instance] = ()
    ) -> Instance | None:
        if not key:
            return self._fallback.pick(None, excluded)
        index = bisect_right(self._points, _key_hash(key.encode() if isinstance(key, str) else key))
        if index == self._size:
            index = 0
        instance = self._owners[index]
        if excluded and instance in excluded:
            return self._walk(index, excluded)
        return instance

    def _walk(self, index: int, excluded: Container[Instance]) -> Instance | None:
        """The next owner along the ring that is not excluded: where the key's load goes
        when its instance is out, as it would if the instance were removed."""
        owners, size = self._owners, self._size
        check_all = 4 * len(self._instances)
        for step in range(1, size):
            instance = owners[(index + step) % size]
            if instance not in excluded:
                return instance
            # A long run of excluded owners: stop early if every instance is excluded.
            if step == check_all and all(inst in excluded for inst in self._instances):
                return None
        return None


def _ring_points(instance: Instance, count: int) -> list[int]:
    """`count` points of the instance on the ring, ketama-style: four 64-bit points per
    BLAKE2b digest of "network:address#n". The first points do not depend on `count`, so
    changing a weight only adds or removes points of that instance."""
    label = f"{instance.network}:{instance.address}#".encode()
    blake2b, unpack = hashlib.blake2b, _FOUR_POINTS.unpack
    points: list[int] = []
    for n in range((count + 3) // 4):
        points.extend(unpack(blake2b(label + str(n).encode(), digest_size=32).digest()))
    del points[count:]
    return points


_FOUR_POINTS = struct.Struct(">4Q")


# ----------------------------------------------------------------------------- balancers


class WeightedRoundRobin:
    """nginx's smooth weighted round-robin, the default (Kitex's since 2023).

    Over every sum(weights) picks each instance is picked exactly its weight's worth of times,
    spread out (weights 5, 1, 1 give a a b a c a a); equal weights are plain round-robin.
    Each picker starts at a random point of the sequence so that clients started together do
    not all pick the same first instance; `start` fixes it (for tests). Weights are divided by
    their gcd first: that leaves the sequence unchanged and shortens its period.
    """

    name = "weighted_round_robin"

    def __init__(self, *, start: int | None = None, max_table: int = _MAX_TABLE) -> None:
        self._start = start
        self._max_table = max_table

    def picker(self, instances: Sequence[Instance]) -> Picker:
        if not instances:
            return _EMPTY
        if len(instances) == 1:
            return _SinglePicker(instances[0])
        weights = _weights(instances)
        divisor = math.gcd(*weights)
        weights = [w // divisor for w in weights]
        period = sum(weights)
        start = self._start
        if period == len(weights):
            if start is None:
                start = random.randrange(period)
            return _RoundRobinPicker(instances, start)
        if start is None:
            start = random.randrange(min(period, _BATCH))
        if period <= self._max_table:
            return _SmoothTablePicker(instances, weights, start)
        return _SmoothStepPicker(instances, weights, start)


class WeightedRandom:
    """Random by weight: instance i with probability weight_i / sum(weights).

    `rng` supplies the randomness (a seeded `random.Random` for reproducible runs); by default
    the `random` module's shared generator. One pick is one `random()` and a bisect over the
    cumulative weights, or an index when all weights are equal.
    """

    name = "weighted_random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random: Callable[[], float] = rng.random if rng is not None else random.random

    def picker(self, instances: Sequence[Instance]) -> Picker:
        if not instances:
            return _EMPTY
        if len(instances) == 1:
            return _SinglePicker(instances[0])
        weights = _weights(instances)
        if len(set(weights)) == 1:
            return _UniformPicker(instances, weights, self._random)
        return _RandomPicker(instances, weights, self._random)


class ConsistentHash:
    """Consistent hashing on the call's key: the same key goes to the same instance while the
    instance list is the same, and an instance leaving moves only the keys it had.

    The ring holds `weight * vnodes_per_weight` points per instance (100 at the default
    weight 10; Kitex's default is 10 times more, which costs 10 times more to build here).
    Points and keys are placed by hashes that are stable across processes and runs (unlike
    Python's salted `hash()`), so every client maps a key alike. An excluded instance's keys
    go to the next instance along the ring, exactly where they would go if it were removed.
    A call without a key (None or empty) is balanced by smooth weighted round-robin.

    Building a picker costs about half a microsecond per point (100 instances of weight 10:
    ~5 ms); a pick hashes the key and bisects the ring.
    """

    name = "consistent_hash"

    def __init__(self, vnodes_per_weight: int = 10) -> None:
        if vnodes_per_weight < 1:
            raise ValueError("vnodes_per_weight must be at least 1")
        self._vnodes_per_weight = vnodes_per_weight
        self._no_key = WeightedRoundRobin()

    def picker(self, instances: Sequence[Instance]) -> Picker:
        if not instances:
            return _EMPTY
        fallback = self._no_key.picker(instances)
        if len(instances) == 1:
            return fallback
        return _RingPicker(instances, _weights(instances), self._vnodes_per_weight, fallback)


_BY_NAME: dict[str, Callable[[], Balancer]] = {
    "round_robin": WeightedRoundRobin,
    "weighted_round_robin": WeightedRoundRobin,
    "random": WeightedRandom,
    "weighted_random": WeightedRandom,
    "consistent_hash": ConsistentHash,
}


def balancer_by_name(name: str) -> Balancer:
    """A new balancer with default settings: "round_robin" or "weighted_round_robin",
    "random" or "weighted_random", "consistent_hash" (case and "-" / "_" do not matter)."""
    factory = _BY_NAME.get(name.strip().lower().replace("-", "_"))
    if factory is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"unknown balancer {name!r}; known: {known}")
    return factory()
