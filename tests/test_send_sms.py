"""SendSms and GetMessage over a real gRPC channel against real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.runtime import Running

from tests.pipeline_support import wait_for_statuses
from tests.support import bearer, details_of

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

S = message_pb2.MessageStatus


@pytest.mark.cluster
async def test_sent_message_is_delivered_with_history(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="hello"), metadata=bearer(token)
    )
    assert reply.message.status == S.MESSAGE_STATUS_QUEUED
    assert reply.message.phone_number == "+14155550123"

    message = (
        await wait_for_statuses(sms, token, [reply.message.id], {S.MESSAGE_STATUS_DELIVERED})
    )[reply.message.id]

    assert message.status == S.MESSAGE_STATUS_DELIVERED
    assert [h.status for h in message.history] == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_DELIVERED,
    ]
    times = [h.time.ToMilliseconds() for h in message.history]
    assert times == sorted(times)
    assert message.provider == "simulator"
    assert message.provider_message_id
    assert message.attempts == 1
    assert message.segments == 1


async def test_phone_number_is_normalised_to_e164(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+44 7911 123 456", text="hi"), metadata=bearer(token)
    )
    assert reply.message.phone_number == "+447911123456"


async def test_same_request_id_and_content_returns_the_same_message(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    request = pb.SendSmsRequest(phone_number="+14155550123", text="once", request_id="order-42")
    first = await sms.SendSms(request, metadata=bearer(token))
    second = await sms.SendSms(request, metadata=bearer(token))
    assert second.message.id == first.message.id


async def test_same_request_id_with_different_content_is_rejected(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="first", request_id="r-1"),
        metadata=bearer(token),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(
            pb.SendSmsRequest(phone_number="+14155550123", text="second", request_id="r-1"),
            metadata=bearer(token),
        )
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    assert details.reason == "REQUEST_ID_REUSED"
    assert details.domain == "smsgate.v1"


async def test_concurrent_retries_of_one_request_id_make_one_message(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    request = pb.SendSmsRequest(phone_number="+14155550123", text="x", request_id="race")
    replies = await asyncio.gather(
        *(sms.SendSms(request, metadata=bearer(token)) for _ in range(20))
    )
    assert len({r.message.id for r in replies}) == 1


@pytest.mark.parametrize(
    ("request_fields", "field", "reason"),
    [
        ({"phone_number": "12345", "text": "x"}, "phone_number", "INVALID_PHONE_NUMBER"),
        ({"phone_number": "+1415555", "text": "x"}, "phone_number", "INVALID_PHONE_NUMBER"),
        ({"phone_number": "", "text": "x"}, "phone_number", "INVALID_PHONE_NUMBER"),
        ({"phone_number": "+14155550123", "text": ""}, "text", "EMPTY_CONTENT"),
        ({"phone_number": "+14155550123"}, "text", "EMPTY_CONTENT"),
        ({"phone_number": "+14155550123", "text": "   "}, "text", "EMPTY_CONTENT"),
        ({"phone_number": "+14155550123", "text": "a" * 1531}, "text", "CONTENT_TOO_LONG"),
        ({"phone_number": "+14155550123", "text": "短" * 671}, "text", "CONTENT_TOO_LONG"),
        (
            {"phone_number": "+14155550123", "text": "x", "request_id": "has space"},
            "request_id",
            "INVALID_ARGUMENT",
        ),
        (
            {"phone_number": "+14155550123", "text": "x", "sender_id": "s" * 33},
            "sender_id",
            "INVALID_ARGUMENT",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    sms: SmsServiceAsyncStub, token: str, request_fields: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(pb.SendSmsRequest(**request_fields), metadata=bearer(token))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields
    assert details.reason == reason


async def test_longest_allowed_text_is_accepted(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="a" * 1530), metadata=bearer(token)
    )
    assert reply.message.segments == 10


async def test_bad_labels_name_the_label(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.SendSmsRequest(phone_number="+14155550123", text="x", labels={"Bad Key": "v"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(request, metadata=bearer(token))
    assert details_of(caught.value).fields.keys() == {"labels['Bad Key']"}


async def test_labels_and_sender_are_stored(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(
            phone_number="+14155550123", text="x", sender_id="ACME", labels={"order_id": "7"}
        ),
        metadata=bearer(token),
    )
    got = await sms.GetMessage(
        pb.GetMessageRequest(message_id=reply.message.id), metadata=bearer(token)
    )
    assert got.message.sender_id == "ACME"
    assert dict(got.message.labels) == {"order_id": "7"}


async def test_unknown_message_is_not_found(sms: SmsServiceAsyncStub, token: str) -> None:
    for message_id in ["nope", "0" * 26]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sms.GetMessage(
                pb.GetMessageRequest(message_id=message_id), metadata=bearer(token)
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_empty_message_id_is_invalid_argument(sms: SmsServiceAsyncStub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.GetMessage(pb.GetMessageRequest(), metadata=bearer(token))
    assert details_of(caught.value).fields.keys() == {"message_id"}


async def test_another_apps_message_is_not_found(
    sms: SmsServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="mine"), metadata=bearer(token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.GetMessage(
            pb.GetMessageRequest(message_id=reply.message.id), metadata=bearer(other)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.CancelMessage(
            pb.CancelMessageRequest(message_id=reply.message.id), metadata=bearer(other)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _in(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int((time.time() + seconds) * 1000))
    return ts


@pytest.mark.cluster
async def test_scheduled_message_waits_and_can_be_canceled(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="later", send_time=_in(3600)),
        metadata=bearer(token),
    )
    assert reply.message.status == S.MESSAGE_STATUS_SCHEDULED
    canceled = await sms.CancelMessage(
        pb.CancelMessageRequest(message_id=reply.message.id), metadata=bearer(token)
    )
    assert canceled.message.status == S.MESSAGE_STATUS_CANCELED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.CancelMessage(
            pb.CancelMessageRequest(message_id=reply.message.id), metadata=bearer(token)
        )
    assert details_of(caught.value).code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.cluster
async def test_scheduled_message_is_sent_at_its_time(sms: SmsServiceAsyncStub, token: str) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="soon", send_time=_in(0.5)),
        metadata=bearer(token),
    )
    assert reply.message.status == S.MESSAGE_STATUS_SCHEDULED
    message = (
        await wait_for_statuses(sms, token, [reply.message.id], {S.MESSAGE_STATUS_DELIVERED})
    )[reply.message.id]
    sent = next(h for h in message.history if h.status == S.MESSAGE_STATUS_SENDING)
    assert sent.time.ToMilliseconds() >= reply.message.send_time.ToMilliseconds()


@pytest.mark.parametrize(
    ("offset", "reason"), [(-3600, "SEND_TIME_IN_PAST"), (36 * 86400, "SEND_TIME_TOO_FAR")]
)
async def test_send_time_out_of_range_is_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, offset: float, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(
            pb.SendSmsRequest(phone_number="+14155550123", text="x", send_time=_in(offset)),
            metadata=bearer(token),
        )
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == reason
    assert "send_time" in details.fields


async def test_an_unknown_template_is_not_found(sms: SmsServiceAsyncStub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(
            pb.SendSmsRequest(
                phone_number="+14155550123", template=message_pb2.TemplateContent(template_id="t")
            ),
            metadata=bearer(token),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'t'" in (caught.value.details() or "")
