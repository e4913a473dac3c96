"""The one bounded poll: wait for a condition another thread or process makes true, and fail with
what was awaited when it does not come in time (a fixed sleep is either flaky or slow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.05) -> T:
    """Call `check` until it returns something truthy, and return that; AssertionError naming `what`
    once `timeout` seconds pass without it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(check: Callable[[], T], what: str, timeout: float = 5.0, interval: float = 0.001) -> T:
    """`wait_until` inside an event loop: sleeps with asyncio, so the tasks it waits for run."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
