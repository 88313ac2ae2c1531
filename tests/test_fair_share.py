"""Fair share: per-app accept rate and held-message cap, the Redis memory
watermark, bounded ListMessages and a per-app cap on expensive calls; against
real Redis over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.cli import main
from smsgate_server.runtime import Running
from smsgate_server.store.keys import ShardKeys, app_key
from smsgate_server.store.quota import QuotaStore

from tests.conftest import ServerFactory
from tests.pipeline_support import S, wait_for_statuses
from tests.support import Details, bearer, details_of
from tests.waiting import wait_until

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub


def phones(n: int, start: int = 0) -> list[str]:
    return [f"+1415555{(start + i) % 10000:04d}" for i in range(n)]


def batch(numbers: list[str]) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        recipients=[pb.BatchRecipient(phone_number=p) for p in numbers], text="hi"
    )


def in_an_hour() -> Timestamp:
    return Timestamp(seconds=int(time.time()) + 3600)


def one(number: str = "+14155550100") -> pb.SendSmsRequest:
    return pb.SendSmsRequest(phone_number=number, text="hi")


async def refused(call: Any) -> Details:
    """The details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return details_of(err.value)


@contextlib.asynccontextmanager
async def stub(server: Running, *options: tuple[str, Any]) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as ch:
        yield SmsServiceStub(ch)


def quota_store(server: Running, clock: Callable[[], float] = time.time) -> QuotaStore:
    return QuotaStore(
        server.redis.client,
        shards=server.settings.shards,
        message_retention_seconds=server.settings.message_retention_seconds,
        clock=clock,
    )


# --- accept rate ---------------------------------------------------------------


@pytest.mark.cluster
async def test_an_app_over_its_accept_rate_is_resource_exhausted_with_retry_info(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_accept_burst_seconds=1)
    slow = (await server.apps.create("slow", accept_per_second=2)).token
    other = (await server.apps.create("other")).token
    async with stub(server) as sms:
        for n in range(2):
            await sms.SendSms(one(phones(1, n)[0]), metadata=bearer(slow))

        d = await refused(sms.SendSms(one(), metadata=bearer(slow)))

        assert d.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert d.reason == "APP_RATE_LIMITED"
        assert d.retry_delay is not None and 0 < d.retry_delay <= 0.5
        # Another app has its own bucket.
        await sms.SendSms(one(), metadata=bearer(other))


async def test_leases_of_the_rate_never_let_two_servers_exceed_it(
    make_server: ServerFactory,
) -> None:
    # 200/s leases 10 tokens a time (admission.LEASE_SECONDS): both servers
    # spend leases locally, yet every leased token left the shared bucket.
    first = await make_server(app_accept_burst_seconds=1)
    second = await make_server(app_accept_burst_seconds=1)
    token = (await first.apps.create("busy", accept_per_second=200)).token
    accepted = 0
    started = time.monotonic()
    async with stub(first) as a, stub(second) as b:
        for n in range(600):
            try:
                await (a if n % 2 else b).SendSms(one(phones(1, n)[0]), metadata=bearer(token))
                accepted += 1
            except grpc.aio.AioRpcError as err:
                assert details_of(err).reason == "APP_RATE_LIMITED"
    elapsed = time.monotonic() - started
    # The bucket (one second of the rate) plus what it refilled meanwhile.
    assert accepted <= 200 + 200 * elapsed + 1, (accepted, elapsed)
    assert accepted >= 200


@pytest.mark.cluster
async def test_a_batch_counts_its_recipients_and_later_calls_wait_for_them(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_accept_burst_seconds=1)
    slow = (await server.apps.create("slow", accept_per_second=2)).token
    async with stub(server) as sms:
        # Larger than the bucket: admitted because the bucket is full...
        reply = await sms.BatchSend(batch(phones(6)), metadata=bearer(slow))
        assert reply.accepted_count == 6

        d = await refused(sms.SendSms(one(), metadata=bearer(slow)))

    # ...and the next call waits until the 4 recipients beyond it are paid for
    # and one token is back: 2.5 s at 2 per second, less what trickled in.
    assert d.reason == "APP_RATE_LIMITED"
    assert d.retry_delay is not None and 1.5 < d.retry_delay <= 2.5


@pytest.mark.cluster
async def test_a_retry_of_a_stored_request_is_answered_and_not_paid_again(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_accept_burst_seconds=1)
    slow = (await server.apps.create("slow", accept_per_second=2)).token
    request = batch(phones(6))
    request.request_id = "once"
    async with stub(server) as sms:
        first = await sms.BatchSend(request, metadata=bearer(slow))
        # The app is in debt now: new work waits...
        d = await refused(sms.BatchSend(batch(phones(2, 50)), metadata=bearer(slow)))
        # ...but the retry gets the first answer, and costs nothing more.
        again = await sms.BatchSend(request, metadata=bearer(slow))
        later = await refused(sms.SendSms(one(), metadata=bearer(slow)))

    assert d.reason == "APP_RATE_LIMITED"
    assert again == first
    assert later.retry_delay is not None and later.retry_delay <= 2.5


async def test_invalid_recipients_are_not_counted_against_the_rate(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_accept_burst_seconds=1)
    slow = (await server.apps.create("slow", accept_per_second=2)).token
    async with stub(server) as sms:
        reply = await sms.BatchSend(
            batch(["not-a-number", "+1", phones(1)[0]]), metadata=bearer(slow)
        )
        assert (reply.accepted_count, reply.rejected_count) == (1, 2)
        await sms.SendSms(one(phones(1, 1)[0]), metadata=bearer(slow))


# --- held messages -------------------------------------------------------------


@pytest.mark.cluster
async def test_an_app_at_its_held_message_cap_gets_quota_failure(
    make_server: ServerFactory,
) -> None:
    server = await make_server(quota_check_seconds=0)
    small = await server.apps.create("small", max_held_messages=3)
    async with stub(server) as sms:
        reply = await sms.BatchSend(batch(phones(3)), metadata=bearer(small.token))
        ids = [r.message_id for r in reply.results]
        # Finished messages are held until their retention ends: still no room.
        await wait_for_statuses(sms, small.token, ids, {S.MESSAGE_STATUS_DELIVERED})

        d = await refused(sms.SendSms(one(), metadata=bearer(small.token)))
        big = await refused(sms.BatchSend(batch(phones(2, 10)), metadata=bearer(small.token)))

    assert d.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert d.reason == "APP_HELD_MESSAGES_CAP"
    assert d.quota_subjects == [f"app:{small.app_key}:held_messages"]
    assert big.reason == "APP_HELD_MESSAGES_CAP"


async def test_held_counters_move_with_the_messages(server: Running, redis_url: str) -> None:
    app = await server.apps.create("a")
    async with stub(server) as sms:
        reply = await sms.BatchSend(batch(phones(5)), metadata=bearer(app.token))
        ids = [r.message_id for r in reply.results]
        scheduled = await sms.SendSms(
            pb.SendSmsRequest(phone_number=phones(1, 9)[0], text="later", send_time=in_an_hour()),
            metadata=bearer(app.token),
        )
        await wait_for_statuses(sms, app.token, ids, {S.MESSAGE_STATUS_DELIVERED})
        await sms.CancelMessage(
            pb.CancelMessageRequest(message_id=scheduled.message.id), metadata=bearer(app.token)
        )
        quota = quota_store(server)
        assert (await quota.held(app.app_key)).count == 6
        client = Redis.from_url(redis_url)
        try:
            live = [await client.get(ShardKeys(s).live(app.app_key)) for s in range(4)]
            done = await client.keys(f"sg:*done:{app.app_key}:*")
            ttls = [await client.pttl(k) for k in done]
        finally:
            await client.aclose()
        # None is live any more; the ended ones are counted until they expire.
        assert all(v in (None, b"0") for v in live)
        retention_ms = server.settings.message_retention_seconds * 1000
        assert done and all(retention_ms < t <= retention_ms * 9 / 8 for t in ttls)

        # Once the retention period (and a bucket) has passed, they are no longer held.
        retention = server.settings.message_retention_seconds
        later = quota_store(server, clock=lambda: time.time() + retention * 1.3)
        assert (await later.held(app.app_key)).count == 0


# --- memory watermark ----------------------------------------------------------


@pytest.mark.cluster
async def test_above_the_memory_watermark_accepts_are_refused_and_reads_go_on(
    make_server: ServerFactory,
) -> None:
    server = await make_server(redis_max_memory_bytes=1024, quota_check_seconds=0)
    token = (await server.apps.create("a")).token
    async with stub(server) as sms:
        d = await refused(sms.SendSms(one(), metadata=bearer(token)))
        b = await refused(sms.BatchSend(batch(phones(2)), metadata=bearer(token)))
        listed = await sms.ListMessages(pb.ListMessagesRequest(), metadata=bearer(token))

    assert d.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert d.reason == b.reason == "STORAGE_FULL"
    assert d.retry_delay is not None and d.retry_delay > 0
    assert list(listed.messages) == []


async def test_redis_maxmemory_is_the_cap_when_no_setting_names_one(
    make_server: ServerFactory, redis_url: str
) -> None:
    client = Redis.from_url(redis_url)
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used + 1024 * 1024)
    try:
        server = await make_server(redis_memory_watermark=0.5, quota_check_seconds=0)
        token = (await server.apps.create("a")).token
        async with stub(server) as sms:
            d = await refused(sms.SendSms(one(), metadata=bearer(token)))
        assert d.reason == "STORAGE_FULL"
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()


async def test_memory_is_read_at_most_once_per_check_interval(
    make_server: ServerFactory, redis_url: str
) -> None:
    server = await make_server(redis_max_memory_bytes=2**40, quota_check_seconds=60)
    token = (await server.apps.create("a")).token
    client = Redis.from_url(redis_url)

    async def info_calls() -> int:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_info", {}).get("calls", 0))

    try:
        async with stub(server) as sms:
            before = await info_calls()
            await asyncio.gather(*(sms.SendSms(one(p), metadata=bearer(token)) for p in phones(30)))
            await sms.BatchSend(batch(phones(30, 100)), metadata=bearer(token))
            after = await info_calls()
    finally:
        await client.aclose()
    # One INFO is our own "before"; the server's at most one more.
    assert after - before - 1 <= 1


# --- bounded listing -----------------------------------------------------------


@pytest.mark.cluster
async def test_list_with_a_filter_matching_nothing_stops_early_with_a_token(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    await sms.BatchSend(batch(phones(2500)), metadata=bearer(token))
    request = pb.ListMessagesRequest(statuses=[S.MESSAGE_STATUS_CANCELED], page_size=10)

    calls, found = 0, 0
    while True:
        reply = await sms.ListMessages(request, metadata=bearer(token))
        calls += 1
        found += len(reply.messages)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token

    # 1,000 index entries per call at most: empty pages with a token, then the end.
    assert (calls, found) == (3, 0)


async def test_a_bounded_listing_still_finds_every_match_once(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    reply = await sms.BatchSend(batch(phones(1500)), metadata=bearer(token))
    target = phones(1500)[7]
    canceled = await sms.SendSms(
        pb.SendSmsRequest(phone_number=target, text="x", send_time=in_an_hour()),
        metadata=bearer(token),
    )
    await sms.CancelMessage(
        pb.CancelMessageRequest(message_id=canceled.message.id), metadata=bearer(token)
    )
    request = pb.ListMessagesRequest(phone_number=target, page_size=1)
    seen: list[str] = []
    while True:
        page = await sms.ListMessages(request, metadata=bearer(token))
        seen += [m.id for m in page.messages]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token

    batch_id = next(r.message_id for r in reply.results if r.phone_number == target)
    assert seen == [canceled.message.id, batch_id]


# --- expensive calls at once -------------------------------------------------


async def test_an_app_running_its_expensive_calls_is_refused_another(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_max_concurrent_queries=1)
    busy = (await server.apps.create("busy")).token
    calm = (await server.apps.create("calm")).token
    async with stub(server) as sms:
        # A resume token from before 12,000 events (3,000 messages' lives).
        first = sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(busy))
        await first.initial_metadata()
        await sms.SendSms(one(), metadata=bearer(busy))
        resume = (await first.read()).event.resume_token
        first.cancel()
        reply = await sms.BatchSend(batch(phones(3000)), metadata=bearer(busy))
        ids = [r.message_id for r in reply.results]
        await wait_for_statuses(sms, busy, ids[-50:], {S.MESSAGE_STATUS_DELIVERED})

    # A client that does not read: the catch-up stalls on flow control,
    # holding the app's one slot.
    async with stub(server, ("grpc.http2.bdp_probe", 0)) as lazy:
        catching_up = lazy.WatchStatus(
            pb.WatchStatusRequest(resume_token=resume), metadata=bearer(busy)
        )
        await catching_up.read()
        async with stub(server) as sms:
            d = await refused(sms.ListMessages(pb.ListMessagesRequest(), metadata=bearer(busy)))
            again = sms.WatchStatus(
                pb.WatchStatusRequest(resume_token=resume), metadata=bearer(busy)
            )
            w = await refused(again.read())
            # Another app is not held up.
            await sms.ListMessages(pb.ListMessagesRequest(), metadata=bearer(calm))

            catching_up.cancel()
            await wait_until(lambda: _lists(sms, busy), what="ListMessages to be admitted again")

    assert d.code == w.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert d.reason == w.reason == "TOO_MANY_CONCURRENT_QUERIES"
    assert d.retry_delay is not None and d.retry_delay > 0


async def _lists(sms: SmsServiceAsyncStub, token: str) -> bool:
    try:
        await sms.ListMessages(pb.ListMessagesRequest(page_size=1), metadata=bearer(token))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    return True


def test_apps_create_stores_an_apps_own_rate_and_cap(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMSGATE_REDIS_URL", redis_url)
    argv = ["apps", "create", "x", "--json", "--accept-per-second", "3"]
    assert main([*argv, "--max-held-messages", "7"]) == 0
    key = json.loads(capsys.readouterr().out)["app_key"]
    client = SyncRedis.from_url(redis_url)
    try:
        record = client.hgetall(app_key(key))
    finally:
        client.close()
    assert record[b"accept_per_second"] == b"3"
    assert record[b"max_held_messages"] == b"7"


@pytest.mark.cluster
async def test_a_fresh_watch_needs_no_slot_and_a_resume_does(make_server: ServerFactory) -> None:
    server = await make_server(app_max_concurrent_queries=1)
    app = await server.apps.create("a")
    assert server.hub is not None and server.hub.admission is not None
    async with stub(server) as sms:
        first = sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(app.token))
        await first.initial_metadata()
        await sms.SendSms(one(), metadata=bearer(app.token))
        resume = (await first.read()).event.resume_token
        first.cancel()
        await sms.SendSms(one(phones(1, 1)[0]), metadata=bearer(app.token))

        held = server.hub.admission.query_slot(app.app_key)
        fresh = sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(app.token))
        await fresh.initial_metadata()
        third = await sms.SendSms(one(phones(1, 2)[0]), metadata=bearer(app.token))
        # Events of the earlier messages may still come first (the simulator
        # delivers at once): the fresh watch must see the third one queued.
        event = (await fresh.read()).event
        while event.message_id != third.message.id:
            event = (await fresh.read()).event
        assert event.status == S.MESSAGE_STATUS_QUEUED
        fresh.cancel()
        resumed = sms.WatchStatus(
            pb.WatchStatusRequest(resume_token=resume), metadata=bearer(app.token)
        )
        d = await refused(resumed.read())
        held.release()
        again = sms.WatchStatus(
            pb.WatchStatusRequest(resume_token=resume), metadata=bearer(app.token)
        )
        assert (await again.read()).event.resume_token
        again.cancel()

    assert d.reason == "TOO_MANY_CONCURRENT_QUERIES"


async def test_a_write_redis_refuses_at_its_maxmemory_is_storage_full(
    make_server: ServerFactory, redis_url: str
) -> None:
    # The watermark is read once, while there is room; then Redis fills up.
    server = await make_server(redis_memory_watermark=1.0, quota_check_seconds=60)
    # A rate too low to lease from (under one message per lease): every send
    # runs the rate script, whose first command is a write Redis refuses. (An
    # accept script whose first write is a trim is let through by Redis 6.2 at
    # its maxmemory; the watermark is what stops those.)
    token = (await server.apps.create("a", accept_per_second=10)).token
    client = Redis.from_url(redis_url)
    try:
        async with stub(server) as sms:
            await sms.SendSms(one(), metadata=bearer(token))
            await client.config_set("maxmemory", 1)
            d = await refused(sms.SendSms(one(phones(1, 1)[0]), metadata=bearer(token)))
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
    assert d.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert d.reason == "STORAGE_FULL"
    assert d.retry_delay is not None and d.retry_delay > 0
