"""PolicyStore: the sending policy's counters, one script call per request.

Everything lives in the app's opt-out slot (``store.keys.policy_prefix``), so
one script (``policy_take.lua``) checks the opt-out list and counts every cap
for every recipient of a request, on Redis Cluster too. Counting comes before
the messages are stored; what is counted for messages then not stored is
given back (``refund``), and every counter expires (a same-content mark after
its window, day counters after their day), so a count whose refund was lost
with the process ends with its window anyway.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import optouts_key, policy_prefix
from smsgate_server.store.scripts import PolicyScripts

__all__ = ["PolicyCall", "PolicyStore", "PolicyTake", "Verdict"]


class Verdict(enum.IntEnum):
    """What the policy says of one recipient (policy_take.lua's numbers)."""

    ADMITTED = 0
    OPTED_OUT = 1
    SAME_CONTENT = 2
    NUMBER_DAY_CAP = 3
    APP_DAILY_CAP = 4


@dataclass(frozen=True, slots=True)
class PolicyCall:
    """What one request asks of the policy: which checks apply, for which
    recipients (their numbers, the numbers' tags, their contents' digests)."""

    request_id: str
    request_ttl_ms: int
    check_optouts: bool
    same_content_ms: int
    per_number_day: int
    daily_cap: int
    day: int
    day_left_ms: int
    token: str
    phones: Sequence[str]
    tags: Sequence[str]
    digests: Sequence[str]
    # Remember the verdicts even when every recipient is refused (a batch).
    remember_all: bool = False


@dataclass(frozen=True, slots=True)
class PolicyTake:
    """The verdict and wait (ms) per recipient, the app's messages counted
    today (with this request), and whether the verdicts are an earlier call's."""

    verdicts: list[tuple[Verdict, int]]
    app_today: int
    replayed: bool


class PolicyStore:
    """Checks and counts the sending policy of requests."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.scripts = PolicyScripts(redis)

    @redis_edge
    async def take(self, app: str, call: PolicyCall) -> PolicyTake:
        """Check every recipient and count those admitted (policy_take.lua)."""
        args: list[str | int] = [
            policy_prefix(app),
            call.request_id,
            call.request_ttl_ms,
            "1" if call.check_optouts else "0",
            call.same_content_ms,
            call.per_number_day,
            call.daily_cap,
            call.day,
            call.day_left_ms,
            call.token,
            "1" if call.remember_all else "0",
        ]
        for phone, tag, digest in zip(call.phones, call.tags, call.digests, strict=True):
            args += (phone, tag, digest)
        raw = await self.scripts.take(keys=[optouts_key(app)], args=args)
        values = [int(v) for v in raw]
        pairs = values[2:]
        return PolicyTake(
            verdicts=[(Verdict(pairs[i]), pairs[i + 1]) for i in range(0, len(pairs), 2)],
            app_today=values[0],
            replayed=bool(values[1]),
        )

    @redis_edge
    async def refund(
        self, app: str, call: PolicyCall, admitted: Sequence[int], *, forget: bool = True
    ) -> None:
        """Give back the counts of ``call``'s recipients at ``admitted`` (their
        messages were not stored); with ``forget``, forget its verdicts too."""
        args: list[str | int] = [
            policy_prefix(app),
            call.request_id if forget else "",
            "1" if call.same_content_ms else "0",
            "1" if call.per_number_day else "0",
            "1" if call.daily_cap else "0",
            call.day,
            call.token,
        ]
        for i in admitted:
            args += (call.tags[i], call.digests[i])
        await self.scripts.refund(keys=[optouts_key(app)], args=args)
