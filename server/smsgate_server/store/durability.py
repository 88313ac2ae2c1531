"""What a Redis server would do with our data on a restart or under memory
pressure: is anything persisted (AOF, RDB snapshots), and may it evict keys?

Read once at start-up, so a Redis that would silently lose accepted messages,
apps and codes is found before the first call instead of after its restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

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
    Redis services often disable or rename CONFIG). On a cluster, the least
    durable node's: any node may be, or become by a failover, the master of
    some messages."""
    try:
        with map_redis_errors():
            # One name per CONFIG GET: several arrived in Redis 7.
            appendonly = await _config_get(client, "appendonly")
            save = await _config_get(client, "save")
            policy = await _config_get(client, "maxmemory-policy")
    except redis_errors.ResponseError:  # unknown command, or no permission (ACL)
        return None
    nodes = [
        Durability(aof=a == "yes", snapshots=bool(s.strip()), eviction_policy=p)
        for a, s, p in zip(appendonly, save, policy, strict=True)
    ]
    return min(nodes, key=lambda d: (d.persistent and not d.evicts, d.aof))


async def _config_get(client: RedisClient, name: str) -> list[str]:
    """A setting's value on the server, or on each node of a cluster (in the
    same order for every setting)."""
    if isinstance(client, RedisCluster):
        # Asked plainly, a cluster client asks one node.
        # Typed as one reply; a reply per node, by node name, in fact.
        per_node: Any = await client.config_get(name, target_nodes=RedisCluster.ALL_NODES)
        replies = [per_node[node] for node in sorted(per_node)]
    else:
        replies = [await client.config_get(name)]
    return [reply.get(name) or "" for reply in replies]
