"""MessageStore against a real Redis, with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis
from smsgate_server.config import Settings
from smsgate_server.domain.ids import new_message_id
from smsgate_server.domain.message import NewMessage
from smsgate_server.domain.status import Status
from smsgate_server.store.connection import RedisConnection
from smsgate_server.store.messages import MessageStore, Outcome, SendOutcome
from smsgate_server.store.queue import DispatchQueue

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


def message(now_ms: int, *, send_at_ms: int = 0) -> NewMessage:
    return NewMessage(
        id=new_message_id(now_ms, 0), phone="+14155550123", rendered="x", segments=1,
        send_at_ms=send_at_ms or now_ms, text="x",
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
    assert await listed(store) == [old.id]
    assert 0 < await redis.pttl(store.shard_keys[0].batch("ak", "b1")) <= 40 * DAY_MS
    # Fill the first index chunk, so the next message starts a chunk of its own.
    await store.accept("ak", 0, [message(clock.ms) for _ in range(119)], now_ms=clock.ms)
    (first_chunk,) = cast(list[bytes], await redis.zrange(store.shard_keys[0].index("ak"), 0, -1))

    clock.ms += 30 * DAY_MS  # still within scheduling + retention: kept
    recent = message(clock.ms)
    await store.accept("ak", 0, [recent], now_ms=clock.ms)
    assert len(await listed(store)) == 121

    clock.ms += 10 * DAY_MS  # past every lifetime of the first messages
    await store.accept("ak", 0, [message(clock.ms)], now_ms=clock.ms)
    kept = await listed(store)
    assert old.id not in kept
    assert recent.id in kept
    assert len(kept) == 2

    # Once the next chunk is past the horizon too, the first chunk is gone.
    clock.ms += 40 * DAY_MS
    await store.accept("ak", 0, [message(clock.ms)], now_ms=clock.ms)
    chunk = store.shard_keys[0].index("ak") + ":" + first_chunk.decode()
    assert not await redis.exists(chunk)
    assert len(await listed(store)) == 1


async def listed(store: MessageStore) -> list[str]:
    """Every id of app "ak" the index lists, newest first."""
    (ids,) = await store.index_pages("ak", below="~", at_least="", limit=1000)
    return ids


def store_for(redis: Redis, settings: Settings, clock: Clock) -> MessageStore:
    """A MessageStore configured as the runtime does it, on ``clock``."""
    return MessageStore(
        redis,
        shards=1,
        event_retention_seconds=settings.event_retention_seconds,
        message_retention_seconds=settings.message_retention_seconds,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        receipt_timeout_seconds=settings.receipt_timeout_seconds,
        schedule_max_days=settings.schedule_max_days,
        max_message_age_seconds=settings.max_message_age_seconds,
        clock=clock,
    )


async def test_a_message_scheduled_at_the_limit_is_listed_until_its_retention_ends(
    redis: Redis,
) -> None:
    # Every bound at its maximum, each longer than the horizon's slack day.
    settings = Settings(schedule_max_days=366, max_message_age_seconds=7 * 86_400)
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, settings, clock)
    queue = DispatchQueue(RedisConnection(client=redis, reader=redis), shards=1)
    await queue.ensure_groups()
    accepted_ms = clock.ms
    scheduled = message(clock.ms, send_at_ms=clock.ms + settings.schedule_max_days * DAY_MS)
    await store.accept("ak", 0, [scheduled], batch_id="b1")

    async def send(outcome: Outcome, retry_at_ms: int = 0) -> None:
        await store.promote(0, 100)
        entries = await queue.read(0, "w1", 10)
        (claimed,) = await store.claim(
            0, entries, reclaimed=False, max_attempts=settings.max_attempts
        )
        await store.settle(0, [SendOutcome(claimed, outcome, "sim", "p1", retry_at_ms=retry_at_ms)])

    # The longest life: due at the limit, retried until its maximum age, sent,
    # no receipt until the receipt timeout, then kept for retention.
    clock.ms = scheduled.send_at_ms
    retry_at = clock.ms + int(settings.max_message_age_seconds * 1000) - 1000
    await send(Outcome.RETRY, retry_at)
    clock.ms = retry_at
    await send(Outcome.SENT)
    clock.ms += int(settings.receipt_timeout_seconds * 1000)
    await store.promote(0, 100)
    (ended,) = await store.get_many("ak", [(0, scheduled.id)])
    assert ended is not None and ended.status is Status.EXPIRED
    retention_ends = clock.ms + settings.message_retention_seconds * 1000

    async def listed() -> list[str]:
        # Accepting trims the app's index of entries past the horizon.
        await store.accept("ak", 0, [message(clock.ms)])
        return (await store.index_pages("ak", below="~", at_least="", limit=1000))[0]

    clock.ms = retention_ends - 60_000
    assert scheduled.id in await listed()
    assert await store.batch_ids("ak", 0, "b1") == [scheduled.id]
    # Redis's own clock has not moved: the batch list's TTL must cover it all.
    batch_ttl = await redis.pttl(store.shard_keys[0].batch("ak", "b1"))
    assert batch_ttl >= retention_ends - accepted_ms

    clock.ms = retention_ends + 2 * DAY_MS
    assert scheduled.id not in await listed()
    assert batch_ttl <= retention_ends + 2 * DAY_MS - accepted_ms
