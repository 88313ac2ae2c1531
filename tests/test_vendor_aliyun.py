"""The Alibaba Cloud SMS adapter against a local fake that checks V3 signatures
with the vendor's own code and answers like the vendor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from smsgate_server.providers.aliyun import AliyunConfig, AliyunProvider
from smsgate_server.providers.base import OutboundBatch, OutcomeClass, Recipient

from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve

SIGN = "阿里云短信测试"
TEMPLATE = "SMS_154950909"


@dataclass
class Vendor:
    fake: AliyunFake
    http: httpx.AsyncClient
    url: str

    @property
    def provider(self) -> AliyunProvider:
        return self.with_config()

    def with_config(
        self, *, secret: str = "", key_id: str = "", timeout: float = 10.0
    ) -> AliyunProvider:
        config = AliyunConfig(
            access_key_id=key_id or self.fake.access_key_id,
            access_key_secret=secret or self.fake.access_key_secret,
            endpoint=self.url,
        )
        return AliyunProvider(config, http=self.http, timeout=timeout)


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    fake = AliyunFake()
    async with serve(fake.app) as url, httpx.AsyncClient() as http:
        yield Vendor(fake, http, url)
        fake.controls.release()


def batch(*phones: str, code: str = "1234") -> OutboundBatch:
    return OutboundBatch(
        app="app1",
        recipients=tuple(
            Recipient(f"msg{i:04d}", phone, f"Your code is {code}", (("code", code),))
            for i, phone in enumerate(phones)
        ),
        sign_name=SIGN,
        template_ids={"aliyun": TEMPLATE},
    )


def cn(i: int) -> str:
    return f"+86139{i:08d}"


async def test_send_sms_accepts_every_number_under_one_biz_id(vendor: Vendor) -> None:
    results = await vendor.provider.send_batch(batch(cn(1), "+85261234567"))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 2
    [(action, form)] = vendor.fake.calls
    assert action == "SendSms"
    assert form["PhoneNumbers"] == "13900000001,85261234567"
    assert form["SignName"] == SIGN
    assert json.loads(form["TemplateParam"]) == {"code": "1234"}
    assert form["OutId"] == "msg0000,msg0001"
    biz_id = results[0].vendor_id.split("/")[0]
    assert [r.vendor_id for r in results] == [f"{biz_id}/13900000001", f"{biz_id}/85261234567"]


async def test_personalized_params_go_by_send_batch_sms(vendor: Vendor) -> None:
    recipients = tuple(
        Recipient(f"m{i}", cn(i), f"code {i}", (("code", f"{i:04d}"),)) for i in range(3)
    )
    sms = OutboundBatch("app1", recipients, SIGN, "", {"aliyun": TEMPLATE})

    results = await vendor.provider.send_batch(sms)

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 3
    [(action, form)] = vendor.fake.calls
    assert action == "SendBatchSms"
    assert json.loads(form["PhoneNumberJson"]) == ["13900000000", "13900000001", "13900000002"]
    assert json.loads(form["SignNameJson"]) == [SIGN] * 3
    assert json.loads(form["TemplateParamJson"]) == [
        {"code": "0000"},
        {"code": "0001"},
        {"code": "0002"},
    ]


async def test_250_personalized_recipients_take_three_batch_calls(vendor: Vendor) -> None:
    recipients = tuple(
        Recipient(f"m{i}", cn(i), f"code {i}", (("code", f"{i:04d}"),)) for i in range(250)
    )

    results = await vendor.provider.send_batch(
        OutboundBatch("app1", recipients, SIGN, "", {"aliyun": TEMPLATE})
    )

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 250
    sizes = sorted(len(json.loads(f["PhoneNumberJson"])) for _, f in vendor.fake.calls)
    assert sizes == [50, 100, 100]


async def test_an_illegal_number_is_isolated_and_the_others_go(vendor: Vendor) -> None:
    vendor.fake.illegal.add("13900000003")

    results = await vendor.provider.send_batch(batch(*(cn(i) for i in range(6))))

    assert [(r.outcome, r.code) for r in results] == [
        (OutcomeClass.ACCEPTED, "")
        if i != 3
        else (OutcomeClass.PERMANENT, "isv.MOBILE_NUMBER_ILLEGAL")
        for i in range(6)
    ]


async def test_business_limit_control_names_its_window(vendor: Vendor) -> None:
    vendor.fake.call_error = ("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")

    [result] = await vendor.provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.code, result.retry_after) == (
        OutcomeClass.THROTTLED,
        "isv.BUSINESS_LIMIT_CONTROL",
        60.0,
    )


async def test_business_limit_for_the_day_is_permanent(vendor: Vendor) -> None:
    vendor.fake.call_error = ("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10")

    [result] = await vendor.provider.send_batch(batch(cn(1)))

    assert result.outcome is OutcomeClass.PERMANENT


async def test_a_blacklisted_keyword_is_permanent_and_opts_nobody_out(vendor: Vendor) -> None:
    [result] = await vendor.provider.send_batch(batch(cn(1), code="阿里大鱼"))

    assert (result.outcome, result.code, result.opted_out) == (
        OutcomeClass.PERMANENT,
        "isv.BLACK_KEY_CONTROL_LIMIT",
        False,
    )


async def test_user_throttling_is_throttled(vendor: Vendor) -> None:
    vendor.fake.call_error = ("Throttling.User", "Request was denied due to user flow control.")

    [result] = await vendor.provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (OutcomeClass.THROTTLED, "Throttling.User")


async def test_an_unapproved_template_is_permanent(vendor: Vendor) -> None:
    sms = OutboundBatch("app1", batch(cn(1)).recipients, SIGN, "", {"aliyun": "SMS_0"})

    [result] = await vendor.provider.send_batch(sms)

    assert (result.outcome, result.code) == (OutcomeClass.PERMANENT, "isv.SMS_TEMPLATE_ILLEGAL")


async def test_server_error_is_retryable(vendor: Vendor) -> None:
    vendor.fake.controls.server_errors.append(503)

    results = await vendor.provider.send_batch(batch(cn(1), cn(2)))

    assert {(r.outcome, r.code) for r in results} == {
        (OutcomeClass.RETRYABLE, "ServiceUnavailable")
    }


async def test_timeout_after_the_request_was_written_is_unknown(vendor: Vendor) -> None:
    vendor.fake.controls.stalled = True

    results = await vendor.with_config(timeout=0.2).send_batch(batch(cn(1), cn(2)))

    assert {(r.outcome, r.code) for r in results} == {(OutcomeClass.UNKNOWN, "NO_ANSWER")}
    assert len(vendor.fake.calls) == 1


async def test_a_wrong_secret_is_permanent(vendor: Vendor) -> None:
    [result] = await vendor.with_config(secret="not-the-secret").send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (OutcomeClass.PERMANENT, "SignatureDoesNotMatch")
    assert vendor.fake.calls == []


async def test_an_unknown_access_key_is_permanent(vendor: Vendor) -> None:
    [result] = await vendor.with_config(key_id="LTAInobody").send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (
        OutcomeClass.PERMANENT,
        "InvalidAccessKeyId.NotFound",
    )


async def test_every_call_has_a_fresh_nonce(vendor: Vendor) -> None:
    for _ in range(3):
        [result] = await vendor.provider.send_batch(batch(cn(1)))
        assert result.outcome is OutcomeClass.ACCEPTED


async def test_a_thousand_numbers_share_one_send_sms_call(vendor: Vendor) -> None:
    results = await vendor.provider.send_batch(batch(*(cn(i) for i in range(1001))))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 1001
    sizes = sorted(len(f["PhoneNumbers"].split(",")) for _, f in vendor.fake.calls)
    assert sizes == [1, 1000]
