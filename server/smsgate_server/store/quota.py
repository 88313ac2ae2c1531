"""QuotaStore: what the per-app limits and the memory watermark read in Redis.

- The accept rate is a token bucket per app (``accept_rate.lua``), in the
  app's slot beside its record, so an app's own rate applies at once.
- The messages an app holds are counted by the message scripts themselves
  (``lib.lua``): per shard, the messages not yet terminal, exactly, and those
  that ended, in time buckets that expire when the last message of the bucket
  has. The sum errs high, by at most the messages of one bucket (an eighth of
  the retention period) whose hashes expired already, and never low for
  messages accepted since the counters exist.
- Redis's memory use comes from ``INFO memory``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import (
    HELD_BUCKETS,
    AppField,
    ShardKeys,
    accept_bucket_key,
    app_key,
)
from smsgate_server.store.scripts import QuotaScripts

__all__ = ["AcceptTake", "HeldMessages", "MemoryUse", "QuotaStore"]


@dataclass(frozen=True, slots=True)
class HeldMessages:
    """How many messages an app holds in Redis, and its own cap (None: the default)."""

    count: int
    own_limit: int | None


@dataclass(frozen=True, slots=True)
class AcceptTake:
    """What the accept bucket answered: ``wait_ms`` 0 when admitted (else how
    long to wait), and the tokens leased to the caller beyond what it took."""

    wait_ms: int
    leased: int = 0


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """Redis's ``used_memory`` and ``maxmemory`` (0: no limit), in bytes."""

    used: int
    maxmemory: int


class QuotaStore:
    """Reads and takes per-app quota in Redis."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        shards: int,
        message_retention_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.scripts = QuotaScripts(redis)
        self.shard_keys = [ShardKeys(i) for i in range(shards)]
        self._retention_ms = message_retention_seconds * 1000
        # As lib.lua computes it from the same retention.
        self._width_ms = math.ceil(self._retention_ms / HELD_BUCKETS)
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @redis_edge
    async def take_accept(
        self,
        app: str,
        n: int,
        *,
        take: int,
        default_rate: float,
        burst_seconds: float,
        lease_seconds: float = 0.0,
    ) -> AcceptTake:
        """Admit ``n`` messages (0: admit anything) to the app's accept bucket and
        take ``take`` tokens, plus a lease of up to ``lease_seconds`` of the
        app's rate from what the bucket holds beyond them."""
        admitted, wait_ms, lease = await self.scripts.accept_rate(
            keys=[app_key(app), accept_bucket_key(app)],
            args=[self.now_ms(), n, default_rate, burst_seconds, take, lease_seconds],
        )
        if not int(admitted):
            return AcceptTake(wait_ms=max(int(wait_ms), 1))
        return AcceptTake(wait_ms=0, leased=int(lease))

    @redis_edge
    async def held(self, app: str) -> HeldMessages:
        """The messages ``app`` holds in Redis (see the module docstring), in one round trip."""
        now = self.now_ms()
        # Every bucket whose counter may still exist; one more for clock skew.
        first = (now - self._retention_ms) // self._width_ms - 1
        buckets = range(first, now // self._width_ms + 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(app_key(app), AppField.MAX_HELD_MESSAGES)
            for keys in self.shard_keys:
                # One shard's counters share its slot; redis-py's cluster
                # pipeline refuses pipe.mget() (it cannot split it), not MGET.
                pipe.execute_command("MGET", keys.live(app), *(keys.done(app, b) for b in buckets))
            raw: list[Any] = await pipe.execute()
        own, counts = raw[0], raw[1:]
        return HeldMessages(
            count=sum(max(int(v), 0) for values in counts for v in values if v is not None),
            own_limit=int(own) if own is not None else None,
        )

    @redis_edge
    async def memory(self) -> MemoryUse:
        """Redis's memory use and limit (``INFO memory``); on a cluster, the
        fullest node's: a write to it fails whatever the others hold."""
        info: dict[str, Any]
        if isinstance(self.redis, RedisCluster):
            # Asked plainly, a cluster client asks one node: ask every master.
            info = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
        else:
            info = await self.redis.info("memory")
        # A cluster client answers per node.
        per_node = info and all(isinstance(v, dict) for v in info.values())
        nodes = list(info.values()) if per_node else [info]
        uses = [MemoryUse(int(n.get("used_memory", 0)), int(n.get("maxmemory", 0))) for n in nodes]
        return max(uses, key=lambda m: (m.used / m.maxmemory if m.maxmemory else 0.0, m.used))
