"""Status events in the shard streams: the packed value lib.lua writes reads
back exactly, and events in the field-per-value layout written before it
still stream to watches (they stay for the retention after an upgrade)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.domain.events import StatusEvent
from smsgate_server.domain.status import Status
from smsgate_server.runtime import Running
from smsgate_server.store.events import EventStore
from smsgate_server.store.keys import HELD_BUCKETS, ShardKeys
from smsgate_server.store.scripts import country_prelude, status_prelude

from tests.support import bearer
from tests.test_lua import LUA
from tests.test_watch import collect, send, started

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

APP = "ak_0123456789abcdef0123"
# Ids as domain/ids.py makes them: 12 hex digits of ms, 2 of shard, 12 random.
MADE = "0192f0a1b2c3" + "00" + "aaaaaaaaaaaa"
SAME_MS_BATCH = "0192f0a1b2c3" + "00" + "bbbbbbbbbbbb"
OTHER_MS_BATCH = "0192f0a1b000" + "00" + "cccccccccccc"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def enter_all(redis: Redis, moves: list[str]) -> list[StatusEvent]:
    """Run lib.lua's enter() for each Lua call in ``moves`` (in one script)
    and read shard 0's events back."""
    lib = (
        status_prelude()
        + country_prelude()
        + f"local HELD_BUCKETS = {HELD_BUCKETS}\n"
        + (LUA / "lib.lua").read_text()
    )
    keys = ShardKeys(0)
    now = 1_730_000_000_123
    await redis.eval(
        lib + "\n" + "\n".join(moves) + "\nreturn 1", 1, keys.events, keys.prefix, now, "0-0", 60
    )
    return await EventStore(redis, redis, 1).after(0, "0-0")


async def test_packed_events_read_back_every_value(redis: Redis) -> None:
    made_ms = int(MADE[:12], 16)
    events = await enter_all(
        redis,
        [
            f"enter('{APP}', '{MADE}', '{SAME_MS_BATCH}', NEW, QUEUED, '')",
            f"enter('{APP}', '{MADE}', '{SAME_MS_BATCH}', QUEUED, SENDING, 'attempt 1')",
            # Free texts may hold the separator, and any bytes.
            f"enter('{APP}', '{MADE}', '{SAME_MS_BATCH}', SENDING, FAILED, 'a|b', 'E|1',"
            f" 'bad | number \u00e9', {made_ms + 5})",
            f"enter('{APP}', 'made-elsewhere', '{OTHER_MS_BATCH}', NEW, QUEUED, 'x||')",
            f"enter('{APP}', '{SAME_MS_BATCH[:14]}dddddddddddd', '{OTHER_MS_BATCH}', NEW, QUEUED,"
            " '')",
        ],
    )
    got = [
        (
            e.app,
            e.message_id,
            e.batch_id,
            e.status,
            e.time_ms,
            e.detail,
            e.error_code,
            e.error_reason,
        )
        for e in events
    ]
    now = 1_730_000_000_123
    assert got == [
        (APP, MADE, SAME_MS_BATCH, Status.QUEUED, now, "", "", ""),
        (APP, MADE, SAME_MS_BATCH, Status.SENDING, now, "attempt 1", "", ""),
        (APP, MADE, SAME_MS_BATCH, Status.FAILED, made_ms + 5, "a|b", "E|1", "bad | number \u00e9"),
        (APP, "made-elsewhere", OTHER_MS_BATCH, Status.QUEUED, now, "x||", "", ""),
        (APP, SAME_MS_BATCH[:14] + "d" * 12, OTHER_MS_BATCH, Status.QUEUED, now, "", "", ""),
    ]


async def test_a_packed_event_is_smaller_than_a_field_per_value(redis: Redis) -> None:
    await enter_all(
        redis,
        [
            f"for i = 1, 200 do enter('{APP}', string.format('0192f0a1b2c300%012x', i),"
            f" '{SAME_MS_BATCH}', NEW, QUEUED, '') end"
        ],
    )
    packed = await redis.memory_usage(ShardKeys(0).events, samples=0)
    old = "sg-old-layout"
    for i in range(200):
        await redis.xadd(
            old,
            {
                "a": APP,
                "m": f"0192f0a1b2c300{i:012x}",
                "b": SAME_MS_BATCH,
                "s": 2,
                "t": 1_730_000_000_123,
                "d": "",
                "ec": "",
                "er": "",
            },
        )
    before = await redis.memory_usage(old, samples=0)
    assert packed is not None and before is not None
    assert packed < before * 0.7, (packed, before)


async def test_apps_are_numbered_per_shard_and_read_back_by_key(redis: Redis) -> None:
    other = "ak_ffffffffffffffffffff"
    events = await enter_all(
        redis,
        [
            f"enter('{APP}', 'm1', '', NEW, QUEUED, '')",
            f"enter('{other}', 'm2', '', NEW, QUEUED, '')",
            f"enter('{APP}', 'm1', '', QUEUED, SENDING, '')",
        ],
    )
    assert [(e.app, e.message_id) for e in events] == [(APP, "m1"), (other, "m2"), (APP, "m1")]
    numbers = await redis.hgetall(ShardKeys(0).app_numbers)
    generation = numbers.pop(b"@")  # new with the last number given
    assert isinstance(generation, bytes) and generation.endswith(b"/2")
    assert numbers == {
        APP.encode(): b"1",
        b"#1": APP.encode(),
        other.encode(): b"2",
        b"#2": other.encode(),
        b"#": b"2",
    }


async def test_an_event_of_an_unknown_app_number_goes_to_no_app(redis: Redis) -> None:
    keys = ShardKeys(0)
    await redis.xadd(keys.events, {"e": "2|0|7|m1||0|0|"})
    await redis.xadd(keys.events, {"e": f"2|0|{APP}|m2||0|0|"})  # packed before app numbers
    events = await EventStore(redis, redis, 1).after(0, "0-0")
    assert [(e.app, e.message_id) for e in events] == [("", "m1"), (APP, "m2")]


async def test_events_of_the_layout_before_stream_to_a_resumed_and_a_live_watch(
    sms: SmsServiceAsyncStub, token: str, server: Running, redis_url: str
) -> None:
    app = token.split(".")[0]
    live = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    await send(sms, token, 1)
    before = (await collect(live, until=4))[-1].resume_token  # its whole life, packed
    shards = server.settings.shards
    old_id = "0192f0a1b2c3" + "01" + "eeeeeeeeeeee"
    client = Redis.from_url(redis_url)
    try:
        for shard in range(shards):
            await client.xadd(
                ShardKeys(shard).events,
                {
                    "a": app,
                    "m": old_id,
                    "b": "batch-1",
                    "s": Status.UNDELIVERED.value,
                    "t": 1_730_000_000_456,
                    "d": "EXPIRED",
                    "ec": "E1",
                    "er": "absent",
                },
            )
    finally:
        await client.aclose()
    # The live watch sees each old-layout entry as it is written...
    streamed = await collect(live, until=shards)
    live.cancel()
    # ...and a resume from before them reads them back from the streams.
    resumed = sms.WatchStatus(pb.WatchStatusRequest(resume_token=before), metadata=bearer(token))
    read_back = await collect(resumed, until=shards)
    resumed.cancel()
    for events in (streamed, read_back):
        got = {
            (
                e.message_id,
                e.batch_id,
                e.status,
                e.time.ToMilliseconds(),
                e.detail,
                e.error.code,
                e.error.reason,
            )
            for e in events
        }
        assert got == {
            (
                old_id,
                "batch-1",
                Status.UNDELIVERED.value,
                1_730_000_000_456,
                "EXPIRED",
                "E1",
                "absent",
            )
        }
