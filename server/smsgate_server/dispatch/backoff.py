"""Retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random

__all__ = ["retry_delay"]


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): uniform in
    ``[0, min(cap, base * 2**(attempt-1))]`` (AWS "full jitter")."""
    return rng.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
