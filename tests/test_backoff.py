"""The retry policy (dispatch/backoff.py), pure: exponential backoff with full jitter."""

from __future__ import annotations

import random

from smsgate_server.dispatch.backoff import retry_delay


def delays(attempt: int, *, base: float = 1.0, cap: float = 300.0, n: int = 1000) -> list[float]:
    rng = random.Random(attempt)
    return [retry_delay(attempt, base=base, cap=cap, rng=rng) for _ in range(n)]


def test_the_first_retry_waits_at_most_the_base() -> None:
    assert all(0 <= d <= 1.0 for d in delays(1))


def test_each_retry_may_wait_twice_as_long_as_the_one_before() -> None:
    for attempt in range(1, 9):
        bound = 2.0 ** (attempt - 1)
        assert all(0 <= d <= bound for d in delays(attempt)), attempt
        assert max(delays(attempt)) > bound / 2, attempt


def test_the_wait_never_exceeds_the_cap() -> None:
    assert all(d <= 300.0 for d in delays(50))
    assert max(delays(50)) > 150.0


def test_delays_are_spread_over_the_whole_window_full_jitter() -> None:
    spread = delays(6)  # window [0, 32]
    assert min(spread) < 32 * 0.05
    assert max(spread) > 32 * 0.95


def test_the_same_seed_gives_the_same_delays() -> None:
    a, b = random.Random(7), random.Random(7)
    first = [retry_delay(i, base=0.05, cap=2.0, rng=a) for i in range(1, 20)]
    assert first == [retry_delay(i, base=0.05, cap=2.0, rng=b) for i in range(1, 20)]


def test_an_attempt_below_one_waits_like_the_first() -> None:
    assert all(0 <= d <= 0.5 for d in delays(0, base=0.5))
