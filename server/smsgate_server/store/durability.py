"""What a Redis server would do with our data on a restart or under memory
pressure: is anything persisted (AOF, RDB snapshots), and may it evict keys?

Read once at start-up, so a Redis that would silently lose accepted messages,
apps and codes is found before the first call instead of after its restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import exceptions as redis_errors

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import map_redis_errors

__all__ = ["Durability", "read_durability"]


@dataclass(frozen=True, slots=True)
class Durability:
    """A Redis server's persistence and eviction settings."""

    aof: bool  # appendonly yes: every write logged, fsynced at most a second late
    snapshots: bool  # RDB save points configured: writes since the last one are lost
    eviction_policy: str  # maxmemory-policy; only noeviction keeps every key

    @property
    def persistent(self) -> bool:
        return self.aof or self.snapshots

    @property
    def evicts(self) -> bool:
        return self.eviction_policy != "noeviction"


async def read_durability(client: RedisClient) -> Durability | None:
    """The server's settings, or None when it does not let us read them (managed
    Redis services often disable or rename CONFIG)."""
    try:
        with map_redis_errors():
            # One name per CONFIG GET: several arrived in Redis 7. A cluster
            # client asks one node; the nodes of a cluster share their config.
            appendonly = await client.config_get("appendonly")
            save = await client.config_get("save")
            policy = await client.config_get("maxmemory-policy")
    except redis_errors.ResponseError:  # unknown command, or no permission (ACL)
        return None
    return Durability(
        aof=appendonly.get("appendonly") == "yes",
        snapshots=bool((save.get("save") or "").strip()),
        eviction_policy=policy.get("maxmemory-policy") or "",
    )
