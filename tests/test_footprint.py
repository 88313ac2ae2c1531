"""What a message costs in Redis (issue 16): one compact hash with its history,
a batch's text stored once, the provider-id map dropped soon after the receipt,
and messages written in the previous layout still read and moved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis
from smsgate_server.config import Settings
from smsgate_server.domain.ids import new_batch_id, new_message_id
from smsgate_server.domain.message import NewMessage
from smsgate_server.domain.status import Status
from smsgate_server.store.connection import RedisConnection
from smsgate_server.store.keys import MessageField
from smsgate_server.store.messages import (
    Accepted,
    MessageStore,
    Outcome,
    Receipt,
    ReceiptResult,
    SendOutcome,
)
from smsgate_server.store.queue import DispatchQueue

from tests.test_store import Clock, store_for

# Longer than Redis's default compact-hash value limit (64 bytes).
TEXT = "Your order 4711 has shipped and arrives tomorrow. Track it at example.com/t/9f3k"
APP = "ak_footprint"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> DispatchQueue:
    queue = DispatchQueue(RedisConnection(client=redis, reader=redis), shards=1)
    await queue.ensure_groups()
    return queue


def new(now_ms: int, text: str = TEXT, phone: str = "+14155550123") -> NewMessage:
    return NewMessage(
        id=new_message_id(now_ms, 0), phone=phone, rendered=text, segments=1,
        send_at_ms=0, text=text,
    )  # fmt: skip


async def deliver(store: MessageStore, queue: DispatchQueue, clock: Clock) -> None:
    """Claim, send and deliver every queued message, 5 ms apart."""
    entries = await queue.read(0, "w1", 100)
    claimed = await store.claim(0, entries, reclaimed=False, max_attempts=3)
    clock.ms += 5
    await store.settle(0, [SendOutcome(c, Outcome.SENT, "sim", f"pid-{c.id}") for c in claimed])
    clock.ms += 5
    results = await store.apply_receipts(0, [Receipt(APP, c.id, True) for c in claimed])
    assert set(results) == {ReceiptResult.APPLIED}


async def test_a_delivered_message_is_one_compact_hash_with_its_history(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    sent = new(clock.ms)
    await store.accept(APP, 0, [sent])
    await deliver(store, queue, clock)

    key = store.shard_keys[0].message(APP, sent.id)
    # The embedded Redis keeps hashes with values up to 1 KiB compact.
    assert await redis.object("encoding", key) in (b"ziplist", b"listpack")
    assert not await redis.exists(store.shard_keys[0].history(APP, sent.id))
    (got,) = await store.get_many(APP, [(0, sent.id)])
    assert got is not None
    assert (got.id, got.text, got.rendered, got.status) == (
        sent.id, TEXT, TEXT, Status.DELIVERED,
    )  # fmt: skip
    assert [(h.status, h.time_ms - got.created_ms, h.detail) for h in got.history] == [
        (Status.QUEUED, 0, ""),
        (Status.SENDING, 0, "attempt 1"),
        (Status.SENT, 5, f"sim pid-{sent.id}"),
        (Status.DELIVERED, 10, ""),
    ]


async def test_a_batch_text_is_stored_once_and_every_recipient_reads_and_sends_it(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    shared = [new(clock.ms, phone=f"+1415555010{i}") for i in range(3)]
    own = new(clock.ms, text="A text of its own", phone="+14155550199")
    await store.accept(APP, 0, [*shared, own], batch_id="b1")

    keys = store.shard_keys[0]
    assert await redis.get(keys.batch_text(APP, "b1")) == TEXT.encode()
    for m in shared:
        stored = await redis.hkeys(keys.message(APP, m.id))
        assert MessageField.RENDERED.encode() not in stored
        assert MessageField.TEXT.encode() not in stored
    read = await store.get_many(APP, [(0, m.id) for m in [*shared, own]])
    assert [(m.text, m.rendered) for m in read if m is not None] == [
        *[(TEXT, TEXT)] * 3,
        ("A text of its own", "A text of its own"),
    ]
    claimed = await store.claim(0, await queue.read(0, "w1", 10), reclaimed=False, max_attempts=3)
    assert sorted(c.rendered for c in claimed) == sorted([TEXT] * 3 + ["A text of its own"])
    assert {c.batch_id for c in claimed} == {"b1"}


async def test_a_repeated_accept_call_stores_and_queues_nothing_again(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    batch = [new(clock.ms, phone=f"+1415555010{i}") for i in range(2)]

    first = await store.accept(APP, 0, batch, batch_id="b1", remember="b1;ids")
    # The same call again, as a retry after a failover sends it.
    again = await store.accept(APP, 0, batch, batch_id="b1", remember="b1;ids")

    assert first.kind is Accepted.NEW
    assert (again.kind, again.remembered) == (Accepted.DUPLICATE, "b1;ids")
    keys = store.shard_keys[0]
    assert await redis.xlen(keys.queue) == 2
    assert await store.batch_ids(APP, 0, "b1") == [m.id for m in batch]
    (one,) = await store.get_many(APP, [(0, batch[0].id)])
    assert one is not None and [h.status for h in one.history] == [Status.QUEUED]


async def test_a_receipt_leaves_the_provider_id_map_only_for_repeats(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    sent = new(clock.ms)
    await store.accept(APP, 0, [sent])
    await deliver(store, queue, clock)

    pm = store.shard_keys[0].provider_id("sim", f"pid-{sent.id}")
    assert 0 < await redis.ttl(pm) <= 600  # was the receipt timeout and an hour
    assert await store.lookup_provider_ids("sim", [f"pid-{sent.id}"]) == [f"{APP}:{sent.id}"]


async def test_a_message_stored_in_the_previous_layout_reads_and_moves_on(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    keys = store.shard_keys[0]
    old_id = new_message_id(clock.ms, 0)
    # What accept.lua wrote before this issue: every field, the text twice,
    # and the history as a list of "status|absolute ms|detail".
    await redis.hset(
        keys.message(APP, old_id),
        mapping={
            "id": old_id, "b": "", "p": "+14155550123", "tx": TEXT, "tp": "", "pa": "",
            "r": TEXT, "sg": 2, "ct": clock.ms, "sa": clock.ms, "snd": "", "lb": "",
            "at": 0, "sen": "", "ex": 0, "en": 1, "st": int(Status.QUEUED), "ut": clock.ms,
        },
    )  # fmt: skip
    await redis.rpush(keys.history(APP, old_id), f"{int(Status.QUEUED)}|{clock.ms}|")
    await redis.xadd(keys.queue, {"m": f"{APP}:{old_id}"})

    (before,) = await store.get_many(APP, [(0, old_id)])
    assert before is not None
    assert (before.text, before.rendered, before.segments) == (TEXT, TEXT, 2)
    assert [(h.status, h.time_ms) for h in before.history] == [(Status.QUEUED, clock.ms)]

    await deliver(store, queue, clock)

    (after,) = await store.get_many(APP, [(0, old_id)])
    assert after is not None and after.status is Status.DELIVERED
    assert [(h.status, h.time_ms - clock.ms) for h in after.history] == [
        (Status.QUEUED, -10),
        (Status.SENDING, -10),
        (Status.SENT, -5),
        (Status.DELIVERED, 0),
    ]
    # Its history list ends with the message, not before.
    assert 0 < await redis.ttl(keys.history(APP, old_id)) <= Settings().message_retention_seconds


async def test_the_app_index_is_compact_chunks_that_page_newest_first(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    keys = store.shard_keys[0]
    accepted: list[str] = []
    # 300 messages over 3 ms, in calls of 100, each call's ids in random order.
    for _ in range(3):
        batch = [new(clock.ms, phone=f"+1415555{i:04d}") for i in range(100)]
        await store.accept(APP, 0, batch, batch_id=f"b{clock.ms}")
        accepted += [m.id for m in batch]
        clock.ms += 1

    assert await chunk_sizes(redis, keys.index(APP)) == [120, 120, 60]
    # Another replica's clock: ids older than the newest chunk join the chunk
    # that covers them, which splits rather than outgrow the compact encoding.
    late = [new(clock.ms - 3, phone=f"+1415556{i:04d}") for i in range(10)]
    await store.accept(APP, 0, late)
    accepted += [m.id for m in late]
    assert await chunk_sizes(redis, keys.index(APP)) == [65, 65, 120, 60]
    assert await paged(store) == sorted(accepted, reverse=True)

    gone = accepted[::7]
    await store.forget(APP, [(0, i) for i in gone])
    assert await paged(store) == sorted(set(accepted) - set(gone), reverse=True)


async def chunk_sizes(redis: Redis, index: str) -> list[int]:
    """How many ids each chunk of an index holds, oldest chunk first; each
    chunk in Redis's compact encoding."""
    sizes = []
    for name in cast(list[bytes], await redis.zrange(index, 0, -1)):
        chunk = f"{index}:{name.decode()}"
        assert await redis.object("encoding", chunk) in (b"ziplist", b"listpack")
        sizes.append(await redis.zcard(chunk))
    return sizes


async def paged(store: MessageStore) -> list[str]:
    """Every id of APP, by pages of 50 below a cursor."""
    seen: list[str] = []
    below = "~"
    while page := (await store.index_pages(APP, below=below, at_least="", limit=50))[0]:
        seen += page
        below = page[-1]
    return seen


async def test_ids_indexed_before_the_chunks_still_list_and_are_forgotten(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    keys = store.shard_keys[0]
    # What accept.lua wrote before the chunks: one sorted set of every id.
    legacy = [new_message_id(clock.ms - 2 * k, 0) for k in range(1, 4)]
    await redis.zadd(keys.legacy_index(APP), {i: 0 for i in legacy})
    fresh = [new(clock.ms), new(clock.ms + 1)]
    await store.accept(APP, 0, fresh)

    (ids,) = await store.index_pages(APP, below="~", at_least="", limit=4)
    assert ids == [fresh[1].id, fresh[0].id, legacy[0], legacy[1]]

    await store.forget(APP, [(0, legacy[0]), (0, fresh[1].id)])
    (ids,) = await store.index_pages(APP, below="~", at_least="", limit=10)
    assert ids == [fresh[0].id, legacy[1], legacy[2]]


@pytest.mark.parametrize("touch", ["accept", "list"])
async def test_the_index_written_before_the_chunks_expires_with_its_newest_id(
    redis: Redis, touch: str
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    legacy = store.shard_keys[0].legacy_index(APP)
    horizon = store.horizon_ms
    # Never added to since the chunks: ids long gone and ids of a minute ago.
    gone = [new_message_id(clock.ms - horizon - k, 0) for k in range(1, 4)]
    kept = [new_message_id(clock.ms - 60_000 - k, 0) for k in range(3)]
    await redis.zadd(legacy, {i: 0 for i in gone + kept})

    if touch == "accept":
        await store.accept(APP, 0, [new(clock.ms)])
    else:
        await store.index_pages(APP, below="~", at_least="", limit=10)
    left = [x.decode() for x in cast(list[bytes], await redis.zrange(legacy, 0, -1))]
    assert left == sorted(kept)
    # It lives as long as its newest id's message can, not longer.
    assert horizon - 60_000 - 1_000 < await redis.pttl(legacy) <= horizon - 60_000


async def test_the_index_written_before_the_chunks_goes_when_read_past_its_newest_id(
    redis: Redis,
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    legacy = store.shard_keys[0].legacy_index(APP)
    await redis.zadd(legacy, {new_message_id(clock.ms - k, 0): 0 for k in range(3)})
    clock.ms += store.horizon_ms

    assert await store.index_pages(APP, below="~", at_least="", limit=10) == [[]]
    assert await redis.exists(legacy) == 0


async def test_an_idle_apps_index_expires_with_its_newest_message(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    index = store.shard_keys[0].index(APP)
    # Messages that can exist 0.25 s more (a full chunk), and 1 s more.
    soon = clock.ms - store.horizon_ms + 250
    await store.accept(APP, 0, [new(soon, phone=f"+1415555{i:04d}") for i in range(120)])
    later = [new(soon + 750, phone=f"+1415556{i:04d}") for i in range(5)]
    await store.accept(APP, 0, later)
    first, second = (x.decode() for x in cast(list[bytes], await redis.zrange(index, 0, -1)))
    assert 0 < await redis.pttl(f"{index}:{first}") <= 250
    assert 750 < await redis.pttl(index) <= 1_000

    # The older chunk went first: reads skip it and the directory drops its name.
    await asyncio.sleep(0.6)
    (ids,) = await store.index_pages(APP, below="~", at_least="", limit=1_000)
    assert ids == sorted((m.id for m in later), reverse=True)
    assert [x.decode() for x in cast(list[bytes], await redis.zrange(index, 0, -1))] == [second]

    # Then the rest: nothing of the app's index is left.
    await asyncio.sleep(0.6)
    assert await redis.exists(index, f"{index}:{second}") == 0


@pytest.mark.parametrize("skew_ms,per_ms", [(3, 1), (3, 4)])
async def test_chunks_stay_nearly_full_when_replica_clocks_differ_by_a_few_ms(
    redis: Redis, skew_ms: int, per_ms: int
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    total = 0
    while total < 1_500:
        for _ in range(per_ms):
            # Two replicas' calls alternate, the second's clock behind.
            await store.accept(APP, 0, [new(clock.ms, phone="+14155550101")])
            await store.accept(APP, 0, [new(clock.ms - skew_ms, phone="+14155550102")])
            total += 2
        clock.ms += 1
    sizes = await chunk_sizes(redis, store.shard_keys[0].index(APP))
    assert sum(sizes) == total
    # Was 60 or less: each chunk's end split in two when the late ids came.
    assert total / len(sizes) >= 95, sizes
    assert len(await paged(store)) == total


async def test_what_the_id_says_is_not_stored_again_and_reads_back(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    batch_id = new_batch_id(clock.ms, 0)
    sent = [new(clock.ms, phone=f"+1415555010{i}") for i in range(2)]
    await store.accept(APP, 0, sent, batch_id=batch_id)

    key = store.shard_keys[0].message(APP, sent[0].id)
    # The creation time is the id's; the batch id shares its first 14 digits.
    assert await redis.hget(key, MessageField.CREATED) is None
    assert await redis.hget(key, MessageField.BATCH) == batch_id[14:].encode()
    listed = await redis.lrange(store.shard_keys[0].batch(APP, batch_id), 0, -1)
    assert listed == [m.id[14:].encode() for m in sent]
    assert await store.batch_ids(APP, 0, batch_id) == [m.id for m in sent]
    entries = await queue.read(0, "w1", 100)
    claimed = await store.claim(0, entries, reclaimed=False, max_attempts=3)
    assert {(c.batch_id, c.created_ms, c.rendered) for c in claimed} == {(batch_id, clock.ms, TEXT)}
    clock.ms += 5
    await store.settle(0, [SendOutcome(c, Outcome.SENT, "sim", f"pid-{c.id}") for c in claimed])
    clock.ms += 5
    await store.apply_receipts(0, [Receipt(APP, c.id, True) for c in claimed])

    got = await store.get_many(APP, [(0, m.id) for m in sent])
    assert [(m.batch_id, m.created_ms, m.status) for m in got if m] == [
        (batch_id, clock.ms - 10, Status.DELIVERED)
    ] * 2
    assert got[0] is not None
    assert [h.time_ms - clock.ms for h in got[0].history] == [-10, -10, -5, 0]


async def test_a_detail_with_a_line_break_stays_one_history_line(
    redis: Redis, queue: DispatchQueue
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    sent = new(clock.ms)
    await store.accept(APP, 0, [sent])
    entries = await queue.read(0, "w1", 100)
    (claimed,) = await store.claim(0, entries, reclaimed=False, max_attempts=3)
    await store.settle(0, [SendOutcome(claimed, Outcome.SENT, "sim", "p1")])
    # A vendor's code may hold anything, a line break too.
    await store.apply_receipts(0, [Receipt(APP, sent.id, False, "E\n7", "bad\nnumber")])

    (got,) = await store.get_many(APP, [(0, sent.id)])
    assert got is not None
    assert [(h.status, h.detail) for h in got.history][-1] == (Status.UNDELIVERED, "E 7")
    assert got.error_code == "E\n7"
