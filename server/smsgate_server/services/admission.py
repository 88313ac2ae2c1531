"""Admission: each app's fair share of the server and of Redis.

Before messages are stored: Redis's memory stays below a watermark, an app
holds at most so many messages, and it accepts at most so many per second (a
BatchSend counts its recipients). Around expensive reads (ListMessages, a
WatchStatus catching up from a resume token): at most so many at once per app
in this process, where their CPU is spent. Every refusal is RESOURCE_EXHAUSTED
with RetryInfo, or QuotaFailure for the held-message cap.

Memory use and each app's held count are read from Redis at most once per
``check_seconds`` per process, not per call: the cap is approximate by what
the replicas accept within that interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from smsgate_server.config import Settings
from smsgate_server.domain.errors import (
    QuotaExceeded,
    QuotaViolation,
    RateLimited,
    Reason,
)
from smsgate_server.store.quota import HeldMessages, QuotaStore

__all__ = ["Admission", "AdmissionPolicy", "QuerySlot"]

# What a refusal for lack of storage or of a query slot asks the caller to wait.
STORAGE_RETRY_SECONDS = 5.0
QUERY_RETRY_SECONDS = 0.2
# Held counts of this many apps are remembered per process; beyond, the oldest go.
HELD_CACHE_APPS = 10_000
# A process leases up to this much of an app's accept rate from its Redis
# bucket when it is admitted, and spends it without a round trip per call; an
# unspent lease lapses after LEASE_LIFE seconds (the bucket refills meanwhile).
LEASE_SECONDS = 0.05
LEASE_LIFE = 1.0


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The server-wide limits (the values live once, in Settings); an app's own
    rate and cap win."""

    accept_per_second: int
    accept_burst_seconds: float
    max_held_messages: int
    max_concurrent_queries: int
    # The memory Redis may use: this when set, else its maxmemory; 0 for both
    # means no watermark.
    redis_max_memory_bytes: int
    memory_watermark: float
    check_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionPolicy:
        return cls(
            accept_per_second=settings.app_accept_per_second,
            accept_burst_seconds=settings.app_accept_burst_seconds,
            max_held_messages=settings.app_max_held_messages,
            max_concurrent_queries=settings.app_max_concurrent_queries,
            redis_max_memory_bytes=settings.redis_max_memory_bytes,
            memory_watermark=settings.redis_memory_watermark,
            check_seconds=settings.quota_check_seconds,
        )


@dataclass(slots=True)
class _Held:
    read_at: float
    held: HeldMessages
    # Accepted by this process since the count was read.
    added: int = 0


@dataclass
class Admission:
    """Admits accepts and expensive reads of apps (see the module docstring)."""

    quota: QuotaStore
    policy: AdmissionPolicy
    clock: Callable[[], float] = time.monotonic
    _memory_read_at: float = float("-inf")
    _memory_full: bool = False
    _memory_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _held: dict[str, _Held] = field(default_factory=dict)
    _queries: dict[str, int] = field(default_factory=dict)
    # app -> (accept tokens leased to this process, when leased)
    _leases: dict[str, tuple[int, float]] = field(default_factory=dict)

    async def admit_accept(self, app: str, n: int, *, pay: bool = True) -> None:
        """Raise unless ``app`` may store ``n`` more messages now. With ``pay``
        they are taken from its rate at once; else the caller pays with
        ``pay_accepted`` for what it stored (a batch stored in chunks, whose
        retries must not pay again for chunks stored before)."""
        if n <= 0:
            return
        if await self._storage_full():
            raise RateLimited(
                "the server's storage is nearly full; no messages are accepted until it has room",
                retry_after=STORAGE_RETRY_SECONDS,
                reason=Reason.STORAGE_FULL,
            )
        held = await self._held_count(app)
        limit = held.held.own_limit or self.policy.max_held_messages
        if held.held.count + held.added + n > limit:
            raise QuotaExceeded(
                [
                    QuotaViolation(
                        f"app:{app}:held_messages",
                        f"the app holds {held.held.count + held.added} messages of its "
                        f"{limit}; room comes back as finished ones reach the end of "
                        "their retention",
                    )
                ],
                reason=Reason.APP_HELD_MESSAGES_CAP,
            )
        if not (pay and self._spend_lease(app, n)):
            taken = await self.quota.take_accept(
                app,
                n,
                take=n if pay else 0,
                default_rate=self.policy.accept_per_second,
                burst_seconds=self.policy.accept_burst_seconds,
                lease_seconds=LEASE_SECONDS if pay else 0.0,
            )
            if taken.wait_ms:
                raise RateLimited(
                    f"the app accepts messages faster than its rate; {n} more fit in "
                    f"{taken.wait_ms / 1000:.3f}s",
                    retry_after=taken.wait_ms / 1000,
                    reason=Reason.APP_RATE_LIMITED,
                )
            if taken.leased:
                self._leases.pop(app, None)
                if len(self._leases) >= HELD_CACHE_APPS:
                    del self._leases[next(iter(self._leases))]
                self._leases[app] = (taken.leased, self.clock())
        held.added += n

    def _spend_lease(self, app: str, n: int) -> bool:
        """Take ``n`` tokens from this process's lease of the app's rate, if it holds them."""
        tokens, leased_at = self._leases.get(app, (0, 0.0))
        if tokens < n or self.clock() - leased_at > LEASE_LIFE:
            return False
        self._leases[app] = (tokens - n, leased_at)
        return True

    async def pay_accepted(self, app: str, n: int) -> None:
        """Take ``n`` stored messages from the app's rate (into debt if need be)."""
        await self.quota.take_accept(
            app,
            0,
            take=n,
            default_rate=self.policy.accept_per_second,
            burst_seconds=self.policy.accept_burst_seconds,
        )

    def query_slot(self, app: str) -> QuerySlot:
        """One of the app's expensive-call slots of this process; release it when done."""
        running = self._queries.get(app, 0)
        if running >= self.policy.max_concurrent_queries:
            raise RateLimited(
                f"the app runs {running} listings or watch catch-ups on this server "
                "already; retry when one has finished",
                retry_after=QUERY_RETRY_SECONDS,
                reason=Reason.TOO_MANY_CONCURRENT_QUERIES,
            )
        self._queries[app] = running + 1
        return QuerySlot(self, app)

    @contextmanager
    def query(self, app: str) -> Iterator[None]:
        """Hold one of the app's expensive-call slots while inside."""
        slot = self.query_slot(app)
        try:
            yield
        finally:
            slot.release()

    def _release_query(self, app: str) -> None:
        left = self._queries[app] - 1
        if left:
            self._queries[app] = left
        else:
            del self._queries[app]

    def running_queries(self, app: str) -> int:
        """The app's expensive calls running in this process now."""
        return self._queries.get(app, 0)

    async def _storage_full(self) -> bool:
        if self.clock() - self._memory_read_at < self.policy.check_seconds:
            return self._memory_full
        async with self._memory_lock:
            # Callers that waited for the lock use what the first one read.
            if self.clock() - self._memory_read_at >= self.policy.check_seconds:
                memory = await self.quota.memory()
                cap = self.policy.redis_max_memory_bytes or memory.maxmemory
                self._memory_full = cap > 0 and memory.used >= cap * self.policy.memory_watermark
                self._memory_read_at = self.clock()
        return self._memory_full

    async def _held_count(self, app: str) -> _Held:
        now = self.clock()
        cached = self._held.get(app)
        if cached is not None and now - cached.read_at < self.policy.check_seconds:
            return cached
        fresh = _Held(now, await self.quota.held(app))
        self._held.pop(app, None)
        if len(self._held) >= HELD_CACHE_APPS:
            del self._held[next(iter(self._held))]
        self._held[app] = fresh
        return fresh


@dataclass(eq=False)
class QuerySlot:
    """A held expensive-call slot; ``release()`` gives it back (once, however
    often it is called)."""

    admission: Admission
    app: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._release_query(self.app)
