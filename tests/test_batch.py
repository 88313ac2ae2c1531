"""BatchSend, CancelBatch and ListMessages against real Redis over gRPC."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.runtime import Running

from tests.conftest import ServerFactory
from tests.pipeline_support import TERMINAL, S, sent_counts, wait_for_statuses
from tests.support import bearer, details_of

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub


def phones(n: int, start: int = 0) -> list[str]:
    """``n`` distinct valid US numbers."""
    return [f"+1415555{(start + i) % 10000:04d}" for i in range(n)]


def batch(
    numbers: list[str],
    text: str = "hi",
    *,
    request_id: str = "",
    send_time: Timestamp | None = None,
) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        recipients=[pb.BatchRecipient(phone_number=p) for p in numbers],
        text=text,
        request_id=request_id,
        send_time=send_time,
    )


def _in(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int((time.time() + seconds) * 1000))
    return ts


@pytest.mark.cluster
async def test_batch_accepts_valid_recipients_and_names_each_rejection(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    numbers = ["+14155550100", "not-a-number", "+14155550101", "+1 415 555 0100", "+14155550102"]
    reply = await sms.BatchSend(batch(numbers), metadata=bearer(token))

    assert reply.batch_id
    assert (reply.accepted_count, reply.rejected_count) == (3, 2)
    assert [r.index for r in reply.results] == [0, 1, 2, 3, 4]
    assert [r.WhichOneof("result") for r in reply.results] == [
        "message_id", "error", "message_id", "error", "message_id",
    ]  # fmt: skip
    assert reply.results[1].error.reason == "INVALID_PHONE_NUMBER"
    # The same number written differently is the same recipient.
    assert reply.results[3].error.reason == "DUPLICATE_RECIPIENT"

    ids = [r.message_id for r in reply.results if r.message_id]
    seen = await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})
    assert {m.status for m in seen.values()} == {S.MESSAGE_STATUS_DELIVERED}
    assert {m.batch_id for m in seen.values()} == {reply.batch_id}


async def test_batch_over_the_limit_is_invalid_argument(
    make_server: ServerFactory,
) -> None:
    server = await make_server(batch_max_recipients=50)
    token = (await server.apps.create("a")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub

        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchSend(batch(phones(51)), metadata=bearer(token))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "TOO_MANY_RECIPIENTS"
    assert "recipients" in details.fields


async def test_default_limit_is_ten_thousand(sms: SmsServiceAsyncStub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.BatchSend(batch(phones(10_001)), metadata=bearer(token))
    assert details_of(caught.value).reason == "TOO_MANY_RECIPIENTS"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.BatchSendRequest(text="x"), "recipients"),
        (batch(["+14155550100"], text=""), "text"),
        (batch(["+14155550100"], send_time=_in(-3600)), "send_time"),
    ],
)
async def test_bad_batch_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, request_: pb.BatchSendRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.BatchSend(request_, metadata=bearer(token))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


@pytest.mark.cluster
async def test_batch_is_idempotent_by_request_id(sms: SmsServiceAsyncStub, token: str) -> None:
    request = batch([*phones(3), "bad"], request_id="campaign-7")
    first = await sms.BatchSend(request, metadata=bearer(token))
    again = await sms.BatchSend(request, metadata=bearer(token))
    assert again == first

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.BatchSend(batch(phones(2), request_id="campaign-7"), metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_large_batch_is_accepted_in_order(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.BatchSend(batch(phones(1200)), metadata=bearer(token))
    assert reply.accepted_count == 1200
    listed = await sms.ListMessages(
        pb.ListMessagesRequest(batch_id=reply.batch_id, page_size=500), metadata=bearer(token)
    )
    assert len(listed.messages) == 500
    assert listed.next_page_token


async def test_scheduled_batch_can_be_canceled_and_never_reaches_the_provider(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "sim.log"
    server = await make_server(sim_log=log)
    token = (await server.apps.create("a")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub

        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        reply = await stub.BatchSend(batch(phones(20), send_time=_in(1.0)), metadata=bearer(token))
        ids = [r.message_id for r in reply.results]
        canceled = await stub.CancelBatch(
            pb.CancelBatchRequest(batch_id=reply.batch_id), metadata=bearer(token)
        )
        assert (canceled.canceled_count, canceled.not_canceled_count) == (20, 0)
        seen = await wait_for_statuses(stub, token, ids, TERMINAL)
        await asyncio.sleep(1.5)  # past the scheduled time: nothing may be sent now
        after = await wait_for_statuses(stub, token, ids, TERMINAL)
    assert {m.status for m in seen.values()} == {S.MESSAGE_STATUS_CANCELED}
    assert {m.status for m in after.values()} == {S.MESSAGE_STATUS_CANCELED}
    assert not set(ids) & set(sent_counts(log))


async def test_unknown_batch_is_not_found(sms: SmsServiceAsyncStub, token: str) -> None:
    for batch_id in ["nope", "0" * 26]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sms.CancelBatch(pb.CancelBatchRequest(batch_id=batch_id), metadata=bearer(token))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.cluster
async def test_list_is_newest_first_and_pages_without_gaps(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    sent = []
    for i in range(7):
        reply = await sms.SendSms(
            pb.SendSmsRequest(phone_number=phones(1, i)[0], text=f"m{i}"), metadata=bearer(token)
        )
        sent.append(reply.message.id)
    listed: list[str] = []
    page_token = ""
    while True:
        page = await sms.ListMessages(
            pb.ListMessagesRequest(page_size=3, page_token=page_token), metadata=bearer(token)
        )
        listed += [m.id for m in page.messages]
        page_token = page.next_page_token
        if not page_token:
            break
    assert listed == list(reversed(sent))


async def test_list_filters_by_phone_status_and_time(sms: SmsServiceAsyncStub, token: str) -> None:
    a = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550100", text="a"), metadata=bearer(token)
    )
    later = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550101", text="b", send_time=_in(3600)),
        metadata=bearer(token),
    )
    await wait_for_statuses(sms, token, [a.message.id], {S.MESSAGE_STATUS_DELIVERED})

    by_phone = await sms.ListMessages(
        pb.ListMessagesRequest(phone_number="+14155550100"), metadata=bearer(token)
    )
    assert [m.id for m in by_phone.messages] == [a.message.id]
    scheduled = await sms.ListMessages(
        pb.ListMessagesRequest(statuses=[S.MESSAGE_STATUS_SCHEDULED]), metadata=bearer(token)
    )
    assert [m.id for m in scheduled.messages] == [later.message.id]
    window = await sms.ListMessages(
        pb.ListMessagesRequest(
            start_time=a.message.create_time, end_time=later.message.create_time
        ),
        metadata=bearer(token),
    )
    assert [m.id for m in window.messages] == [a.message.id]


async def test_list_shows_only_the_callers_messages(
    sms: SmsServiceAsyncStub, token: str, server: object
) -> None:
    from smsgate_server.runtime import Running

    assert isinstance(server, Running)
    other = (await server.apps.create("other")).token
    await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550100", text="a"), metadata=bearer(token)
    )
    listed = await sms.ListMessages(pb.ListMessagesRequest(), metadata=bearer(other))
    assert list(listed.messages) == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListMessagesRequest(page_size=-1), "page_size"),
        (pb.ListMessagesRequest(page_token="garbage"), "page_token"),
        (pb.ListMessagesRequest(statuses=[S.MESSAGE_STATUS_UNSPECIFIED]), "statuses"),
        (pb.ListMessagesRequest(statuses=[S.ValueType(42)]), "statuses"),
        (pb.ListMessagesRequest(phone_number="123"), "phone_number"),
    ],
)
async def test_bad_list_request_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, request_: pb.ListMessagesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.ListMessages(request_, metadata=bearer(token))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


async def test_page_token_is_tied_to_its_filters(sms: SmsServiceAsyncStub, token: str) -> None:
    for i in range(3):
        await sms.SendSms(
            pb.SendSmsRequest(phone_number=phones(1, i)[0], text="x"), metadata=bearer(token)
        )
    page = await sms.ListMessages(pb.ListMessagesRequest(page_size=1), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.ListMessages(
            pb.ListMessagesRequest(
                page_size=1, page_token=page.next_page_token, phone_number="+14155550100"
            ),
            metadata=bearer(token),
        )
    assert "page_token" in details_of(caught.value).fields


async def test_a_page_size_above_the_maximum_is_lowered_to_it(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    reply = await sms.BatchSend(batch(phones(501)), metadata=bearer(token))
    listed = await sms.ListMessages(
        pb.ListMessagesRequest(batch_id=reply.batch_id, page_size=10_000), metadata=bearer(token)
    )
    assert len(listed.messages) == 500
    assert listed.next_page_token


async def test_an_edited_page_token_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    for i in range(3):
        await sms.SendSms(
            pb.SendSmsRequest(phone_number=phones(1, i)[0], text="x"), metadata=bearer(token)
        )
    issued = (
        await sms.ListMessages(pb.ListMessagesRequest(page_size=1), metadata=bearer(token))
    ).next_page_token
    # The unsigned form tokens had before, and the issued token with one character changed.
    forged = [
        base64.urlsafe_b64encode(b"g|0000000000000000").decode(),
        issued[:5] + ("A" if issued[5] != "A" else "B") + issued[6:],
    ]
    for page_token in forged:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sms.ListMessages(
                pb.ListMessagesRequest(page_size=1, page_token=page_token), metadata=bearer(token)
            )
        details = details_of(caught.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        )
        assert details.fields.keys() == {"page_token"}


async def test_a_page_token_of_another_app_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    for i in range(2):
        await sms.SendSms(
            pb.SendSmsRequest(phone_number=phones(1, i)[0], text="x"), metadata=bearer(other)
        )
    theirs = await sms.ListMessages(pb.ListMessagesRequest(page_size=1), metadata=bearer(other))
    assert theirs.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.ListMessages(
            pb.ListMessagesRequest(page_size=1, page_token=theirs.next_page_token),
            metadata=bearer(token),
        )
    assert details_of(caught.value).reason == "INVALID_PAGE_TOKEN"


async def test_racing_retries_of_a_large_batch_accept_each_recipient_once(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    request = batch(phones(1700), request_id="big-campaign")
    replies = await asyncio.gather(
        *(sms.BatchSend(request, metadata=bearer(token)) for _ in range(4))
    )
    assert all(r == replies[0] for r in replies)
    listed: list[str] = []
    page_token = ""
    while True:
        page = await sms.ListMessages(
            pb.ListMessagesRequest(
                batch_id=replies[0].batch_id, page_size=500, page_token=page_token
            ),
            metadata=bearer(token),
        )
        listed += [m.id for m in page.messages]
        page_token = page.next_page_token
        if not page_token:
            break
    assert sorted(listed) == sorted(r.message_id for r in replies[0].results)
