"""WatchStatus: live status events, filters, resume tokens, slow subscribers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.domain.errors import RateLimited
from smsgate_server.domain.events import encode_token
from smsgate_server.runtime import Running
from smsgate_server.services.watch import WatchFilter

from tests.conftest import ServerFactory
from tests.pipeline_support import S, wait_for_statuses
from tests.support import bearer, details_of
from tests.waiting import wait_until

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

FULL_LIFE = [
    S.MESSAGE_STATUS_QUEUED,
    S.MESSAGE_STATUS_SENDING,
    S.MESSAGE_STATUS_SENT,
    S.MESSAGE_STATUS_DELIVERED,
]


async def collect(call: Any, until: int, timeout: float = 10.0) -> list[message_pb2.StatusEvent]:
    """Read events until ``until`` have arrived; TimeoutError (and the call
    canceled) when they do not within ``timeout``."""
    events: list[message_pb2.StatusEvent] = []

    async def read() -> None:
        async for item in call:
            events.append(item.event)
            if len(events) >= until:
                return

    # Cancel the call, not the reading task: cancelling a task mid-read leaves
    # the grpc.aio call half-torn-down.
    task = asyncio.create_task(read())
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
        raise TimeoutError(f"{len(events)} of {until} events within {timeout}s")
    task.result()
    return events


async def send(sms: SmsServiceAsyncStub, token: str, n: int) -> list[str]:
    replies = await asyncio.gather(
        *(
            sms.SendSms(
                pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="w"),
                metadata=bearer(token),
            )
            for i in range(n)
        )
    )
    return [r.message.id for r in replies]


async def started(call: Any) -> Any:
    """Wait until the server has the stream open (initial metadata sent)."""
    await call.initial_metadata()  # sent once the subscription is live
    return call


@pytest.mark.cluster
async def test_stream_has_every_status_change_of_the_apps_messages(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    ids = await send(sms, token, 3)
    await send(sms, other, 2)  # another app's messages never show up

    events = await collect(call, until=12)
    call.cancel()

    by_message: dict[str, list[int]] = {}
    for e in events:
        by_message.setdefault(e.message_id, []).append(e.status)
        assert e.resume_token
    assert set(by_message) == set(ids)
    assert all(statuses == FULL_LIFE for statuses in by_message.values())


async def test_filters_narrow_the_stream(sms: SmsServiceAsyncStub, token: str) -> None:
    earlier = await send(sms, token, 1)
    await wait_for_statuses(sms, token, earlier, {S.MESSAGE_STATUS_DELIVERED})
    call = await started(
        sms.WatchStatus(
            pb.WatchStatusRequest(statuses=[S.MESSAGE_STATUS_DELIVERED]), metadata=bearer(token)
        )
    )
    watched = await send(sms, token, 2)
    events = await collect(call, until=2)
    call.cancel()
    assert {e.message_id for e in events} == set(watched)
    assert {e.status for e in events} == {S.MESSAGE_STATUS_DELIVERED}

    by_id = await started(
        sms.WatchStatus(pb.WatchStatusRequest(message_ids=["x"]), metadata=bearer(token))
    )
    ignored = await send(sms, token, 2)
    with pytest.raises(TimeoutError):
        await collect(by_id, until=1, timeout=0.5)
    by_id.cancel()
    assert ignored


@pytest.mark.cluster
async def test_resumed_subscriber_gets_every_event_exactly_once_in_order(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    ids = await send(sms, token, 20)
    seen = await collect(call, until=15)
    call.cancel()  # disconnect mid-batch

    more = await send(sms, token, 20)  # sent while disconnected
    resumed = sms.WatchStatus(
        pb.WatchStatusRequest(resume_token=seen[-1].resume_token), metadata=bearer(token)
    )
    rest = await collect(resumed, until=(40 * 4) - len(seen))
    resumed.cancel()

    pairs = Counter((e.message_id, e.status) for e in seen + rest)
    assert set(pairs.values()) == {1}, "an event was delivered twice"
    assert {m for m, _ in pairs} == set(ids + more)
    for message_id in ids + more:
        statuses = [e.status for e in seen + rest if e.message_id == message_id]
        assert statuses == FULL_LIFE


async def test_a_watch_by_id_opens_with_one_snapshot_of_a_message_delivered_before_it(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    ids = await send(sms, token, 1)
    await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})
    call = await started(
        sms.WatchStatus(pb.WatchStatusRequest(message_ids=ids), metadata=bearer(token))
    )
    (first,) = await collect(call, until=1)
    assert (first.message_id, first.status, first.snapshot) == (
        ids[0],
        S.MESSAGE_STATUS_DELIVERED,
        True,
    )
    assert first.resume_token
    with pytest.raises(TimeoutError):  # nothing more: the message is done
        await collect(call, until=1, timeout=0.5)


async def test_a_watch_by_batch_opens_with_a_snapshot_of_each_message(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    batch = await sms.BatchSend(
        pb.BatchSendRequest(
            recipients=[pb.BatchRecipient(phone_number=f"+1415555{i:04d}") for i in range(3)],
            text="b",
        ),
        metadata=bearer(token),
    )
    ids = [r.message_id for r in batch.results]
    await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})
    call = await started(
        sms.WatchStatus(pb.WatchStatusRequest(batch_id=batch.batch_id), metadata=bearer(token))
    )
    events = await collect(call, until=3)
    call.cancel()
    assert sorted((e.message_id, e.status, e.snapshot) for e in events) == sorted(
        (i, S.MESSAGE_STATUS_DELIVERED, True) for i in ids
    )


async def test_a_resume_after_a_snapshot_repeats_nothing(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    soon = Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    sent = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550100", text="soon", send_time=soon),
        metadata=bearer(token),
    )
    ids = [sent.message.id]
    call = await started(
        sms.WatchStatus(pb.WatchStatusRequest(message_ids=ids), metadata=bearer(token))
    )
    seen = await collect(call, until=1)
    call.cancel()  # disconnect right after the snapshot
    assert (seen[0].status, seen[0].snapshot) == (S.MESSAGE_STATUS_SCHEDULED, True)

    resumed = sms.WatchStatus(
        pb.WatchStatusRequest(message_ids=ids, resume_token=seen[0].resume_token),
        metadata=bearer(token),
    )
    rest = await collect(resumed, until=len(FULL_LIFE))
    resumed.cancel()
    assert [(e.status, e.snapshot) for e in rest] == [(s, False) for s in FULL_LIFE]


def sealed(server: Running, token: str, positions: list[str]) -> str:
    """A resume token signed by ``server`` for the app of ``token``."""
    assert server.hub is not None
    return encode_token(server.hub.tokens, token.split(".", 1)[0], positions)


async def test_malformed_resume_tokens_are_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    # More shards than the server has (fewer is a token from before they grew).
    wrong_shard_count = sealed(server, token, ["1-0"] * (server.store.shards + 1))
    not_positions = sealed(server, token, ["x", "y", "z", "w"])
    for bad in ["not-a-token", wrong_shard_count, not_positions]:
        call = sms.WatchStatus(pb.WatchStatusRequest(resume_token=bad), metadata=bearer(token))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(call, until=1)
        details = details_of(caught.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "resume_token" in details.fields


async def test_an_edited_resume_token_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    await send(sms, token, 1)
    (event,) = await collect(call, until=1)
    call.cancel()
    issued = event.resume_token
    # The unsigned form tokens had before, and the issued token with one character changed.
    forged = [
        base64.urlsafe_b64encode(b"v1:0-0,0-0,0-0,0-0").decode().rstrip("="),
        issued[:5] + ("A" if issued[5] != "A" else "B") + issued[6:],
    ]
    for resume_token in forged:
        resumed = sms.WatchStatus(
            pb.WatchStatusRequest(resume_token=resume_token), metadata=bearer(token)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(resumed, until=1)
        details = details_of(caught.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RESUME_TOKEN",
        )
        assert details.fields.keys() == {"resume_token"}


async def test_a_resume_token_of_another_app_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(other)))
    await send(sms, other, 1)
    (event,) = await collect(call, until=1)
    call.cancel()
    resumed = sms.WatchStatus(
        pb.WatchStatusRequest(resume_token=event.resume_token), metadata=bearer(token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(resumed, until=1)
    assert details_of(caught.value).reason == "INVALID_RESUME_TOKEN"


async def test_token_older_than_retention_is_out_of_range(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    await send(sms, token, 4)  # every shard stream now starts after "1-0"
    ancient = sealed(server, token, ["1-0"] * server.settings.shards)
    call = sms.WatchStatus(pb.WatchStatusRequest(resume_token=ancient), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call, until=1)
    assert details_of(caught.value).code == grpc.StatusCode.OUT_OF_RANGE


async def test_slow_subscriber_is_cut_off_without_stalling_others(
    make_server: ServerFactory,
) -> None:
    # At the hub itself: over gRPC, transport buffers in front of a client
    # that does not read make it hard to know when the subscriber overflows.
    server = await make_server(watch_buffer=100)
    assert server.hub is not None
    creds = await server.apps.create("a")
    slow = await server.hub.open(creds.app_key, WatchFilter(), "")
    fast = await server.hub.open(creds.app_key, WatchFilter(), "")
    received: list[str] = []

    async def read_fast() -> None:
        async for event, _ in fast.events():
            received.append(event.message_id)
            if len(received) == 300 * 4:
                return

    reader = asyncio.create_task(read_fast())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        for round_ in range(6):
            await stub.BatchSend(
                pb.BatchSendRequest(
                    recipients=[
                        pb.BatchRecipient(phone_number=f"+1415555{round_ * 50 + i:04d}")
                        for i in range(50)
                    ],
                    text="many",
                ),
                metadata=bearer(creds.token),
            )
            await asyncio.sleep(0.05)
    await asyncio.wait_for(reader, 20)
    assert len(received) == 300 * 4

    with pytest.raises(RateLimited) as caught:
        async for _ in slow.events():
            pass
    assert caught.value.reason == "SUBSCRIBER_TOO_SLOW"
    slow.close()
    fast.close()
    assert server.hub.subscriber_count == 0


async def test_shutdown_ends_streams_with_unavailable(make_server: ServerFactory) -> None:
    server = await make_server()
    token = (await server.apps.create("a")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        call = await started(stub.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
        stopping = asyncio.create_task(server.stop())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(call, until=1)
        await stopping
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_streams_are_read_only_while_someone_watches(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    assert server.hub is not None
    assert not server.hub.reading
    call = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    assert server.hub.reading
    await send(sms, token, 1)
    assert len(await collect(call, until=4)) == 4
    call.cancel()
    hub = server.hub

    async def reading() -> bool:
        return hub.reading

    # A reader notices within one blocking read (1 s).
    await wait_until(reading, lambda still: not still, what="the shard readers to stop")
    # Watching again starts from now: nothing from before is replayed.
    again = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    fresh = await send(sms, token, 1)
    events = await collect(again, until=4)
    again.cancel()
    assert {e.message_id for e in events} == set(fresh)


async def test_a_token_ahead_of_the_live_readers_skips_the_events_up_to_it(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    # As a token issued by another server process whose readers were ahead.
    ahead = sealed(server, token, ["99999999999999-0"] * server.settings.shards)
    watch = await started(
        sms.WatchStatus(pb.WatchStatusRequest(resume_token=ahead), metadata=bearer(token))
    )
    observer = await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(token)))
    await send(sms, token, 1)
    assert len(await collect(observer, until=4)) == 4
    observer.cancel()
    with pytest.raises(TimeoutError):
        await collect(watch, until=1, timeout=0.5)


async def test_live_watches_share_tokens_within_an_app_and_never_across_apps(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    calls = [
        await started(sms.WatchStatus(pb.WatchStatusRequest(), metadata=bearer(t)))
        for t in (token, token, other)
    ]
    await send(sms, token, 1)
    await send(sms, other, 1)
    mine, mine_too, theirs = [await collect(call, until=4) for call in calls]
    for call in calls:
        call.cancel()
    assert [e.resume_token for e in mine] == [e.resume_token for e in mine_too]
    assert {e.message_id for e in mine} != {e.message_id for e in theirs}
    # Each app's last token resumes for it alone.
    for events, own, foreign in ((mine, token, other), (theirs, other, token)):
        last = events[-1].resume_token
        ok = sms.WatchStatus(pb.WatchStatusRequest(resume_token=last), metadata=bearer(own))
        with pytest.raises(TimeoutError):
            await collect(ok, until=1, timeout=0.3)
        wrong = sms.WatchStatus(pb.WatchStatusRequest(resume_token=last), metadata=bearer(foreign))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(wrong, until=1)
        assert details_of(caught.value).reason == "INVALID_RESUME_TOKEN"
