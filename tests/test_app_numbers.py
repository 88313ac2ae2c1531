"""App numbers in status events and the reader's cache of them: a number is
applied only under the generation of the shard's map it was learned under, so
when Redis loses the map (or its last numbers) and gives a number again to
another app, a long-running reader never names the old app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from smsgate_server.domain.events import StatusEvent
from smsgate_server.store.connection import RedisClient, RedisConnection, connect
from smsgate_server.store.events import EventStore
from smsgate_server.store.keys import HELD_BUCKETS, ShardKeys
from smsgate_server.store.scripts import country_prelude, status_prelude

from tests.test_lua import LUA

APP_A = "ak_aaaaaaaaaaaaaaaaaaaa"
APP_B = "ak_bbbbbbbbbbbbbbbbbbbb"
APP_C = "ak_cccccccccccccccccccc"
KEYS = ShardKeys(0)


pytestmark = pytest.mark.cluster


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[RedisConnection]:
    """The clients a server has: ``client`` and the blocking reads' ``reader``."""
    connection = await connect(redis_url, pool_size=4)
    yield connection
    await connection.aclose()


async def enter(redis: RedisClient, app: str, message_id: str) -> None:
    """lib.lua's enter() of a new message of ``app`` in shard 0."""
    lib = (
        status_prelude()
        + country_prelude()
        + f"local HELD_BUCKETS = {HELD_BUCKETS}\n"
        + (LUA / "lib.lua").read_text()
    )
    move = f"enter('{app}', '{message_id}', '', NEW, QUEUED, '')"
    await redis.eval(
        lib + "\n" + move + "\nreturn 1",
        1,
        KEYS.events,
        KEYS.prefix,
        1_730_000_000_123,
        "0-0",
        60,
    )


def named(events: list[StatusEvent]) -> list[tuple[str, str]]:
    return [(e.app, e.message_id) for e in events]


async def test_a_number_given_again_after_the_map_was_lost_names_the_new_app(
    connection: RedisConnection,
) -> None:
    redis = connection.client
    store = EventStore(redis, connection.reader, 1)  # a long-running server's
    await enter(redis, APP_A, "a-msg")
    assert named(await store.after(0, "0-0")) == [(APP_A, "a-msg")]
    await redis.flushall()  # Redis came back without its data
    await enter(redis, APP_B, "b-msg")
    assert await redis.hget(KEYS.app_numbers, APP_B) == b"1"  # A's number before
    assert named(await store.after(0, "0-0")) == [(APP_B, "b-msg")]


async def test_a_number_lost_with_the_last_writes_and_given_again_names_the_new_app(
    connection: RedisConnection,
) -> None:
    redis = connection.client
    store = EventStore(redis, connection.reader, 1)
    await enter(redis, APP_A, "a-msg")
    saved = {key: await redis.dump(key) for key in (KEYS.app_numbers, KEYS.events)}
    await enter(redis, APP_B, "b-msg")
    assert named(await store.after(0, "0-0")) == [(APP_A, "a-msg"), (APP_B, "b-msg")]
    # The last second is lost (an everysec AOF, a replica that missed it):
    # the map is back to A alone, and number 2 goes to C.
    for key, value in saved.items():
        assert value is not None
        await redis.restore(key, 0, value, replace=True)
    await enter(redis, APP_C, "c-msg")
    assert await redis.hget(KEYS.app_numbers, APP_C) == b"2"  # B's number before
    assert named(await store.after(0, "0-0")) == [(APP_A, "a-msg"), (APP_C, "c-msg")]


async def test_a_number_its_map_no_longer_holds_names_no_app(connection: RedisConnection) -> None:
    redis = connection.client
    store = EventStore(redis, connection.reader, 1)
    await enter(redis, APP_A, "a-msg")
    assert named(await store.after(0, "0-0")) == [(APP_A, "a-msg")]
    await redis.delete(KEYS.app_numbers)
    assert named(await store.after(0, "0-0")) == [("", "a-msg")]


async def test_a_live_read_across_a_lost_map_never_names_the_old_app(
    connection: RedisConnection,
) -> None:
    redis = connection.client
    store = EventStore(redis, connection.reader, 1)
    await enter(redis, APP_A, "a-msg")
    seen = await store.wait_after_many({0: "0-0"}, block_ms=100)
    assert named(seen) == [(APP_A, "a-msg")]
    position = seen[-1].stream_id
    waiting = asyncio.ensure_future(store.wait_after_many({0: position}, block_ms=5000))
    await asyncio.sleep(0.2)  # the read is blocked in Redis
    assert not waiting.done()
    await redis.flushall()
    await enter(redis, APP_B, "b-msg")
    got = named(await asyncio.wait_for(waiting, 5))
    # Numbered while it waited: left for the next read, which names B.
    assert got in ([], [(APP_B, "b-msg")]), got
    if not got:
        got = named(await store.wait_after_many({0: position}, block_ms=100))
    assert got == [(APP_B, "b-msg")]


async def test_every_number_given_changes_the_maps_generation(connection: RedisConnection) -> None:
    redis = connection.client
    await enter(redis, APP_A, "a-msg")
    first = await redis.hget(KEYS.app_numbers, "@")
    await enter(redis, APP_A, "a-msg-2")
    assert await redis.hget(KEYS.app_numbers, "@") == first  # no number given
    await enter(redis, APP_B, "b-msg")
    second = await redis.hget(KEYS.app_numbers, "@")
    assert isinstance(first, bytes) and isinstance(second, bytes)
    assert second != first and second.endswith(b"/2")
