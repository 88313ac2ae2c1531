"""RedisProviderGate: the circuit breaker and pace of every provider account,
shared by all replicas through Redis (store/provider_guard.py).

Breaker. What counts against a vendor is a *call-level fault*: the call
reached no verdict for anyone (every recipient RETRYABLE or UNKNOWN: a 5xx,
a timeout, a connection refused or reset, an unreadable answer), or the
account itself was refused (bad credentials, no permission: every call would
fail the same way). A refusal of some recipients (a bad number, an opt-out, a
template the vendor does not know, a per-number frequency limit) is the vendor
working, and so is a throttle: pacing answers that, not the breaker. Such a
call counts as a success, like an accepted one.

Staleness. ``usable`` asks Redis at most once per ``cache_seconds`` for a
breaker it saw closed (or half-open with another process probing), so a
breaker another replica opened keeps being used here for up to that long
(0.25 s by default); one it saw open is not asked about again before its
cooldown ends, which no other process can shorten. Results recorded here
update the cache at once.

Successes in bulk. The result of a call counts at once when it failed or was
throttled, when this process holds the probe, or when the breaker was not
last seen closed; a success of a breaker seen closed waits (at most
``cache_seconds``, like a cached read) and goes with the others of that
moment in one script call, so a steady flow of good calls costs a few Redis
calls a second instead of one per vendor call. A failure takes the
successes before it along, so this process's calls count in their order.
Successes that waited end a run of failures only up to the newest failure
this process had heard of when the last of them ended (every breaker answer
carries the count of failures recorded): failures other processes recorded
while they waited stay in the run, so a late success cannot keep a breaker
from opening.

Probe. Half-open, the probe goes to one gate (one process) at a time, for a
lease; within the process, to one call: ``usable`` refuses the provider to
other callers, and ``pace`` asks any further call of the caller that got it
to wait (``PROBE_WAIT_SECONDS``) until the probe's result is recorded. A
caller that was handed the probe but never called (its route took another
provider) holds it until the lease ends; so does one that died, after which
any process may take it.

Pace. Per account, up to two token buckets (messages/s and calls/s of the
providers file, each optional; an account with neither costs no Redis call),
in one script with the rate factor an account-level throttle halves (AIMD;
store/lua/pace.lua).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from smsgate_server.config import Settings
from smsgate_server.domain.errors import Unavailable
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import BREAKER_OPENS, BREAKER_STATE, PACE_RATE, PACE_WAITS
from smsgate_server.providers.base import OutcomeClass, RecipientResult
from smsgate_server.providers.providers_file import VendorEntry
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.provider_guard import (
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    BreakerView,
    PacePolicy,
    ProviderGuardStore,
)

__all__ = [
    "AccountPace",
    "CallVerdict",
    "ProviderStatus",
    "RedisProviderGate",
    "account_paces",
    "breaker_policy",
    "gate_from_settings",
    "judge_call",
    "pace_policy",
]

log = logging.getLogger("smsgate.dispatch")
# Like the store's own: the error in words, no traceback (Redis being away is no bug).
_redis_failed = RepeatedLog(log, "provider gate: redis unavailable", every=10.0)

# Error codes that refuse the account itself (credentials, permissions), by
# prefix: Tencent's families, Aliyun's codes, Twilio's 20003 (authenticate),
# and an HTTP 401 or 403 whose body named no code.
ACCOUNT_FAULTS = (
    "HTTP_401",
    "HTTP_403",
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "Forbidden.RAM",
    "isp.RAM_PERMISSION_DENY",
    "20003",
)
# Throttles of one number's frequency, not of the account's rate.
PER_NUMBER_THROTTLES = ("LimitExceeded.PhoneNumber", "isv.BUSINESS_LIMIT_CONTROL")
# How long a pace answer asks to wait when Redis cannot be asked: the shared
# rate cannot be kept without it, so calls wait rather than go unpaced.
UNAVAILABLE_WAIT_SECONDS = 1.0
# How long a call waits while this process's probe of its provider is out.
PROBE_WAIT_SECONDS = 1.0
_CALL_FAULTS = frozenset({OutcomeClass.RETRYABLE, OutcomeClass.UNKNOWN})


@dataclass(frozen=True, slots=True)
class AccountPace:
    """An account's configured rates (0: no limit) and its bucket size in
    seconds of the rate (how large a burst after a quiet spell may be)."""

    messages_per_second: float = 0.0
    calls_per_second: float = 0.0
    burst_seconds: float = 1.0

    @property
    def limited(self) -> bool:
        return self.messages_per_second > 0 or self.calls_per_second > 0


@dataclass(frozen=True, slots=True)
class CallVerdict:
    """What one call says about its vendor: a fault (with the code to show),
    and whether the account was throttled."""

    failed: bool
    code: str
    throttled: bool


def judge_call(results: Sequence[RecipientResult]) -> CallVerdict:
    """The module docstring's rules, for one call's results."""
    if not results:
        return CallVerdict(False, "", False)
    codes = [r.code for r in results]
    fault = all(r.outcome in _CALL_FAULTS for r in results) or all(
        r.outcome is OutcomeClass.PERMANENT and r.code.startswith(ACCOUNT_FAULTS) for r in results
    )
    throttled = any(
        r.outcome is OutcomeClass.THROTTLED and not r.code.startswith(PER_NUMBER_THROTTLES)
        for r in results
    )
    return CallVerdict(fault, next((c for c in codes if c), "") if fault else "", throttled)


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The breaker thresholds of the settings."""
    return BreakerPolicy(
        consecutive_failures=settings.breaker_consecutive_failures,
        failure_rate=settings.breaker_failure_rate,
        window_ms=int(settings.breaker_window_seconds * 1000),
        min_calls=settings.breaker_min_calls,
        cooldown_ms=int(settings.breaker_cooldown_seconds * 1000),
        probe_lease_ms=int(settings.breaker_probe_lease_seconds * 1000),
    )


def pace_policy(settings: Settings) -> PacePolicy:
    """How throttles lower a rate and how it grows back, from the settings."""
    return PacePolicy(
        floor=settings.pace_floor,
        step=settings.pace_recover_step,
        interval_ms=int(settings.pace_recover_seconds * 1000),
    )


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One account as ``/providers`` shows it."""

    name: str
    breaker: BreakerSnapshot
    configured: AccountPace
    factor: float

    def as_json(self) -> dict[str, object]:
        b, c = self.breaker, self.configured
        return {
            "name": self.name,
            "breaker": {
                "state": b.state.name.lower(),
                "consecutive_failures": b.consecutive_failures,
                "window_calls": b.window_calls,
                "window_failures": b.window_failures,
                "opens": b.opens,
                "opened_ms": b.opened_ms,
                "open_until_ms": b.open_until_ms if b.state is not BreakerState.CLOSED else 0,
                "last_failure_code": b.last_failure_code,
                "last_failure_ms": b.last_failure_ms,
            },
            "rate": {
                "messages_per_second": c.messages_per_second or None,
                "calls_per_second": c.calls_per_second or None,
                "burst_seconds": c.burst_seconds,
                "factor": self.factor,
                "effective_messages_per_second": (c.messages_per_second * self.factor) or None,
                "effective_calls_per_second": (c.calls_per_second * self.factor) or None,
            },
        }


@dataclass(slots=True)
class _Seen:
    """A breaker as this process last read it, until when (monotonic) to trust it."""

    state: BreakerState
    until: float


class RedisProviderGate:
    """``dispatch.gate.ProviderGate`` on Redis; see the module docstring."""

    def __init__(
        self,
        store: ProviderGuardStore,
        *,
        paces: Mapping[str, AccountPace],
        cache_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        token: str | None = None,
    ) -> None:
        self.store = store
        self.paces = dict(paces)
        self.cache_seconds = cache_seconds
        self.monotonic = monotonic
        # Names this gate in probe leases: one per process.
        self.token = token or secrets.token_hex(8)
        self._seen: dict[str, _Seen] = {}
        # Providers whose probe a caller of this process holds, until when.
        self._probing: dict[str, float] = {}
        # Of those, the ones whose probe call has gone (pace let it through).
        self._probed: set[str] = set()
        # Successful calls not counted in Redis yet, and when each provider's
        # were last sent (module docstring, "Successes in bulk").
        self._successes: dict[str, int] = {}
        self._sent_at: dict[str, float] = {}
        # The failures each breaker had recorded as its last answer here said,
        # and as they stood when the newest waiting success ended.
        self._failures: dict[str, int] = {}
        self._failures_before: dict[str, int] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def usable(self, names: Sequence[str]) -> list[str]:
        # What the cache answers costs no task; only the rest ask Redis.
        now = self.monotonic()
        known = {n: self._known(n, now) for n in names}
        ask = [n for n, ok in known.items() if ok is None]
        if ask:
            known.update(zip(ask, await asyncio.gather(*(self._ask(n) for n in ask)), strict=True))
        return [n for n in names if known[n]]

    def _known(self, name: str, now: float) -> bool | None:
        """Whether ``name`` lets a call through, as far as this process knows
        for sure now (None: ask Redis)."""
        if self._probing.get(name, 0.0) > now:
            return False  # one call of this process is the probe already
        seen = self._seen.get(name)
        if seen is not None and seen.until > now:
            return seen.state is BreakerState.CLOSED
        return None

    async def _ask(self, name: str) -> bool:
        try:
            view = await self.store.check(name, self.token)
        except Unavailable as exc:
            # Without Redis nothing is settled either; refusing every vendor
            # would only add a second failure to the first.
            _redis_failed.occurred("usable", error=repr(exc))
            return True
        self._remember(name, view)
        if view.probe:
            self._probing[name] = self.monotonic() + self.store.breaker.probe_lease_ms / 1000
            self._probed.discard(name)
            return True
        return view.state is BreakerState.CLOSED

    def _remember(self, name: str, view: BreakerView) -> None:
        trust = self.cache_seconds
        if view.state is BreakerState.OPEN and view.steady_ms:
            # Open until its cooldown ends, whoever asks.
            trust = view.steady_ms / 1000
        elif view.probe:
            trust = 0.0  # the probe's result decides; ask again after it
        self._seen[name] = _Seen(view.state, self.monotonic() + trust)
        self._failures[name] = view.failures
        BREAKER_STATE.labels(name).set(int(view.state))

    async def pace(self, name: str, messages: int) -> float:
        if self._probing.get(name, 0.0) > self.monotonic():
            # The caller that got the probe may route several calls to it at
            # once: the first is the probe, the others wait for its verdict.
            if name in self._probed:
                PACE_WAITS.labels(name).inc()
                return PROBE_WAIT_SECONDS
            self._probed.add(name)
        account = self.paces.get(name)
        if account is None or not account.limited:
            return 0.0
        try:
            answer = await self.store.take(
                name,
                messages,
                messages_per_second=account.messages_per_second,
                calls_per_second=account.calls_per_second,
                burst_seconds=account.burst_seconds,
            )
        except Unavailable as exc:
            _redis_failed.occurred("pace", error=repr(exc))
            return UNAVAILABLE_WAIT_SECONDS
        self._show_rate(name, account, answer.factor)
        if answer.wait_ms:
            PACE_WAITS.labels(name).inc()
        return answer.wait_ms / 1000

    async def record(self, name: str, results: Sequence[RecipientResult]) -> None:
        verdict = judge_call(results)
        if not (verdict.failed or verdict.throttled) and self._may_wait(name):
            wait = self._sent_at.get(name, -math.inf) + self.cache_seconds - self.monotonic()
            if wait > 0:
                self._successes[name] = self._successes.get(name, 0) + 1
                self._failures_before[name] = self._failures.get(name, 0)
                if self._successes[name] == 1:
                    asyncio.get_running_loop().call_later(wait, self._flush_later, name)
                return
            await self._count(name, verdict)  # now, with those waiting
            return
        try:
            await self._count(name, verdict)
        finally:
            self._probing.pop(name, None)
            self._probed.discard(name)

    async def _count(self, name: str, verdict: CallVerdict | None) -> None:
        """Send ``name``'s waiting successes to its breaker, then ``verdict``
        of a call that ended now (None: the successes alone)."""
        earlier = self._successes.pop(name, 0)
        seen: int | None = self._failures_before.pop(name, None)
        if verdict is None:
            if not earlier:
                return
            verdict, earlier = CallVerdict(False, "", False), earlier - 1
        elif not verdict.failed:
            seen = None  # this call is the newest success, and it ended now
        self._sent_at[name] = self.monotonic()
        try:
            view = await self.store.record(
                name,
                self.token,
                failed=verdict.failed,
                code=verdict.code,
                earlier=earlier,
                seen=seen,
            )
            account = self.paces.get(name)
            if verdict.throttled and account is not None and account.limited:
                answer = await self.store.throttle(name, burst_seconds=account.burst_seconds)
                self._show_rate(name, account, answer.factor)
        except Unavailable as exc:
            # One call's result lost to the breaker: it counts the next ones.
            _redis_failed.occurred("record", error=repr(exc))
            return
        if view.opened:
            BREAKER_OPENS.labels(name).inc()
            log.warning(
                "provider breaker opened",
                extra={"provider": name, "code": verdict.code, "open_ms": view.steady_ms},
            )
        self._remember(name, view)

    def unpaced(self, name: str) -> bool:
        account = self.paces.get(name)
        return account is None or not account.limited

    def _may_wait(self, name: str) -> bool:
        """Whether a success of ``name`` may wait to be counted: its breaker
        was last seen closed and this process holds no probe of it."""
        seen = self._seen.get(name)
        return (
            self.cache_seconds > 0
            and seen is not None
            and seen.state is BreakerState.CLOSED
            and name not in self._probing
        )

    def _flush_later(self, name: str) -> None:
        # A timer callback: the waiting successes go in a task of their own.
        if self._successes.get(name):
            task = asyncio.get_running_loop().create_task(self._count(name, None))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    def _show_rate(self, name: str, account: AccountPace, factor: float) -> None:
        if account.messages_per_second:
            PACE_RATE.labels(name, "messages").set(account.messages_per_second * factor)
        if account.calls_per_second:
            PACE_RATE.labels(name, "calls").set(account.calls_per_second * factor)

    async def status(self, names: Sequence[str]) -> list[ProviderStatus]:
        """Each account's breaker and rates, read from Redis (``Unavailable``
        when it cannot be)."""
        snapshots = await asyncio.gather(*(self.store.snapshot(n) for n in names))
        return [
            ProviderStatus(name, breaker, self.paces.get(name, AccountPace()), pace.factor)
            for name, (breaker, pace) in zip(names, snapshots, strict=True)
        ]


def account_paces(entries: Mapping[str, VendorEntry]) -> dict[str, AccountPace]:
    """Each account's configured pace, from the providers file."""
    return {
        name: AccountPace(
            messages_per_second=entry.rate_messages_per_second or 0.0,
            calls_per_second=entry.rate_calls_per_second or 0.0,
            burst_seconds=entry.rate_burst_seconds,
        )
        for name, entry in entries.items()
    }


def gate_from_settings(
    settings: Settings, redis: RedisClient, entries: Mapping[str, VendorEntry]
) -> RedisProviderGate:
    """The gate of a server process: the settings' breaker and pace policies,
    the accounts' rates, time from Redis's clock."""
    store = ProviderGuardStore(redis, breaker=breaker_policy(settings), pace=pace_policy(settings))
    return RedisProviderGate(
        store, paces=account_paces(entries), cache_seconds=settings.breaker_cache_seconds
    )
