"""Group commit (issue 16): accept calls for one shard made in the same
event-loop moment share one script run, and each keeps its own answer,
idempotency and time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from smsgate_server.config import Settings
from smsgate_server.domain.ids import new_message_id
from smsgate_server.domain.message import NewMessage
from smsgate_server.store.messages import Accepted, AcceptOutcome, MessageStore

from tests.test_store import Clock, store_for

APP = "ak_group"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def new(now_ms: int, n: int) -> NewMessage:
    return NewMessage(
        id=new_message_id(now_ms, 0), phone=f"+141555501{n:02d}", rendered=f"text {n}",
        segments=1, send_at_ms=0, text=f"text {n}",
    )  # fmt: skip


async def script_runs(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def accept_one(store: MessageStore, now_ms: int, n: int, **kw: str) -> AcceptOutcome:
    return await store.accept(APP, 0, [new(now_ms, n)], now_ms=now_ms, remember=f"r{n}", **kw)


async def test_concurrent_accepts_share_one_script_run(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    await accept_one(store, clock.ms, 0)  # the script is loaded
    before = await script_runs(redis)

    outcomes = await asyncio.gather(*(accept_one(store, clock.ms, n) for n in range(1, 21)))

    assert await script_runs(redis) == before + 1
    assert {o.kind for o in outcomes} == {Accepted.NEW}
    assert await redis.xlen(store.shard_keys[0].queue) == 21


async def test_a_lone_accept_runs_at_once(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    before = await script_runs(redis)

    outcome = await accept_one(store, clock.ms, 1)

    assert outcome.kind is Accepted.NEW
    assert await script_runs(redis) - before in (1, 2)  # EVALSHA, and EVAL when not loaded


async def test_a_group_whose_first_caller_is_cancelled_still_answers_the_others(
    redis: Redis,
) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    await accept_one(store, clock.ms, 0)  # the script is loaded
    first = asyncio.create_task(accept_one(store, clock.ms, 1))
    others = [asyncio.create_task(accept_one(store, clock.ms, n)) for n in (2, 3)]
    await asyncio.sleep(0)  # the first opened the group, the others joined it
    first.cancel()

    outcomes = await asyncio.gather(*others)

    assert [o.kind for o in outcomes] == [Accepted.NEW, Accepted.NEW]
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled caller's message went with the group, as a caller
    # cancelled while its script runs may find it stored.
    assert await redis.xlen(store.shard_keys[0].queue) == 4


async def test_calls_in_one_group_keep_their_own_answers_and_times(redis: Redis) -> None:
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    await accept_one(store, clock.ms, 0, request_id="used", request_hash="h1")
    before = await script_runs(redis)

    new_one, retried, conflicting, later = await asyncio.gather(
        accept_one(store, clock.ms, 1),
        accept_one(store, clock.ms, 2, request_id="used", request_hash="h1"),
        accept_one(store, clock.ms, 3, request_id="used", request_hash="h2"),
        accept_one(store, clock.ms + 7, 4),
    )

    assert await script_runs(redis) == before + 1
    assert new_one == AcceptOutcome(Accepted.NEW, "")
    assert retried == AcceptOutcome(Accepted.DUPLICATE, "r0")
    assert conflicting.kind is Accepted.CONFLICT
    assert later.kind is Accepted.NEW
    (ids,) = await store.index_pages(APP, below="~", at_least="", limit=100)
    stored = await store.get_many(APP, [(0, i) for i in ids])
    created = {m.text: m.created_ms - clock.ms for m in stored if m is not None}
    # The retried and the conflicting call stored nothing; each call its own time.
    assert created == {"text 0": 0, "text 1": 0, "text 4": 7}


async def connections_named(redis: Redis, name: str) -> int:
    clients = await redis.client_list()
    return sum(1 for c in clients if c.get("name") == name)


async def test_concurrent_reads_share_one_pipeline_and_keep_to_their_app(
    redis: Redis, redis_url: str
) -> None:
    clock = Clock(1_700_000_000_000)
    writer = store_for(redis, Settings(), clock)
    mine = [new(clock.ms, n) for n in range(20)]
    await writer.accept(APP, 0, mine)
    other = new(clock.ms, 99)
    await writer.accept("ak_other", 0, [other])
    # A client of its own: each pipeline (or lone command) in flight at once
    # takes a connection of its pool.
    reader = Redis.from_url(redis_url, client_name="group-reads")
    try:
        store = store_for(reader, Settings(), clock)
        found = await asyncio.gather(
            *(store.get(APP, 0, m.id) for m in mine),
            store.get(APP, 0, other.id),
            store.get("ak_other", 0, other.id),
        )
        assert await connections_named(redis, "group-reads") == 1
    finally:
        await reader.aclose()
    assert [m.text if m else None for m in found] == [
        *(f"text {n}" for n in range(20)),
        None,  # another app's id reads as nothing
        "text 99",
    ]
