"""Odd and hostile input gets a clear status, never UNKNOWN, INTERNAL or a
transport error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_reflection.v1alpha.reflection_pb2 import (
    ServerReflectionRequest,
    ServerReflectionResponse,
)
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.domain.events import encode_token
from smsgate_server.runtime import Running

from tests.support import bearer, details_of

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

PHONE = "+14155550123"
BAD_TIMESTAMPS = [Timestamp(seconds=1, nanos=2_000_000_000), Timestamp(seconds=10**12)]


@pytest.mark.parametrize("when", BAD_TIMESTAMPS)
async def test_invalid_timestamps_are_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, when: Timestamp
) -> None:
    md = bearer(token)
    calls: list[tuple[str, Any]] = [
        ("send_time", sms.SendSms(pb.SendSmsRequest(phone_number=PHONE, text="x", send_time=when),
                                metadata=md)),
        ("start_time", sms.ListMessages(pb.ListMessagesRequest(start_time=when), metadata=md)),
        ("end_time", sms.ListMessages(pb.ListMessagesRequest(end_time=when), metadata=md)),
    ]  # fmt: skip
    for field, call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        details = details_of(caught.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details.fields


@pytest.mark.parametrize(
    "positions", [["99999999999999999999999-0"] * 4, ["1--1"] * 4, ["-1-0"] * 4, ["\uff11-0"] * 4]
)
async def test_resume_tokens_with_impossible_positions_are_invalid_argument(
    sms: SmsServiceAsyncStub, token: str, server: Running, positions: list[str]
) -> None:
    # Signed by the server, so only the positions are wrong.
    assert server.hub is not None
    resume_token = encode_token(server.hub.tokens, token.split(".", 1)[0], positions)
    call = sms.WatchStatus(pb.WatchStatusRequest(resume_token=resume_token), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert details_of(caught.value).fields.keys() == {"resume_token"}


async def test_huge_ids_are_invalid_argument_without_echo(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    huge, md = "x" * 100_000, bearer(token)
    calls: list[tuple[str, Any]] = [
        ("message_id", sms.GetMessage(pb.GetMessageRequest(message_id=huge), metadata=md)),
        ("batch_id", sms.CancelBatch(pb.CancelBatchRequest(batch_id=huge), metadata=md)),
    ]
    for field, call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        details = details_of(caught.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.fields == {field: "must be at most 64 characters"}
        assert huge not in details.message


async def test_malformed_ids_within_the_limit_are_not_found(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.GetMessage(pb.GetMessageRequest(message_id="x" * 64), metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_megabyte_of_text_is_too_long(sms: SmsServiceAsyncStub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(
            pb.SendSmsRequest(phone_number=PHONE, text="€" * 350_000), metadata=bearer(token)
        )
    assert details_of(caught.value).reason == "CONTENT_TOO_LONG"


async def test_a_huge_label_key_is_invalid_argument(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.SendSmsRequest(phone_number=PHONE, text="x", labels={"k" * 50_000: "v"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(request, metadata=bearer(token))
    assert details_of(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "😀" * 10, "\u202e"])
async def test_unusual_text_is_accepted_and_measured(
    sms: SmsServiceAsyncStub, token: str, text: str
) -> None:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number=PHONE, text=text), metadata=bearer(token)
    )
    assert reply.message.segments >= 1


TRUNCATED_VARINT = b"\x08\xff\xff\xff"


async def test_an_undecodable_body_is_malformed_request_without_parser_text(
    channel: grpc.aio.Channel, token: str
) -> None:
    send: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/smsgate.v1.SmsService/SendSms"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(TRUNCATED_VARINT, metadata=bearer(token))
    details = details_of(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert details.fields.keys() == {""}
    assert "DecodeError" not in details.message and "Wire format" not in details.message


async def test_an_undecodable_stream_request_is_malformed_request(
    channel: grpc.aio.Channel, token: str
) -> None:
    watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/smsgate.v1.SmsService/WatchStatus"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in watch(TRUNCATED_VARINT, metadata=bearer(token)):
            pass
    assert details_of(caught.value).reason == "MALFORMED_REQUEST"


async def test_an_undecodable_body_without_credentials_is_unauthenticated(
    channel: grpc.aio.Channel,
) -> None:
    # Authentication comes first: a caller without a token learns nothing of the body.
    send: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/smsgate.v1.SmsService/SendSms"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(TRUNCATED_VARINT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_undecodable_health_check_is_malformed_request(
    channel: grpc.aio.Channel,
) -> None:
    check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/grpc.health.v1.Health/Check"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(TRUNCATED_VARINT)
    assert details_of(caught.value).reason == "MALFORMED_REQUEST"


async def test_an_undecodable_health_watch_is_malformed_request(
    channel: grpc.aio.Channel,
) -> None:
    watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/grpc.health.v1.Health/Watch"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in watch(TRUNCATED_VARINT):
            pass
    details = details_of(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


async def test_an_undecodable_reflection_request_is_malformed_request(
    channel: grpc.aio.Channel,
) -> None:
    # A good request first: the stream answers it, then ends at the bad one.
    info: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    list_services = ServerReflectionRequest(list_services="").SerializeToString()
    call = info(iter([list_services, TRUNCATED_VARINT]))
    answers = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for answer in call:
            answers.append(ServerReflectionResponse.FromString(answer))
    details = details_of(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert [a.WhichOneof("message_response") for a in answers] == ["list_services_response"]
