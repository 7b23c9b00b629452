"""Per-instance circuit breakers: stop sending calls to an instance whose connections fail.

The contract between a breaker and the channel that uses it:

- `allow()` before an attempt on the instance. True in CLOSED. While OPEN, False until the
  cooldown has passed; then the breaker is HALF_OPEN and lets exactly one probe through.
  A True may thus hand out the probe: call `allow()` only for the instance about to be used
  (never to survey instances), and report the outcome of every attempt it allowed.
- `on_success()` / `on_failure()` report one attempt. As Kitex's instance breaker counts only
  ErrGetConnection (and timeouts), rpcpoll's channel reports as failures only what says the
  instance is unreachable: a dial refused or timed out, a connection found dead. Errors from
  handlers and business errors are successes here; they say nothing about the instance's
  reachability.
- `state` is the state as of the last call to any of them (OPEN stays OPEN until an
  `allow()` after the cooldown turns it HALF_OPEN).

`BreakerFactory` makes the breaker of one instance: `default_breaker_factory` an
`InstanceBreaker` with default settings, `NO_BREAKER` one that always allows. To change the
settings: `breaker=lambda instance: InstanceBreaker(cooldown=5.0)`.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..discovery.base import Instance

__all__ = [
    "NO_BREAKER",
    "BreakerFactory",
    "BreakerState",
    "CircuitBreaker",
    "InstanceBreaker",
    "default_breaker_factory",
]


class BreakerState(enum.Enum):
    CLOSED = "closed"  # calls flow; outcomes are counted
    OPEN = "open"  # no calls until the cooldown has passed
    HALF_OPEN = "half_open"  # one probe is out; its outcome closes or re-opens


_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class CircuitBreaker(Protocol):
    """Guards one instance (see the module docs). Implementations must be thread-safe."""

    @property
    def state(self) -> BreakerState: ...

    def allow(self) -> bool: ...

    def on_success(self) -> None: ...

    def on_failure(self) -> None: ...


BreakerFactory = Callable[[Instance], CircuitBreaker]

_NEVER = -(1 << 62)  # the epoch of a bucket that never held anything


class InstanceBreaker:
    """The default breaker: consecutive failures or a high error rate open it.

    CLOSED opens after `failure_threshold` consecutive failures, or when a failure is
    reported while the last `window` seconds hold at least `min_samples` outcomes of which a
    fraction >= `error_rate` failed. The window is `buckets` counters of window/buckets
    seconds each, so it slides by whole buckets and costs the same at any call rate.

    OPEN refuses calls for `cooldown` seconds, then turns HALF_OPEN by letting one probe
    through; every other caller is refused while the probe is out. The probe's success closes
    the breaker (counters cleared, cooldown back to its initial value); its failure re-opens
    it with the cooldown doubled, up to `max_cooldown`. A probe that never reports (its caller
    died) does not wedge the breaker: `cooldown` seconds after it left, another goes.

    Outcomes reported while OPEN come from calls allowed before it opened and are ignored; in
    HALF_OPEN any outcome is taken to be the probe's. `clock` is for tests.
    """

    __slots__ = (
        "_bad",
        "_base_cooldown",
        "_bucket_end",
        "_bucket_width",
        "_clock",
        "_consecutive",
        "_cooldown",
        "_current",
        "_epochs",
        "_error_rate",
        "_failure_threshold",
        "_lock",
        "_max_cooldown",
        "_min_samples",
        "_ok",
        "_since",
        "_state",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        error_rate: float = 0.5,
        min_samples: int = 20,
        window: float = 10.0,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        buckets: int = 10,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0.0 < error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if min_samples < 1:
            raise ValueError("min_samples must be at least 1")
        if window <= 0 or buckets < 1:
            raise ValueError("window must be positive and buckets at least 1")
        if cooldown <= 0 or max_cooldown < cooldown:
            raise ValueError("cooldown must be positive and max_cooldown at least cooldown")
        self._failure_threshold = failure_threshold
        self._error_rate = error_rate
        self._min_samples = min_samples
        self._bucket_width = window / buckets
        self._base_cooldown = self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._since = 0.0  # OPEN: when it opened; HALF_OPEN: when the probe left
        self._consecutive = 0
        self._epochs = [_NEVER] * buckets  # which bucket-width interval each counter holds
        self._ok = [0] * buckets
        self._bad = [0] * buckets
        self._current = 0  # the index of the bucket of the last outcome ...
        self._bucket_end = float("-inf")  # ... valid until then

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def cooldown(self) -> float:
        """The cooldown the next (or current) OPEN period lasts."""
        return self._cooldown

    def allow(self) -> bool:
        # Reading one attribute is atomic: CLOSED answers without the lock. A caller that
        # races with the opening gets one more call through, which is harmless.
        if self._state is _CLOSED:
            return True
        with self._lock:
            state = self._state
            if state is _CLOSED:
                return True
            now = self._clock()
            if now - self._since < self._cooldown:
                return False  # OPEN and cooling down, or HALF_OPEN with the probe out
            self._state = _HALF_OPEN
            self._since = now
            return True

    def on_success(self) -> None:
        with self._lock:
            state = self._state
            if state is _CLOSED:
                now = self._clock()
                self._ok[self._current if now < self._bucket_end else self._bucket(now)] += 1
                self._consecutive = 0
            elif state is _HALF_OPEN:
                self._close()

    def on_failure(self) -> None:
        with self._lock:
            state = self._state
            now = self._clock()
            if state is _CLOSED:
                self._bad[self._current if now < self._bucket_end else self._bucket(now)] += 1
                self._consecutive += 1
                if self._consecutive >= self._failure_threshold or self._rate_exceeded(now):
                    self._open(now)
            elif state is _HALF_OPEN:
                self._cooldown = min(self._cooldown * 2, self._max_cooldown)
                self._open(now)

    def _bucket(self, now: float) -> int:
        """The index of the counters for `now`, cleared if they held an older interval."""
        epoch = int(now // self._bucket_width)
        index = epoch % len(self._epochs)
        if self._epochs[index] != epoch:
            self._epochs[index] = epoch
            self._ok[index] = self._bad[index] = 0
        # Until the bucket ends, outcomes skip this arithmetic (the clock is monotonic).
        self._current = index
        self._bucket_end = (epoch + 1) * self._bucket_width
        return index

    def _rate_exceeded(self, now: float) -> bool:
        oldest = int(now // self._bucket_width) - len(self._epochs)
        ok = bad = 0
        for epoch, good, failed in zip(self._epochs, self._ok, self._bad, strict=True):
            if epoch > oldest:
                ok += good
                bad += failed
        total = ok + bad
        return total >= self._min_samples and bad >= self._error_rate * total

    def _open(self, now: float) -> None:
        self._state = _OPEN
        self._since = now

    def _close(self) -> None:
        self._state = _CLOSED
        self._cooldown = self._base_cooldown
        self._consecutive = 0
        buckets = len(self._epochs)
        self._epochs = [_NEVER] * buckets
        self._ok = [0] * buckets
        self._bad = [0] * buckets
        self._bucket_end = float("-inf")

    def __repr__(self) -> str:
        return f"<InstanceBreaker {self._state.value} cooldown={self._cooldown:g}s>"


class _AlwaysAllow:
    __slots__ = ()

    @property
    def state(self) -> BreakerState:
        return _CLOSED

    def allow(self) -> bool:
        return True

    def on_success(self) -> None:
        pass

    def on_failure(self) -> None:
        pass


_ALWAYS_ALLOW = _AlwaysAllow()


def default_breaker_factory(instance: Instance) -> CircuitBreaker:
    """A new `InstanceBreaker` with the default settings."""
    return InstanceBreaker()


def _no_breaker(instance: Instance) -> CircuitBreaker:
    return _ALWAYS_ALLOW


NO_BREAKER: BreakerFactory = _no_breaker
"""A factory whose breakers always allow: circuit breaking off."""
