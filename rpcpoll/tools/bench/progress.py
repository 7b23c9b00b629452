"""Progress while `rpcpoll bench` runs: a bar redrawn in place on a terminal, plain lines
(one a second) anywhere else, so logs and CI output stay readable."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30


class Progress:
    """`update(done, errors)` as often as wanted; `finish()` once."""

    def __init__(
        self, out: TextIO, *, total: int | None, seconds: float | None, tty: bool | None = None
    ) -> None:
        self.out = out
        self.total = total
        self.seconds = seconds
        self.tty = out.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._next_line = 1.0  # seconds into the run
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, errors: int) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            fraction = self._fraction(done, elapsed)
            filled = int(_WIDTH * fraction)
            bar = "=" * filled + (">" if filled < _WIDTH else "") + " " * (_WIDTH - filled - 1)
            self.out.write(
                f"\r[{bar}] {fraction:4.0%}  {done:>10,} calls  {rate:>10,.0f}/s"
                f"  {errors:,} errors  {elapsed:5.1f} s"
            )
            self._drawn = True
        else:
            if elapsed < self._next_line:
                return
            self._next_line = int(elapsed) + 1.0
            self.out.write(
                f"progress: {elapsed:.1f} s, {done:,} calls ({rate:,.0f}/s), {errors:,} errors\n"
            )
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()

    def _fraction(self, done: int, elapsed: float) -> float:
        if self.total:
            return min(1.0, done / self.total)
        if self.seconds:
            return min(1.0, elapsed / self.seconds)
        return 0.0
