"""The shard count the data in Redis was written with.

A message's shard is part of its id and every shard has its own queue, due set
and event stream, so data written with one shard count and served with another
strands the messages of the shards that went away. The count is recorded in
Redis at first start; later starts compare theirs with it.
"""

from __future__ import annotations

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import map_redis_errors
from smsgate_server.store.keys import ShardKeys, shard_count_key

__all__ = ["record_shard_count"]

# The most shards SMSGATE_SHARDS allows (config.Settings.shards).
_MAX_SHARDS = 256


async def record_shard_count(client: RedisClient, shards: int) -> int:
    """The data's shard count: ``shards`` when none is recorded yet (it is then
    recorded), else the recorded one, which the caller compares with its own."""
    key = shard_count_key()
    with map_redis_errors():
        recorded = await client.get(key)
        if recorded is not None:
            return int(recorded)
        # Data from before the count was recorded: every shard's queue stream
        # exists once a dispatcher has run, so the highest one present gives
        # the count.
        highest = await _highest_queue(client)
        count = highest + 1 if highest is not None else shards
        # NX: of processes starting together, the first one's count stands.
        if await client.set(key, count, nx=True):
            return count
        return int(await client.get(key) or count)


async def _highest_queue(client: RedisClient) -> int | None:
    async with client.pipeline(transaction=False) as pipe:
        for shard in range(_MAX_SHARDS):
            pipe.exists(ShardKeys(shard).queue)
        found = await pipe.execute()
    present = [shard for shard, count in enumerate(found) if count]
    return max(present) if present else None
