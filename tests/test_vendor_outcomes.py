"""What a vendor call's failure means for its recipients (the HTTP edge shared by
the adapters), and each vendor's error codes by class."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from smsgate_server.providers.aliyun import classify_aliyun
from smsgate_server.providers.base import OutcomeClass
from smsgate_server.providers.calls import CallFailed, references_tag, vendor_post
from smsgate_server.providers.tencent import classify_tencent
from smsgate_server.providers.twilio import classify_twilio


def raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


def answering(status: int, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


async def outcome_of(transport: httpx.MockTransport) -> tuple[OutcomeClass, str]:
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(CallFailed) as failed:
            await vendor_post(
                client,
                "https://vendor.example/",
                vendor="test",
                content=b"{}",
                headers={},
                timeout=1.0,
                slots=asyncio.Semaphore(1),
            )
    return failed.value.outcome, failed.value.code


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.PoolTimeout("no free connection"),
        httpx.WriteTimeout("request not written"),
    ],
)
async def test_a_request_that_never_reached_the_vendor_is_retryable(exc: Exception) -> None:
    assert await outcome_of(raising(exc)) == (OutcomeClass.RETRYABLE, "NOT_SENT")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("no answer in time"),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
    ],
)
async def test_a_request_the_vendor_may_have_acted_on_is_unknown(exc: Exception) -> None:
    assert await outcome_of(raising(exc)) == (OutcomeClass.UNKNOWN, "NO_ANSWER")


async def test_a_gateway_timeout_is_unknown() -> None:
    assert await outcome_of(answering(504, b"<html>")) == (OutcomeClass.UNKNOWN, "HTTP_504")


async def test_a_server_error_page_is_retryable() -> None:
    assert await outcome_of(answering(502, b"<html>")) == (OutcomeClass.RETRYABLE, "HTTP_502")


async def test_an_unreadable_success_is_unknown() -> None:
    assert await outcome_of(answering(200, b"<html>")) == (OutcomeClass.UNKNOWN, "HTTP_200")


def test_references_tag_keeps_the_ids_that_fit() -> None:
    assert references_tag(["a" * 5, "b" * 5, "c" * 5], 11) == "aaaaa,bbbbb"
    assert references_tag(["a" * 12], 11) == ""


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("LimitExceeded.PhoneNumberDailyLimit", OutcomeClass.PERMANENT),
        ("RequestLimitExceeded", OutcomeClass.THROTTLED),
        ("LimitExceeded.AppDailyLimit", OutcomeClass.THROTTLED),
        ("FailedOperation.ContainSensitiveWord", OutcomeClass.PERMANENT),
        ("FailedOperation.InsufficientBalanceInSmsPackage", OutcomeClass.PERMANENT),
        ("InvalidParameterValue.IncorrectPhoneNumber", OutcomeClass.PERMANENT),
        ("AuthFailure.SignatureFailure", OutcomeClass.PERMANENT),
        ("InternalError.OtherError", OutcomeClass.RETRYABLE),
        ("InternalError.SendAndRecvFail", OutcomeClass.UNKNOWN),
        ("SomethingNew.NeverSeen", OutcomeClass.RETRYABLE),
    ],
)
def test_tencent_codes_by_class(code: str, outcome: OutcomeClass) -> None:
    assert classify_tencent(code)[0] is outcome


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("isv.BUSINESS_LIMIT_CONTROL", OutcomeClass.THROTTLED),
        ("isv.DAY_LIMIT_CONTROL", OutcomeClass.PERMANENT),
        ("isv.MOBILE_NUMBER_ILLEGAL", OutcomeClass.PERMANENT),
        ("isv.AMOUNT_NOT_ENOUGH", OutcomeClass.PERMANENT),
        ("isv.SYSTEM_ERROR", OutcomeClass.RETRYABLE),
        ("isp.SYSTEM_ERROR", OutcomeClass.RETRYABLE),
        ("Throttling.User", OutcomeClass.THROTTLED),
        ("SignatureDoesNotMatch", OutcomeClass.PERMANENT),
    ],
)
def test_aliyun_codes_by_class(code: str, outcome: OutcomeClass) -> None:
    assert classify_aliyun(code)[0] is outcome


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, 21211, OutcomeClass.PERMANENT),
        (400, 21610, OutcomeClass.PERMANENT),
        (429, 20429, OutcomeClass.THROTTLED),
        (400, 30022, OutcomeClass.THROTTLED),
        (401, 20003, OutcomeClass.PERMANENT),
        (503, None, OutcomeClass.RETRYABLE),
        (400, 21408, OutcomeClass.PERMANENT),
    ],
)
def test_twilio_codes_by_class(status: int, code: int | None, outcome: OutcomeClass) -> None:
    assert classify_twilio(status, code) is outcome
