"""The wait helper: returns what satisfied it, or fails naming what it last saw."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_until, wait_until_blocking


async def test_a_wait_returns_the_value_that_satisfied_it() -> None:
    counter = itertools.count()

    async def observe() -> int:
        return next(counter)

    assert await wait_until(observe, lambda n: n == 3, what="three", interval=0) == 3


async def test_a_wait_that_gives_up_says_what_it_waited_for_and_last_saw() -> None:
    async def observe() -> list[str]:
        return ["QUEUED"]

    expected = r"waiting for delivery after 0s; last saw: \['QUEUED'\]"
    with pytest.raises(AssertionError, match=expected):
        await wait_until(observe, lambda seen: "DELIVERED" in seen, what="delivery", timeout=0)


def test_a_blocking_wait_describes_the_last_value_as_told() -> None:
    with pytest.raises(AssertionError, match="last saw: 2 pids"):
        wait_until_blocking(
            lambda: [7, 8],
            lambda pids: not pids,
            what="no pids",
            timeout=0,
            describe=lambda pids: f"{len(pids)} pids",
        )
