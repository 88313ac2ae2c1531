"""ProviderGuardStore: provider accounts' circuit breakers and pace in Redis.

Each account has a slot of its own (``{pv:<name>}``) holding its breaker hash
and its pace hash; every change of either is one script (``breaker_check``,
``breaker_record``, ``pace``), so replicas that share the Redis share the state.
Time comes from Redis's clock (``TIME`` inside the scripts) unless a clock is
injected (tests), so replicas whose clocks differ still agree on cooldowns,
leases and refills.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import breaker_key, pace_key
from smsgate_server.store.scripts import GuardScripts

__all__ = [
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerView",
    "PaceAnswer",
    "PacePolicy",
    "PaceSnapshot",
    "ProviderGuardStore",
]

# As breaker_record.lua keeps it.
WINDOW_SLOTS = 10


class BreakerState(enum.IntEnum):
    """A breaker's state, as the scripts store it."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and for how long (times in ms)."""

    consecutive_failures: int
    failure_rate: float
    window_ms: int
    min_calls: int
    cooldown_ms: int
    probe_lease_ms: int


@dataclass(frozen=True, slots=True)
class BreakerView:
    """What a breaker answered: its state, whether the caller holds the probe,
    how long (ms) the answer stands for sure (0: unknown), Redis's time (ms),
    and how many failures it has recorded so far (a sequence number: a result
    of a call that ended after this answer came is later than all of them)."""

    state: BreakerState
    probe: bool
    steady_ms: int
    now_ms: int
    opened: bool = False
    failures: int = 0


@dataclass(frozen=True, slots=True)
class PacePolicy:
    """How a throttle lowers an account's rate (halved, not below ``floor``
    times it) and how it grows back (by ``step`` of it per interval)."""

    floor: float
    step: float
    interval_ms: int


@dataclass(frozen=True, slots=True)
class PaceAnswer:
    """``wait_ms`` 0 when the tokens were taken (else how long until they would
    be), and the factor the account's configured rates stand at now."""

    wait_ms: int
    factor: float


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as ``/providers`` shows it (times in ms, 0 when none)."""

    state: BreakerState
    consecutive_failures: int
    window_calls: int
    window_failures: int
    opens: int
    opened_ms: int
    open_until_ms: int
    last_failure_code: str
    last_failure_ms: int


@dataclass(frozen=True, slots=True)
class PaceSnapshot:
    """An account's pace factor (1.0: at its configured rates)."""

    factor: float


class ProviderGuardStore:
    """Reads and changes the breakers and pace of provider accounts."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        breaker: BreakerPolicy,
        pace: PacePolicy,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = GuardScripts(redis)
        self.breaker = breaker
        self.pace = pace
        self.clock = clock

    def _now(self) -> int:
        # 0 tells the scripts to read Redis's clock.
        return 0 if self.clock is None else int(self.clock() * 1000)

    @redis_edge
    async def check(self, provider: str, token: str) -> BreakerView:
        """Whether the breaker lets a call of ``token``'s holder through; half-open,
        it gives the probe to ``token`` when nobody else holds it."""
        state, probe, steady, now, failures = await self.scripts.breaker_check(
            keys=[breaker_key(provider)],
            args=[self._now(), token, self.breaker.probe_lease_ms],
        )
        return BreakerView(
            BreakerState(int(state)), bool(int(probe)), int(steady), int(now), False, int(failures)
        )

    @redis_edge
    async def record(
        self,
        provider: str,
        token: str,
        *,
        failed: bool,
        code: str,
        earlier: int = 0,
        seen: int | None = None,
    ) -> BreakerView:
        """Count one call's result, after ``earlier`` successful calls not
        counted yet (a closed breaker only); the breaker as it is after it.
        ``seen``: the ``failures`` of the last answer before the newest of the
        successes (the earlier ones, and this call when it did not fail) ended;
        only failures up to it are before them (None: they ended now)."""
        p = self.breaker
        state, opened, until, now, failures = await self.scripts.breaker_record(
            keys=[breaker_key(provider)],
            args=[
                self._now(),
                token,
                "1" if failed else "0",
                code if failed else "",
                p.consecutive_failures,
                p.window_ms,
                p.min_calls,
                p.failure_rate,
                p.cooldown_ms,
                earlier,
                "" if seen is None else seen,
            ],
        )
        steady = max(int(until) - int(now), 0)
        return BreakerView(
            BreakerState(int(state)), False, steady, int(now), bool(int(opened)), int(failures)
        )

    @redis_edge
    async def take(
        self,
        provider: str,
        messages: int,
        *,
        messages_per_second: float,
        calls_per_second: float,
        burst_seconds: float,
    ) -> PaceAnswer:
        """Take one call's tokens (0 rate: that dimension is not limited) from
        buckets of ``burst_seconds`` of the rate."""
        return await self._pace(
            "take", provider, messages, messages_per_second, calls_per_second, burst_seconds
        )

    @redis_edge
    async def throttle(self, provider: str, *, burst_seconds: float) -> PaceAnswer:
        """Halve the account's rate factor (``wait_ms`` 1 when a throttle less
        than an interval ago had already lowered it: nothing changed)."""
        return await self._pace("throttle", provider, 0, 0.0, 0.0, burst_seconds)

    async def _pace(
        self,
        op: str,
        provider: str,
        messages: int,
        per_message: float,
        per_call: float,
        burst_seconds: float,
    ) -> PaceAnswer:
        p = self.pace
        wait, factor = await self.scripts.pace(
            keys=[pace_key(provider)],
            args=[
                op,
                self._now(),
                messages,
                per_message,
                per_call,
                burst_seconds,
                p.floor,
                p.step,
                p.interval_ms,
            ],
        )
        return PaceAnswer(int(wait), float(factor))

    @redis_edge
    async def snapshot(self, provider: str) -> tuple[BreakerSnapshot, PaceSnapshot]:
        """The breaker and pace of ``provider`` as stored (read only)."""
        window = [f"{kind}{i}" for i in range(WINDOW_SLOTS) for kind in ("wb", "wc", "wf")]
        head = ["st", "until", "cf", "opens", "oa", "lc", "lt"]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(breaker_key(provider), [*head, *window])
            pipe.hmget(pace_key(provider), ["f", "fa"])
            raw, pace = await pipe.execute()
        now = self._now()
        if self.clock is None:
            seconds, micros = await self.redis.time()
            now = int(seconds) * 1000 + int(micros) // 1000
        values = [v.decode() if isinstance(v, bytes) else v for v in raw]
        state, until, run, opens, opened, code, last = values[: len(head)]
        calls = failures = 0
        width = max(1, self.breaker.window_ms // WINDOW_SLOTS)
        bucket = now // width
        rest = values[len(head) :]
        for i in range(WINDOW_SLOTS):
            wb, wc, wf = rest[3 * i : 3 * i + 3]
            if wb is not None and int(wb) > bucket - WINDOW_SLOTS:
                calls += int(wc or 0)
                failures += int(wf or 0)
        shown = BreakerState(int(state or 0))
        if shown is BreakerState.OPEN and now >= int(until or 0):
            # The cooldown is over: the next caller to ask takes the probe.
            shown = BreakerState.HALF_OPEN
        breaker = BreakerSnapshot(
            state=shown,
            consecutive_failures=int(run or 0),
            window_calls=calls,
            window_failures=failures,
            opens=int(opens or 0),
            opened_ms=int(opened or 0),
            open_until_ms=int(until or 0),
            last_failure_code=code or "",
            last_failure_ms=int(last or 0),
        )
        return breaker, PaceSnapshot(self._factor(pace, now))

    def _factor(self, raw: list[bytes | None], now: int) -> float:
        # As pace.lua recovers it, without writing.
        f, fa = (float(raw[0]) if raw[0] is not None else 1.0), raw[1]
        if f < 1 and fa is not None:
            steps = (now - int(fa)) // self.pace.interval_ms
            if steps > 0:
                f = min(1.0, f + steps * self.pace.step)
        return f
