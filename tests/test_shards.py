"""Shards that grow and workers that share them: the recorded shard count only
rises, a raised SMSGATE_SHARDS spreads new messages over more shards while the
old ones go on being read, and dispatcher processes share the shards by lease
(store/leases.py, dispatch/leases.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate_server.dispatch.leases import LeasedReaders, ShardLeases
from smsgate_server.domain.ids import shard_for_key
from smsgate_server.runtime import Running, start
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.keys import shard_count_key
from smsgate_server.store.leases import LeaseStore

from tests.conftest import ServerFactory, server_settings
from tests.pipeline_support import S, sent_counts, wait_for_statuses
from tests.support import bearer
from tests.test_watch import FULL_LIFE, collect, started
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster

# Short leases, so a dead process's run out within a test.
LEASE_SECONDS = 0.5


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=4)
    yield connection
    await connection.aclose()


def leases(connection: RedisConnection, name: str, shards: int) -> ShardLeases:
    return ShardLeases(
        LeaseStore(connection.client), process=name, shards=shards, lease_seconds=LEASE_SECONDS
    )


async def settle(group: list[ShardLeases], rounds: int = 3) -> None:
    """Renew every process a few rounds, as their loops would."""
    for _ in range(rounds):
        for process in group:
            await process.renew()


# -- leases ---------------------------------------------------------------------------


async def test_a_lone_process_leases_every_shard(connection: RedisConnection) -> None:
    one = leases(connection, "p1", 8)

    await one.renew()

    assert one.owned == frozenset(range(8))


async def test_processes_share_the_shards_fairly_and_without_overlap(
    connection: RedisConnection,
) -> None:
    group = [leases(connection, f"p{i}", 64) for i in range(3)]

    await settle(group)

    shares = [p.owned for p in group]
    assert sorted(len(s) for s in shares) == [20, 22, 22]
    assert frozenset().union(*shares) == frozenset(range(64))
    assert sum(len(s) for s in shares) == 64  # no shard in two shares


async def test_a_process_that_joins_gets_its_share_from_the_others(
    connection: RedisConnection,
) -> None:
    first, second = leases(connection, "p1", 8), leases(connection, "p2", 8)
    await first.renew()
    assert len(first.owned) == 8

    await settle([second, first, second])

    assert len(first.owned) == 4
    assert len(second.owned) == 4
    assert first.owned.isdisjoint(second.owned)


async def test_a_dead_process_shards_are_taken_once_its_leases_run_out(
    connection: RedisConnection,
) -> None:
    alive, dead = leases(connection, "alive", 8), leases(connection, "dead", 8)
    await settle([alive, dead])
    assert len(alive.owned) == 4

    # "dead" renews no more; "alive" goes on renewing as its loop would.
    async def renewed() -> frozenset[int]:
        await alive.renew()
        return alive.owned

    await wait_until(
        renewed, lambda owned: len(owned) == 8, what="the dead process's shards to be taken"
    )


async def test_a_process_that_stops_hands_its_shards_over_at_once(
    connection: RedisConnection,
) -> None:
    staying, leaving = leases(connection, "staying", 8), leases(connection, "leaving", 8)
    await settle([staying, leaving])

    await leaving.release()
    await staying.renew()

    assert leaving.owned == frozenset()
    assert staying.owned == frozenset(range(8))


async def test_a_worker_on_the_old_shard_count_and_one_on_the_new_leave_no_shard_unleased(
    connection: RedisConnection,
) -> None:
    """A rolling restart after growing from 8 to 64 shards: the old worker
    reads only the 8 it knows, the new one the rest (above its share once they
    stayed free for a lease), and neither gives up what the other cannot take."""
    old, new = leases(connection, "old", 8), leases(connection, "new", 64)
    await settle([old, new])

    async def renewed() -> list[frozenset[int]]:
        await settle([old, new], rounds=1)
        return [old.owned, new.owned]

    old_owned, new_owned = await wait_until(
        renewed,
        lambda shares: shares[0] | shares[1] == frozenset(range(64)),
        what="every shard to be leased",
    )
    assert old_owned.isdisjoint(new_owned)
    assert old_owned <= frozenset(range(8))
    # Stable: renewals over two more lease times hand nothing back and forth.
    for _ in range(6):
        await asyncio.sleep(LEASE_SECONDS / 3)
        assert await renewed() == [old_owned, new_owned]


async def test_leases_are_given_up_locally_when_redis_cannot_renew_them(
    connection: RedisConnection,
) -> None:
    now = [1000.0]
    process = ShardLeases(
        LeaseStore(connection.client),
        process="cut-off",
        shards=4,
        lease_seconds=10,
        clock=lambda: now[0],
    )
    await process.renew()
    assert process.owned == frozenset(range(4))
    # From now on its renewals fail: nothing listens on port 1.
    process.store = LeaseStore(
        redis.asyncio.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    )

    now[0] += 9.0
    await process.renew()
    assert process.owned == frozenset(range(4))  # the leases still last
    now[0] += 1.0
    await process.renew()
    assert process.owned == frozenset()


# -- two worker servers ---------------------------------------------------------------


async def test_two_workers_each_read_their_share_and_deliver_everything_once(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    api = await make_server(role="api", shards=8)
    workers = [await make_server(role="worker", shards=8, sim_log=log) for log in logs]
    for worker in workers:
        assert worker.dispatcher is not None

    await wait_until(
        _shares(workers), lambda s: s == [4, 4], what="the workers to share the shards"
    )
    # The first worker's reads of the shards it gave up have returned.
    await wait_until(_handed_over(workers), what="reads to follow the leases")
    token = (await api.apps.create("shared")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") as channel:
        sms = sms_grpc.SmsServiceStub(channel)
        ids = [
            (
                await sms.SendSms(
                    pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="shared"),
                    metadata=bearer(token),
                )
            ).message.id
            for i in range(40)
        ]
        await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})

    counts = [sent_counts(log) for log in logs]
    assert counts[0] + counts[1] == Counter({i: 1 for i in ids})
    # Each worker sent the messages of its own shards only.
    for worker, sent in zip(workers, counts, strict=True):
        assert worker.dispatcher is not None
        assert {int(i[12:14], 16) for i in sent} <= worker.dispatcher.leases.owned


async def test_a_worker_that_joins_a_busy_one_sends_none_of_its_messages_again(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """One dispatch slot, slow vendor calls of one message each: the first
    worker reads no more than its slots carry, so nothing it holds outlives
    the visibility timeout and the worker that joins (taking half the shards)
    re-claims none of it."""
    await _busy_worker_joined(
        make_server, tmp_path, senders=[""] * 20, visibility_timeout_seconds=3, sim_max_batch=1
    )


async def test_entries_waiting_for_a_slot_longer_than_the_visibility_timeout_stay_their_reader_s(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A read of a call's worth (200 here) that turns out to be 16 calls
    of one message each (16 senders) waits for one slot longer than the
    visibility timeout: its idle time is kept fresh, so the worker that joins
    re-claims none of it."""
    await _busy_worker_joined(
        make_server,
        tmp_path,
        senders=[f"Acme{i}" for i in range(16)],
        visibility_timeout_seconds=2,
        sim_max_batch=200,
    )


async def _busy_worker_joined(
    make_server: ServerFactory, tmp_path: Path, *, senders: list[str], **settings: Any
) -> None:
    """Send a message per sender to a worker with one slot and slow calls
    over two shards, start a second worker a moment later, and check each
    message was claimed once, sent once and delivered."""
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    slow = {"shards": 2, "dispatch_concurrency": 1, "sim_latency_ms": 700, **settings}
    first = await make_server(sim_log=logs[0], **slow)
    token = (await first.apps.create("busy")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        sms = sms_grpc.SmsServiceStub(channel)
        ids = [
            (
                await sms.SendSms(
                    pb.SendSmsRequest(
                        phone_number=f"+1415555{i:04d}", text="busy", sender_id=sender
                    ),
                    metadata=bearer(token),
                )
            ).message.id
            for i, sender in enumerate(senders)
        ]
        # It joins once the first has read what it could.
        await asyncio.sleep(1.0)
        await make_server(role="worker", sim_log=logs[1], **slow)
        messages = await wait_for_statuses(
            sms, token, ids, {S.MESSAGE_STATUS_DELIVERED}, timeout=20
        )

    # Each claimed once (never re-claimed from a live worker), sent once.
    assert {i: (m.attempts, m.error.code) for i, m in messages.items()} == {i: (1, "") for i in ids}
    assert sent_counts(logs[0]) + sent_counts(logs[1]) == Counter({i: 1 for i in ids})


def _handed_over(workers: list[Running]) -> Callable[[], Awaitable[bool]]:
    async def observe() -> bool:
        return all(
            w.dispatcher.readers.reading_shards == w.dispatcher.leases.owned
            for w in workers
            if w.dispatcher is not None
        )

    return observe


def _shares(workers: list[Running]) -> Callable[[], Awaitable[list[int]]]:
    async def observe() -> list[int]:
        return [len(w.dispatcher.leases.owned) for w in workers if w.dispatcher is not None]

    return observe


# -- growing the shard count ------------------------------------------------------------


async def test_raising_the_shard_count_spreads_new_messages_and_drains_the_old_shards(
    redis_url: str, tmp_path: Path
) -> None:
    first = await start(server_settings(redis_url, tmp_path / "data", shards=2))
    token = (await first.apps.create("grow")).token
    later = Timestamp()
    later.FromMilliseconds(int(time.time() * 1000) + 1500)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        sms = sms_grpc.SmsServiceStub(channel)
        old = [
            (
                await sms.SendSms(
                    pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="old", send_time=later),
                    metadata=bearer(token),
                )
            ).message.id
            for i in range(10)
        ]
    await first.stop()

    grown = await start(server_settings(redis_url, tmp_path / "data", shards=8))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grown.grpc_port}") as channel:
            sms = sms_grpc.SmsServiceStub(channel)
            new = [
                (
                    await sms.SendSms(
                        pb.SendSmsRequest(phone_number=f"+1415556{i:04d}", text="new"),
                        metadata=bearer(token),
                    )
                ).message.id
                for i in range(40)
            ]
            await wait_for_statuses(sms, token, old + new, {S.MESSAGE_STATUS_DELIVERED})
    finally:
        await grown.stop()

    assert {int(i[12:14], 16) for i in old} <= {0, 1}
    assert {int(i[12:14], 16) for i in new} - {0, 1}  # 40 messages: some beyond 2
    assert await _recorded(redis_url) == 8


async def test_a_lower_shard_count_writes_to_fewer_shards_and_reads_them_all(
    redis_url: str, tmp_path: Path
) -> None:
    first = await start(server_settings(redis_url, tmp_path / "data", shards=8))
    token = (await first.apps.create("shrink")).token
    later = Timestamp()
    later.FromMilliseconds(int(time.time() * 1000) + 1500)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        sms = sms_grpc.SmsServiceStub(channel)
        old = [
            (
                await sms.SendSms(
                    pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="old", send_time=later),
                    metadata=bearer(token),
                )
            ).message.id
            for i in range(40)
        ]
    await first.stop()

    lowered = await start(server_settings(redis_url, tmp_path / "data", shards=2))
    try:
        assert lowered.store.shards == 8
        async with grpc.aio.insecure_channel(f"127.0.0.1:{lowered.grpc_port}") as channel:
            sms = sms_grpc.SmsServiceStub(channel)
            new = [
                (
                    await sms.SendSms(
                        pb.SendSmsRequest(phone_number=f"+1415556{i:04d}", text="new"),
                        metadata=bearer(token),
                    )
                ).message.id
                for i in range(20)
            ]
            await wait_for_statuses(sms, token, old + new, {S.MESSAGE_STATUS_DELIVERED})
    finally:
        await lowered.stop()

    assert {int(i[12:14], 16) for i in old} - {0, 1}  # some in the shards above 2
    assert {int(i[12:14], 16) for i in new} <= {0, 1}
    assert await _recorded(redis_url) == 8


async def test_data_from_before_the_shard_count_was_recorded_keeps_its_shards(
    redis_url: str, tmp_path: Path
) -> None:
    first = await start(server_settings(redis_url, tmp_path / "data", shards=4))
    await first.stop()
    connection = await connect(redis_url, pool_size=1)
    await connection.client.delete(shard_count_key())
    await connection.aclose()

    again = await start(server_settings(redis_url, tmp_path / "data", shards=2))
    try:
        # The queues of the four shards exist: all four are still read.
        assert again.store.shards == 4
        assert again.store.write_shards == 2
    finally:
        await again.stop()


async def _recorded(redis_url: str) -> int:
    connection = await connect(redis_url, pool_size=1)
    try:
        return int(await connection.client.get(shard_count_key()) or 0)
    finally:
        await connection.aclose()


async def test_only_leased_shards_are_read(make_server: ServerFactory) -> None:
    """A worker's blocking readers follow its leases: one per shard on a
    cluster, one in all on a single server."""
    worker = await make_server(role="worker", shards=16)
    assert worker.dispatcher is not None
    readers = worker.dispatcher.readers

    await wait_until(
        _reading(readers), lambda n: n == (16 if worker.redis.cluster else 1), what="readers"
    )
    other = await make_server(role="worker", shards=16)
    assert other.dispatcher is not None
    await wait_until(
        _shares([worker, other]), lambda s: s == [8, 8], what="the workers to share the shards"
    )
    await wait_until(
        _reading(readers), lambda n: n == (8 if worker.redis.cluster else 1), what="readers"
    )


def _reading(readers: LeasedReaders) -> Callable[[], Awaitable[int]]:
    async def observe() -> int:
        await asyncio.sleep(0)
        return int(readers.reading)

    return observe


async def test_a_watch_resumes_across_a_shard_count_that_grew(
    redis_url: str, tmp_path: Path
) -> None:
    """A token from before the growth names fewer shards: the stream goes on
    with the events of every shard, the new ones from their start, each once."""
    first = await start(server_settings(redis_url, tmp_path / "data", shards=2))
    token = (await first.apps.create("resume")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        sms = sms_grpc.SmsServiceStub(channel)
        call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
        before = await sms.SendSms(
            pb.SendSmsRequest(phone_number="+14155550000", text="before"), metadata=bearer(token)
        )
        seen = await collect(call, until=len(FULL_LIFE))
        call.cancel()
    await first.stop()
    assert [e.message_id for e in seen] == [before.message.id] * len(FULL_LIFE)

    grown = await start(server_settings(redis_url, tmp_path / "data", shards=8))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grown.grpc_port}") as channel:
            sms = sms_grpc.SmsServiceStub(channel)
            ids = [
                (
                    await sms.SendSms(
                        pb.SendSmsRequest(phone_number=f"+1415556{i:04d}", text="after"),
                        metadata=bearer(token),
                    )
                ).message.id
                for i in range(16)
            ]
            await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})
            resumed = sms.WatchStatus(
                pb.WatchStatusRequest(resume_token=seen[-1].resume_token), metadata=bearer(token)
            )
            events = await collect(resumed, until=len(ids) * len(FULL_LIFE))
            resumed.cancel()
    finally:
        await grown.stop()

    assert {int(i[12:14], 16) for i in ids} - {0, 1}  # some in the added shards
    by_message: dict[str, list[int]] = {}
    for event in events:
        by_message.setdefault(event.message_id, []).append(event.status)
    assert by_message == {i: FULL_LIFE for i in ids}


async def test_a_request_retried_across_a_shard_count_that_grew_is_accepted_once(
    redis_url: str, tmp_path: Path
) -> None:
    """A request id's shard depends on the count it is spread over: a retry
    after the growth finds the first call's record in the shard it had then."""
    first = await start(server_settings(redis_url, tmp_path / "data", shards=2))
    app_token = (await first.apps.create("retry")).token
    app = app_token.split(".", 1)[0]
    # A request id whose shard differs between 2 and 8 shards.
    request_id = next(
        f"r-{i}"
        for i in range(100)
        if shard_for_key(f"{app}:r-{i}", 2) != shard_for_key(f"{app}:r-{i}", 8)
    )
    request = pb.SendSmsRequest(phone_number="+14155550100", text="once", request_id=request_id)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        accepted = await sms_grpc.SmsServiceStub(channel).SendSms(
            request, metadata=bearer(app_token)
        )
    await first.stop()

    grown = await start(server_settings(redis_url, tmp_path / "data", shards=8))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grown.grpc_port}") as channel:
            retried = await sms_grpc.SmsServiceStub(channel).SendSms(
                request, metadata=bearer(app_token)
            )
            other = await sms_grpc.SmsServiceStub(channel).SendSms(
                pb.SendSmsRequest(
                    phone_number="+14155550100", text="new", request_id=request_id + "-new"
                ),
                metadata=bearer(app_token),
            )
    finally:
        await grown.stop()

    assert retried.message.id == accepted.message.id
    assert other.message.id != accepted.message.id
