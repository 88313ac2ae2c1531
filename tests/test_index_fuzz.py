"""The chunked app index against a model: random accepts (concurrent calls
sharing one script run, ids from other replicas' clocks, batches), forgets
and chunks that expire before their directory; the index pages exactly the
model's ids newest first, every chunk stays compact, and lower bounds hold."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis
from smsgate_server.config import Settings
from smsgate_server.domain.ids import new_message_id
from smsgate_server.domain.message import NewMessage

from tests.test_store import Clock, store_for

APP = "ak_fuzz"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def new(ms: int, i: int) -> NewMessage:
    return NewMessage(
        id=new_message_id(ms, 0), phone=f"+1415555{i % 10000:04d}", rendered="x", segments=1,
        send_at_ms=0, text="x",
    )  # fmt: skip


async def names_of(redis: Redis, index: str) -> list[str]:
    return [x.decode() for x in cast(list[bytes], await redis.zrange(index, 0, -1))]


async def ids_of(redis: Redis, chunk: str) -> list[str]:
    return [x.decode() for x in cast(list[bytes], await redis.zrange(chunk, 0, -1))]


@pytest.mark.parametrize("seed", range(3))
async def test_the_index_pages_what_a_model_holds(redis: Redis, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(1_700_000_000_000)
    store = store_for(redis, Settings(), clock)
    index = store.shard_keys[0].index(APP)
    model: set[str] = set()
    n = 0
    for step in range(60):
        calls = []
        for _ in range(rng.randint(1, 4)):
            size = rng.choice([1, 1, 3, 50, 130, 300])
            back = rng.choice([0, 0, 0, 1, 5, 40])
            msgs = [new(clock.ms - rng.randint(0, back), n + k) for k in range(size)]
            n += size
            if rng.random() < 0.5:
                msgs.sort(key=lambda m: m.id)
            calls.append(msgs)
        await asyncio.gather(*(store.accept(APP, 0, c) for c in calls))
        for c in calls:
            model.update(m.id for m in c)
        if rng.random() < 0.3 and model:
            gone = rng.sample(sorted(model), min(len(model), rng.randint(1, 200)))
            await store.forget(APP, [(0, i) for i in gone])
            model -= set(gone)
        if rng.random() < 0.2 and (names := await names_of(redis, index)):
            # A chunk expired (as an older one does before its directory).
            chunk = f"{index}:{rng.choice(names)}"
            model -= set(await ids_of(redis, chunk))
            await redis.delete(chunk)
        clock.ms += rng.choice([0, 1, 1, 2, 7])
        # Every chunk compact, named at or below its lowest id, and below the next name.
        names = await names_of(redis, index)
        for j, name in enumerate(names):
            ids = await ids_of(redis, f"{index}:{name}")
            assert len(ids) <= 120, (step, name, len(ids))
            assert not ids or ids[0] >= name, (step, name, ids[0])
            if ids and j + 1 < len(names):
                assert ids[-1] < names[j + 1], (step, name, ids[-1], names[j + 1])
        # Paging by cursor, with random page sizes and a random lower bound.
        want = sorted(model, reverse=True)
        seen: list[str] = []
        below = "~"
        while page := (
            await store.index_pages(APP, below=below, at_least="", limit=rng.randint(1, 150))
        )[0]:
            seen += page
            below = page[-1]
        assert seen == want, step
        least = rng.choice(want) if want else ""
        (got,) = await store.index_pages(APP, below="~", at_least=least, limit=1_000_000)
        assert got == [i for i in want if i >= least], step
