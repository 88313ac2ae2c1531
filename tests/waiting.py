"""The one way tests wait: poll until a condition holds, or fail saying what
was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _gave_up(what: str, timeout: float, seen: str) -> AssertionError:
    return AssertionError(f"gave up waiting for {what} after {timeout:g}s; last saw: {seen}")


async def wait_until(
    observe: Callable[[], Awaitable[T]],
    ok: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[T], str] = repr,
) -> T:
    """Await ``observe()`` until ``ok`` holds for its value and return that value;
    past ``timeout`` seconds, fail with ``what`` and the last value (``describe``d)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await observe()
        if ok(seen):
            return seen
        if time.monotonic() >= deadline:
            raise _gave_up(what, timeout, describe(seen))
        await asyncio.sleep(interval)


def wait_until_blocking(
    observe: Callable[[], T],
    ok: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[T], str] = repr,
) -> T:
    """``wait_until`` for tests that drive server processes from plain threads."""
    deadline = time.monotonic() + timeout
    while True:
        seen = observe()
        if ok(seen):
            return seen
        if time.monotonic() >= deadline:
            raise _gave_up(what, timeout, describe(seen))
        time.sleep(interval)
