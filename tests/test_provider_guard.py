"""Provider breakers and pacing (dispatch/guard.py) against a real Redis: gates
built on one Redis stand for replicas; time is injected (Redis's clock only in
the multi-process test), so nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from smsgate_server.dispatch.guard import (
    UNAVAILABLE_WAIT_SECONDS,
    AccountPace,
    RedisProviderGate,
    judge_call,
)
from smsgate_server.providers.base import OutcomeClass, RecipientResult
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.provider_guard import (
    BreakerPolicy,
    BreakerState,
    PacePolicy,
    ProviderGuardStore,
)

REPO = Path(__file__).resolve().parent.parent

BREAKER = BreakerPolicy(
    consecutive_failures=3,
    failure_rate=0.5,
    window_ms=30_000,
    min_calls=10,
    cooldown_ms=10_000,
    probe_lease_ms=5_000,
)
PACE = PacePolicy(floor=0.1, step=0.1, interval_ms=1_000)

OK = RecipientResult(OutcomeClass.ACCEPTED, "v1")
DOWN = RecipientResult(OutcomeClass.RETRYABLE, "", "HTTP_503", "vendor server error")
LOST = RecipientResult(OutcomeClass.UNKNOWN, "", "NO_ANSWER", "read timeout")
BAD_NUMBER = RecipientResult(
    OutcomeClass.PERMANENT, "", "InvalidParameterValue.IncorrectPhoneNumber"
)
BAD_KEY = RecipientResult(OutcomeClass.PERMANENT, "", "AuthFailure.SecretIdNotFound")
BUSY = RecipientResult(OutcomeClass.THROTTLED, "", "RequestLimitExceeded", retry_after=1.0)
NUMBER_BUSY = RecipientResult(
    OutcomeClass.THROTTLED, "", "LimitExceeded.PhoneNumberThirtySecondLimit"
)


class Clock:
    """Time that moves only when told, shared by the store and the gates."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=8)
    yield connection
    await connection.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_gate(
    redis: RedisConnection,
    clock: Clock,
    *,
    cache_seconds: float = 0.0,
    paces: dict[str, AccountPace] | None = None,
    pace: PacePolicy = PACE,
) -> RedisProviderGate:
    store = ProviderGuardStore(redis.client, breaker=BREAKER, pace=pace, clock=clock)
    return RedisProviderGate(store, paces=paces or {}, cache_seconds=cache_seconds, monotonic=clock)


async def open_breaker(gate: RedisProviderGate, name: str) -> None:
    for _ in range(BREAKER.consecutive_failures):
        await gate.record(name, [DOWN, DOWN])


# --- what counts against a vendor -------------------------------------------


def test_a_call_with_no_verdict_for_anyone_is_a_fault() -> None:
    assert judge_call([DOWN, LOST]).failed
    assert judge_call([DOWN]).code == "HTTP_503"


def test_an_account_refused_for_its_credentials_is_a_fault() -> None:
    assert judge_call([BAD_KEY, BAD_KEY]).failed
    for code in ("20003", "HTTP_401", "SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound"):
        assert judge_call([RecipientResult(OutcomeClass.PERMANENT, "", code)]).failed, code
    # One recipient's refusal beside it says nothing of the account.
    assert not judge_call([BAD_KEY, BAD_NUMBER]).failed


def test_refusals_of_some_recipients_are_the_vendor_working() -> None:
    assert not judge_call([BAD_NUMBER]).failed
    assert not judge_call([OK, DOWN]).failed
    assert not judge_call([BUSY]).failed


def test_only_an_account_throttle_lowers_the_pace() -> None:
    assert judge_call([BUSY]).throttled
    assert not judge_call([NUMBER_BUSY, OK]).throttled


# --- breaker -------------------------------------------------------------


async def test_the_breaker_opens_after_the_configured_failures_in_a_row(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock)
    for _ in range(BREAKER.consecutive_failures - 1):
        await gate.record("tencent", [DOWN])
    assert await gate.usable(["tencent", "aliyun"]) == ["tencent", "aliyun"]
    await gate.record("tencent", [LOST])
    assert await gate.usable(["tencent", "aliyun"]) == ["aliyun"]


async def test_an_error_rate_over_the_window_opens_it_without_a_run_of_failures(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock)
    for _ in range(4):
        await gate.record("tencent", [BAD_NUMBER])  # refused per recipient: vendor healthy
        await gate.record("tencent", [DOWN])
    await gate.record("tencent", [OK])
    assert await gate.usable(["tencent"]) == ["tencent"]
    # 5 failures of 10 calls: the window's rate (50% of at least 10) opens it,
    # though no 2 failed in a row.
    await gate.record("tencent", [DOWN])
    assert await gate.usable(["tencent"]) == []


async def test_refusals_per_recipient_never_open_it(redis: RedisConnection, clock: Clock) -> None:
    gate = make_gate(redis, clock)
    for _ in range(20):
        await gate.record("tencent", [BAD_NUMBER, NUMBER_BUSY])
        await gate.record("tencent", [BUSY])
    assert await gate.usable(["tencent"]) == ["tencent"]


async def test_failures_older_than_the_window_no_longer_count(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock)
    for _ in range(9):
        await gate.record("tencent", [OK])
    await gate.record("tencent", [DOWN])
    for _ in range(2):
        await gate.record("tencent", [DOWN])
        await gate.record("tencent", [OK])
    clock.advance(BREAKER.window_ms / 1000 + 1)
    # 3 of 15 failed, then the window moved on: two more failures of 4 calls
    # would be 50%, but 4 calls are below the window's minimum.
    for _ in range(2):
        await gate.record("tencent", [DOWN])
        await gate.record("tencent", [OK])
    assert await gate.usable(["tencent"]) == ["tencent"]


async def test_a_replica_sees_the_breaker_another_one_opened(
    redis: RedisConnection, clock: Clock
) -> None:
    first, second = make_gate(redis, clock), make_gate(redis, clock)
    assert await second.usable(["tencent"]) == ["tencent"]
    await open_breaker(first, "tencent")
    assert await second.usable(["tencent"]) == []


async def test_a_cached_closed_breaker_is_stale_for_at_most_the_cache_time(
    redis: RedisConnection, clock: Clock
) -> None:
    first = make_gate(redis, clock)
    second = make_gate(redis, clock, cache_seconds=0.25)
    assert await second.usable(["tencent"]) == ["tencent"]
    await open_breaker(first, "tencent")
    clock.advance(0.2)
    assert await second.usable(["tencent"]) == ["tencent"]  # no Redis call yet
    clock.advance(0.1)
    assert await second.usable(["tencent"]) == []


async def test_after_the_cooldown_exactly_one_caller_gets_the_probe(
    redis: RedisConnection, clock: Clock
) -> None:
    gates = [make_gate(redis, clock) for _ in range(3)]
    await open_breaker(gates[0], "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000 - 0.001)
    assert [await g.usable(["tencent"]) for g in gates] == [[], [], []]
    clock.advance(0.002)
    # Every gate asks twice at once: one call of one process probes.
    answers = await asyncio.gather(*(g.usable(["tencent"]) for g in gates for _ in range(2)))
    assert sorted(len(a) for a in answers) == [0, 0, 0, 0, 0, 1]


async def test_a_successful_probe_closes_it(redis: RedisConnection, clock: Clock) -> None:
    prober, other = make_gate(redis, clock), make_gate(redis, clock)
    await open_breaker(prober, "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000)
    assert await prober.usable(["tencent"]) == ["tencent"]
    # A late result of a call of another process decides nothing.
    await other.record("tencent", [OK])
    assert await other.usable(["tencent"]) == []
    await prober.record("tencent", [OK])
    assert await other.usable(["tencent"]) == ["tencent"]
    assert await prober.usable(["tencent"]) == ["tencent"]
    (status,) = await other.status(["tencent"])
    assert status.breaker.state is BreakerState.CLOSED
    assert status.breaker.opens == 1


async def test_a_failed_probe_opens_it_for_another_cooldown(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock)
    await open_breaker(gate, "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000)
    assert await gate.usable(["tencent"]) == ["tencent"]
    await gate.record("tencent", [DOWN])
    assert await gate.usable(["tencent"]) == []
    clock.advance(BREAKER.cooldown_ms / 1000 - 1)
    assert await gate.usable(["tencent"]) == []
    (status,) = await gate.status(["tencent"])
    assert status.breaker.state is BreakerState.OPEN
    assert status.breaker.opens == 2
    assert status.breaker.last_failure_code == "HTTP_503"


async def test_a_probe_nobody_reports_is_free_again_after_its_lease(
    redis: RedisConnection, clock: Clock
) -> None:
    dead, alive = make_gate(redis, clock), make_gate(redis, clock)
    await open_breaker(alive, "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000)
    assert await dead.usable(["tencent"]) == ["tencent"]
    assert await alive.usable(["tencent"]) == []
    clock.advance(BREAKER.probe_lease_ms / 1000)
    assert await alive.usable(["tencent"]) == ["tencent"]


async def window(gate: RedisProviderGate, name: str) -> tuple[int, int, int]:
    """The breaker's (calls, failures) in its window and its run of failures."""
    (status,) = await gate.status([name])
    b = status.breaker
    return b.window_calls, b.window_failures, b.consecutive_failures


async def test_successes_of_a_closed_breaker_wait_and_go_with_the_next_failure(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, cache_seconds=0.25)
    assert await gate.usable(["tencent"]) == ["tencent"]  # seen closed
    await gate.record("tencent", [OK])  # the first goes at once
    for _ in range(3):
        await gate.record("tencent", [OK])
    assert await window(gate, "tencent") == (1, 0, 0)
    await gate.record("tencent", [DOWN])
    assert await window(gate, "tencent") == (5, 1, 1)


async def test_waiting_successes_go_once_the_cache_time_has_passed(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, cache_seconds=0.25)
    assert await gate.usable(["tencent"]) == ["tencent"]
    await gate.record("tencent", [OK])
    await gate.record("tencent", [OK])
    clock.advance(0.25)
    await gate.record("tencent", [OK])  # it and the one waiting
    assert await window(gate, "tencent") == (3, 0, 0)
    # With no call after it, a waiting success goes by itself (a loop timer).
    await gate.record("tencent", [OK])
    seen = await window(gate, "tencent")
    for _ in range(100):
        if seen == (4, 0, 0):
            break
        await asyncio.sleep(0.01)
        seen = await window(gate, "tencent")
    assert seen == (4, 0, 0), f"the waiting success never reached Redis: {seen}"


async def test_a_success_waiting_between_failures_breaks_their_run(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, cache_seconds=0.25)
    assert await gate.usable(["tencent"]) == ["tencent"]
    for result in (DOWN, DOWN, OK, DOWN, DOWN):
        await gate.record("tencent", [result])
    # Three failures (the breaker's threshold), but never three in a row.
    assert await gate.usable(["tencent"]) == ["tencent"]
    assert await window(gate, "tencent") == (5, 4, 2)


async def test_a_late_success_does_not_break_a_run_other_replicas_recorded_after_it(
    redis: RedisConnection, clock: Clock
) -> None:
    late, other = make_gate(redis, clock, cache_seconds=0.25), make_gate(redis, clock)
    assert await late.usable(["tencent"]) == ["tencent"]
    await late.record("tencent", [OK])  # counted at once
    await late.record("tencent", [OK])  # waits
    # Every call after that success fails: three in a row, two of them elsewhere.
    await other.record("tencent", [DOWN])
    await other.record("tencent", [DOWN])
    await late.record("tencent", [DOWN])  # takes the waiting success along first
    assert await other.usable(["tencent"]) == [], await window(other, "tencent")


async def test_a_success_the_timer_sends_late_leaves_the_failures_after_it_in_the_run(
    redis: RedisConnection, clock: Clock
) -> None:
    late, other = make_gate(redis, clock, cache_seconds=0.25), make_gate(redis, clock)
    assert await late.usable(["tencent"]) == ["tencent"]
    await late.record("tencent", [OK])
    await late.record("tencent", [OK])  # waits for the loop timer
    await other.record("tencent", [DOWN])
    await other.record("tencent", [DOWN])
    seen = await window(other, "tencent")
    for _ in range(100):
        if seen[0] == 4:
            break
        await asyncio.sleep(0.01)
        seen = await window(other, "tencent")
    assert seen == (4, 2, 2), f"after the waiting success reached Redis: {seen}"
    await other.record("tencent", [DOWN])
    assert await other.usable(["tencent"]) == [], await window(other, "tencent")


async def test_the_probes_success_is_counted_at_once(redis: RedisConnection, clock: Clock) -> None:
    prober = make_gate(redis, clock, cache_seconds=0.25)
    other = make_gate(redis, clock)
    await open_breaker(prober, "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000)
    assert await prober.usable(["tencent"]) == ["tencent"]
    await prober.record("tencent", [OK])
    assert await other.usable(["tencent"]) == ["tencent"]


# --- pacing --------------------------------------------------------------


async def drive(gates: list[RedisProviderGate], clock: Clock, seconds: float) -> list[float]:
    """Every gate takes one-message calls as fast as it is let, in 10 ms steps
    of the clock: the times of the calls that went."""
    went: list[float] = []
    for _ in range(round(seconds / 0.01)):
        for gate in gates:
            while await gate.pace("tencent", 1) == 0.0:
                went.append(clock.now)
        clock.advance(0.01)
    return went


def most_in_a_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1) for start in times)


async def test_replicas_together_keep_the_account_rate(
    redis: RedisConnection, clock: Clock
) -> None:
    pace = {"tencent": AccountPace(messages_per_second=20, burst_seconds=1)}
    gates = [make_gate(redis, clock, paces=pace) for _ in range(2)]
    start = clock.now
    went = await drive(gates, clock, 5.0)
    # A full bucket at first (20), then 20 a second.
    assert len(went) <= 20 + 20 * 5
    assert len(went) >= 20 * 5
    assert most_in_a_second([t for t in went if t >= start + 1]) <= 21


async def test_calls_per_second_counts_calls_not_messages(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, paces={"tencent": AccountPace(calls_per_second=2)})
    assert await gate.pace("tencent", 200) == 0.0
    assert await gate.pace("tencent", 200) == 0.0
    wait = await gate.pace("tencent", 1)
    assert wait == pytest.approx(0.5, abs=0.002)
    clock.advance(wait)
    assert await gate.pace("tencent", 200) == 0.0


async def test_a_call_larger_than_the_bucket_goes_once_it_is_full_and_leaves_a_debt(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, paces={"tencent": AccountPace(messages_per_second=10)})
    assert await gate.pace("tencent", 200) == 0.0
    # 190 messages of debt at 10 a second, and one more token for the next call.
    assert await gate.pace("tencent", 1) == pytest.approx(19.1, abs=0.002)


async def test_an_account_without_rates_is_not_paced(redis: RedisConnection, clock: Clock) -> None:
    gate = make_gate(redis, clock, paces={"tencent": AccountPace()})
    assert [await gate.pace("tencent", 1000) for _ in range(100)] == [0.0] * 100
    assert await redis.client.exists("sg:{pv:tencent}:pace") == 0


async def test_a_throttle_halves_the_rate_and_it_recovers_step_by_step(
    redis: RedisConnection, clock: Clock
) -> None:
    pace = {"tencent": AccountPace(messages_per_second=40)}
    gate, other = make_gate(redis, clock, paces=pace), make_gate(redis, clock, paces=pace)
    await gate.record("tencent", [BUSY, BUSY])
    # The rest of the burst of throttled answers is the same signal.
    await other.record("tencent", [BUSY])
    (status,) = await other.status(["tencent"])
    assert status.factor == 0.5
    went = await drive([gate, other], clock, 0.99)
    # A full bucket of one second at half the rate, and 0.99 s of that rate
    # (at the configured rate, 40 + 39).
    assert 20 + 19 <= len(went) <= 20 + 20
    clock.advance(0.01)
    assert (await gate.status(["tencent"]))[0].factor == pytest.approx(0.6)
    await other.record("tencent", [BUSY])
    assert (await gate.status(["tencent"]))[0].factor == pytest.approx(0.3)
    for expected in (0.4, 0.5, 0.6):
        clock.advance(PACE.interval_ms / 1000)
        assert (await gate.status(["tencent"]))[0].factor == pytest.approx(expected)
    clock.advance(10 * PACE.interval_ms / 1000)
    assert (await gate.status(["tencent"]))[0].factor == 1.0


async def test_throttles_stop_at_the_floor(redis: RedisConnection, clock: Clock) -> None:
    policy = PacePolicy(floor=0.3, step=0.1, interval_ms=1_000)
    pace = {"tencent": AccountPace(messages_per_second=40)}
    gate = make_gate(redis, clock, paces=pace, pace=policy)
    factors = []
    for _ in range(4):
        await gate.record("tencent", [BUSY])
        factors.append((await gate.status(["tencent"]))[0].factor)
        clock.advance(policy.interval_ms / 1000)
    # Halved, then halved after one step back up (0.6 / 2), then held at the floor.
    assert factors == pytest.approx([0.5, 0.3, 0.3, 0.3])


@pytest.mark.cluster
async def test_breaker_and_pace_scripts_run_on_a_cluster(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock, paces={"aliyun": AccountPace(messages_per_second=5)})
    await open_breaker(gate, "tencent")
    assert await gate.usable(["tencent", "aliyun"]) == ["aliyun"]
    assert await gate.pace("aliyun", 5) == 0.0
    assert await gate.pace("aliyun", 1) > 0
    statuses = await gate.status(["tencent", "aliyun"])
    assert [s.breaker.state for s in statuses] == [BreakerState.OPEN, BreakerState.CLOSED]


async def test_two_processes_never_exceed_the_rate_on_redis_time(redis_url: str) -> None:
    # Real time and Redis's clock: each process counts the calls it was let
    # make; together they stay within one full bucket plus the rate times the
    # time from the first start to the last call let through (a bound only a
    # wrong bucket can break, however slow the machine: a late start or a
    # slow call only lengthens that time).
    rate, seconds = 40, 1.5
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.pace_driver",
            redis_url,
            str(rate),
            str(seconds),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None
        assert (await p.stdout.readline()).strip() == b"ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # Each prints its count, its start and its last call let through.
    runs = [out.decode().split()[-3:] for out, _ in outputs]
    counts = [int(went) for went, _, _ in runs]
    span = max(float(last) for _, _, last in runs) - min(float(start) for _, start, _ in runs)
    # 10 ms for Redis's millisecond clock against the processes' clock.
    assert sum(counts) <= rate * 1 + rate * (span + 0.01), (counts, span)
    # Both took part, and together they were held to the rate, not each: a
    # bucket per process would let each have 40 + 60 in its 1.5 s, 200 in all
    # against the shared bucket's 40 + 40 x span (about 100).
    assert min(counts) > 0, counts


async def test_without_redis_the_gate_guards_nothing_and_paces_by_waiting(clock: Clock) -> None:
    # Nothing listens on the port: every script call fails at once.
    # No retries: redis-py's default backoff would only make the test slow.
    dead = Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        store = ProviderGuardStore(dead, breaker=BREAKER, pace=PACE, clock=clock)
        gate = RedisProviderGate(
            store,
            paces={"tencent": AccountPace(messages_per_second=10)},
            cache_seconds=0,
            monotonic=clock,
        )
        # A breaker is a guard, not a reason to stall: every provider usable...
        assert await gate.usable(["tencent", "aliyun"]) == ["tencent", "aliyun"]
        # ...but a rate shared with replicas cannot be kept alone: calls wait.
        assert await gate.pace("tencent", 1) == UNAVAILABLE_WAIT_SECONDS
        assert await gate.pace("aliyun", 1) == 0.0  # not paced at all
        await gate.record("tencent", [DOWN])
    finally:
        await dead.aclose()


async def test_the_probe_is_one_call_even_when_its_caller_routes_several_to_it(
    redis: RedisConnection, clock: Clock
) -> None:
    gate = make_gate(redis, clock)
    await open_breaker(gate, "tencent")
    clock.advance(BREAKER.cooldown_ms / 1000)
    assert await gate.usable(["tencent"]) == ["tencent"]
    # Two chunks of one claim went to it: the first call probes, the second waits.
    assert await gate.pace("tencent", 1) == 0.0
    assert await gate.pace("tencent", 1) > 0
    await gate.record("tencent", [OK])
    assert await gate.pace("tencent", 1) == 0.0
    assert await gate.usable(["tencent"]) == ["tencent"]
