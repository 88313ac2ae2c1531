"""GroupedScripts (store/grouping.py) on real Redis, standalone and cluster:
script calls made together share one pipeline, and each still gets its own
reply or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from smsgate_server.store.connection import RedisClient, connect
from smsgate_server.store.grouping import GroupedScripts
from smsgate_server.store.scripts import LuaScript

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    connection = await connect(redis_url, pool_size=8)
    yield connection.client
    await connection.aclose()


async def test_calls_made_together_go_over_one_connection(redis_url: str) -> None:
    # A plain pool opens a connection per concurrent command: one connection
    # seen by Redis means the twenty calls went as one pipeline.
    client = aioredis.Redis.from_url(redis_url, client_name="grouped-test")
    try:
        grouped, add = GroupedScripts(client), LuaScript(client, ADD)
        replies = await asyncio.gather(*(grouped(add, [f"n{i}"], [i]) for i in range(20)))
        assert replies == list(range(20))
        named = [c for c in await client.client_list() if c["name"] == "grouped-test"]
        assert len(named) == 1, named
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_each_call_of_a_group_gets_its_own_reply_across_slots(client: RedisClient) -> None:
    grouped, add = GroupedScripts(client), LuaScript(client, ADD)
    # Keys of many slots: on the cluster each node runs its share.
    keys = [f"spread:{i}" for i in range(30)]
    assert await asyncio.gather(*(grouped(add, [k], [i]) for i, k in enumerate(keys))) == list(
        range(30)
    )
    assert await asyncio.gather(*(grouped(add, [k], [1]) for k in keys)) == list(range(1, 31))


@pytest.mark.cluster
async def test_a_failing_call_fails_alone(client: RedisClient) -> None:
    grouped, add = GroupedScripts(client), LuaScript(client, ADD)
    await client.hset("a-hash", "f", "v")
    replies = await asyncio.gather(
        grouped(add, ["before"], [1]),
        grouped(add, ["a-hash"], [1]),
        grouped(add, ["after"], [2]),
        return_exceptions=True,
    )
    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])


@pytest.mark.cluster
async def test_a_group_runs_on_a_redis_that_lost_its_scripts(client: RedisClient) -> None:
    grouped, add = GroupedScripts(client), LuaScript(client, ADD)
    assert await grouped(add, ["loaded"], [1]) == 1
    await client.script_flush()
    replies = await asyncio.gather(*(grouped(add, [f"reloaded:{i}"], [i]) for i in range(5)))
    assert replies == list(range(5))


@pytest.mark.cluster
async def test_a_call_cancelled_before_its_group_ran_runs_nothing(client: RedisClient) -> None:
    grouped, add = GroupedScripts(client), LuaScript(client, ADD)
    cancelled = asyncio.ensure_future(grouped(add, ["cancelled"], [1]))
    kept = asyncio.ensure_future(grouped(add, ["kept"], [1]))
    await asyncio.sleep(0)  # both calls have joined the group; it has not run
    cancelled.cancel()
    assert await kept == 1
    assert cancelled.cancelled()
    assert await client.get("cancelled") is None
