"""DispatchQueue (store/queue.py) against a real Redis: reading, re-claiming
and forgetting consumers of a shard's consumer group."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.keys import GROUP, QueueField, ShardKeys
from smsgate_server.store.queue import DispatchQueue

QUEUE = ShardKeys(0).queue


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=4)
    yield connection
    await connection.aclose()


@pytest.fixture
async def queue(redis: RedisConnection) -> DispatchQueue:
    queue = DispatchQueue(redis, shards=1)
    await queue.ensure_groups()
    return queue


async def put(redis: RedisConnection, member: str) -> str:
    entry = await redis.client.xadd(QUEUE, {QueueField.MEMBER.value: member})
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def test_a_read_returns_new_entries_once(
    redis: RedisConnection, queue: DispatchQueue
) -> None:
    entry = await put(redis, "ak:m1")
    assert await queue.read(0, "w1", 10) == [(entry, "ak:m1")]
    await put(redis, "ak:m2")
    assert [m for _, m in await queue.read(0, "w2", 10)] == ["ak:m2"]


async def test_ensure_groups_is_idempotent(queue: DispatchQueue) -> None:
    await queue.ensure_groups()


async def test_a_lost_group_is_created_again_and_nothing_queued_is_lost(
    redis: RedisConnection, queue: DispatchQueue
) -> None:
    await redis.client.xgroup_destroy(QUEUE, GROUP)
    entry = await put(redis, "ak:m1")
    assert await queue.read(0, "w1", 10) == []  # NOGROUP: the group is made anew
    assert await queue.read(0, "w1", 10) == [(entry, "ak:m1")]


async def test_entries_of_a_dead_consumer_are_reclaimed(
    redis: RedisConnection, queue: DispatchQueue
) -> None:
    entry = await put(redis, "ak:m1")
    await queue.read(0, "dead", 10)
    start, entries = await queue.reclaim(0, "live", min_idle_ms=0, start="0-0")
    assert (start, entries) == ("0-0", [(entry, "ak:m1")])
    # Now the live consumer's: not re-claimed from it while it is fresh.
    assert await queue.reclaim(0, "other", min_idle_ms=3_600_000, start="0-0") == ("0-0", [])


async def test_idle_consumers_with_nothing_pending_are_forgotten(
    redis: RedisConnection, queue: DispatchQueue
) -> None:
    await put(redis, "ak:m1")
    await queue.read(0, "busy", 10)  # holds the entry
    for name in ("idle", "me"):
        await redis.client.xgroup_createconsumer(QUEUE, GROUP, name)
    assert await queue.forget_consumers(0, keep="me", idle_ms=-1) == 1
    left = await redis.client.xinfo_consumers(QUEUE, GROUP)
    assert sorted(c["name"].decode() for c in left) == ["busy", "me"]
