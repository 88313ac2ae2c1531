"""The shard count the data in Redis may use: the most shards ever written to.

A message's shard is part of its id and every shard has its own queue, due set
and event stream, so every shard that ever held a message must go on being
read, whatever count a process writes new messages with. The count is recorded
in Redis and only ever raised: a process started with more shards raises it
(new messages spread over more shards, the old ones go on being read), one
started with fewer writes to fewer but reads them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import map_redis_errors
from smsgate_server.store.keys import ShardKeys, shard_count_key, shard_growth_key

__all__ = ["ShardLayout", "record_shard_count"]

# The most shards SMSGATE_SHARDS allows (config.Settings.shards; two hex digits of an id).
_MAX_SHARDS = 256


# Raises the recorded count to ARGV[1] unless it is higher (noting a growth
# from an earlier count, on Redis's clock); returns {count, grown from, at ms}.
_RAISE = """
local recorded = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > recorded then
  redis.call('SET', KEYS[1], wanted)
  if recorded > 0 then
    local t = redis.call('TIME')
    local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', KEYS[2], 'from', recorded, 'at', string.format('%d', ms))
  end
  recorded = wanted
end
local grown = redis.call('HMGET', KEYS[2], 'from', 'at')
return {recorded, tonumber(grown[1] or '0'), tonumber(grown[2] or '0')}
"""


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """The shards the data may use, and the last growth of their count."""

    shards: int
    # The count before the last growth (0: it never grew), and when it grew (ms).
    grown_from: int = 0
    grown_at_ms: int = 0


async def record_shard_count(client: RedisClient, shards: int) -> ShardLayout:
    """The shards the data may use: the recorded count raised to ``shards``
    (atomically: of processes starting together, the highest count stands)."""
    key = shard_count_key()
    with map_redis_errors():
        count = shards
        if await client.get(key) is None:
            # Data from before the count was recorded: every shard's queue
            # stream exists once a dispatcher has run, so the highest one
            # present gives the count.
            highest = await _highest_queue(client)
            count = max(count, highest + 1 if highest is not None else 0)
        # Once per start: not worth keeping a script cached for.
        reply = await client.eval(_RAISE, 2, key, shard_growth_key(), count)
        return ShardLayout(int(reply[0]), int(reply[1]), int(reply[2]))


async def _highest_queue(client: RedisClient) -> int | None:
    async with client.pipeline(transaction=False) as pipe:
        for shard in range(_MAX_SHARDS):
            pipe.exists(ShardKeys(shard).queue)
        found = await pipe.execute()
    present = [shard for shard, count in enumerate(found) if count]
    return max(present) if present else None
