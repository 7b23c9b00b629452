"""Helpers shared by every test directory (importable once tests/conftest.py has run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    message: str = "condition",
    interval: float = 0.005,
) -> T:
    """Poll `predicate` every `interval` seconds until it returns something true, and return
    that; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for: {message}")
        time.sleep(interval)
