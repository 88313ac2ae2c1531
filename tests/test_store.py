"""MessageStore against a real Redis, with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from smsgate_server.domain.ids import new_message_id
from smsgate_server.domain.message import NewMessage
from smsgate_server.store.messages import MessageStore

DAY_MS = 86_400_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def message(now_ms: int) -> NewMessage:
    return NewMessage(
        id=new_message_id(now_ms, 0), phone="+14155550123", rendered="x", segments=1,
        send_at_ms=now_ms, text="x",
    )  # fmt: skip


async def test_index_and_batch_entries_do_not_outlive_their_messages(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = MessageStore(
        redis, shards=1, event_retention_seconds=3600, message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600, receipt_timeout_seconds=3600, schedule_max_days=35,
        max_message_age_seconds=86_400, clock=clock,
    )  # fmt: skip
    old = message(clock.ms)
    await store.accept("ak", 0, [old], batch_id="b1", now_ms=clock.ms)
    index = store.shard_keys[0].index("ak")
    assert await redis.zrange(index, 0, -1) == [old.id.encode()]
    assert 0 < await redis.pttl(store.shard_keys[0].batch("ak", "b1")) <= 40 * DAY_MS

    clock.ms += 30 * DAY_MS  # still within scheduling + retention: kept
    recent = message(clock.ms)
    await store.accept("ak", 0, [recent], now_ms=clock.ms)
    assert len(await redis.zrange(index, 0, -1)) == 2

    clock.ms += 10 * DAY_MS  # past every lifetime of the first message
    await store.accept("ak", 0, [message(clock.ms)], now_ms=clock.ms)
    kept = await redis.zrange(index, 0, -1)
    assert old.id.encode() not in kept
    assert recent.id.encode() in kept
