"""The Tencent Cloud SMS adapter against a local fake that checks signatures
and answers like the vendor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from smsgate_server.providers.base import OutboundBatch, OutcomeClass, Recipient
from smsgate_server.providers.tencent import TencentConfig, TencentProvider

from tests.vendor_fakes.loopback import serve, serve_dropping
from tests.vendor_fakes.tencent import TencentFake


@dataclass
class Vendor:
    fake: TencentFake
    provider: TencentProvider
    http: httpx.AsyncClient
    url: str


def make_provider(
    fake: TencentFake, url: str, http: httpx.AsyncClient, **kw: object
) -> TencentProvider:
    config = TencentConfig(
        secret_id=str(kw.pop("secret_id", fake.secret_id)),
        secret_key=str(kw.pop("secret_key", fake.secret_key)),
        sdk_app_id=fake.sdk_app_id,
        endpoint=url,
    )
    return TencentProvider(config, http=http, timeout=float(str(kw.pop("timeout", 10.0))))


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    fake = TencentFake()
    async with serve(fake.app) as url, httpx.AsyncClient() as http:
        yield Vendor(fake, make_provider(fake, url, http), http, url)
        fake.controls.release()


def batch(
    *phones: str, params: tuple[tuple[str, str], ...] = (("code", "123456"),)
) -> OutboundBatch:
    return OutboundBatch(
        app="app1",
        recipients=tuple(
            Recipient(f"msg{i:04d}", phone, "Your code is 123456", params)
            for i, phone in enumerate(phones)
        ),
        sign_name="腾讯云",
        template_ids={"tencent": "1110001"},
    )


def cn(i: int) -> str:
    return f"+86138{i:08d}"


async def test_accepted_numbers_get_their_serial_numbers(vendor: Vendor) -> None:
    results = await vendor.provider.send_batch(batch(cn(1), cn(2)))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 2
    assert all(r.vendor_id.startswith("2640:") for r in results)
    assert results[0].vendor_id != results[1].vendor_id
    [call] = vendor.fake.calls
    assert call["PhoneNumberSet"] == [cn(1), cn(2)]
    assert call["SignName"] == "腾讯云"
    assert call["TemplateParamSet"] == ["123456"]
    assert call["SessionContext"] == "msg0000,msg0001"


async def test_one_refused_number_leaves_the_others_accepted(vendor: Vendor) -> None:
    vendor.fake.number_codes[cn(2)] = "LimitExceeded.PhoneNumberDailyLimit"
    vendor.fake.number_codes[cn(3)] = "InvalidParameterValue.IncorrectPhoneNumber"

    results = await vendor.provider.send_batch(batch(cn(1), cn(2), cn(3)))

    assert [(r.outcome, r.code) for r in results] == [
        (OutcomeClass.ACCEPTED, ""),
        (OutcomeClass.PERMANENT, "LimitExceeded.PhoneNumberDailyLimit"),
        (OutcomeClass.PERMANENT, "InvalidParameterValue.IncorrectPhoneNumber"),
    ]


async def test_a_number_on_the_do_not_disturb_list_is_an_opt_out(vendor: Vendor) -> None:
    vendor.fake.number_codes[cn(1)] = "FailedOperation.PhoneNumberInBlacklist"

    [result] = await vendor.provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.opted_out) == (OutcomeClass.PERMANENT, True)


async def test_the_same_number_twice_in_a_call_maps_to_both_statuses(vendor: Vendor) -> None:
    results = await vendor.provider.send_batch(batch(cn(1), cn(1)))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 2
    assert results[0].vendor_id != results[1].vendor_id


async def test_request_limit_is_throttling(vendor: Vendor) -> None:
    vendor.fake.call_error = "RequestLimitExceeded"

    results = await vendor.provider.send_batch(batch(cn(1), cn(2)))

    assert {(r.outcome, r.code) for r in results} == {
        (OutcomeClass.THROTTLED, "RequestLimitExceeded")
    }


async def test_thirty_second_limit_is_throttling_with_its_window(vendor: Vendor) -> None:
    vendor.fake.number_codes[cn(1)] = "LimitExceeded.PhoneNumberThirtySecondLimit"

    [result] = await vendor.provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.retry_after) == (OutcomeClass.THROTTLED, 30.0)


async def test_server_error_is_retryable(vendor: Vendor) -> None:
    vendor.fake.controls.server_errors.append(502)

    results = await vendor.provider.send_batch(batch(cn(1), cn(2)))

    assert {(r.outcome, r.code) for r in results} == {(OutcomeClass.RETRYABLE, "HTTP_502")}


async def test_timeout_after_the_request_was_written_is_unknown(vendor: Vendor) -> None:
    vendor.fake.controls.stalled = True
    provider = make_provider(vendor.fake, vendor.url, vendor.http, timeout=0.2)

    results = await provider.send_batch(batch(cn(1), cn(2)))

    assert {r.outcome for r in results} == {OutcomeClass.UNKNOWN}
    # The vendor did get the call.
    assert len(vendor.fake.calls) == 1


async def test_connection_lost_mid_answer_is_unknown() -> None:
    fake = TencentFake()
    async with serve_dropping() as url, httpx.AsyncClient() as http:
        results = await make_provider(fake, url, http).send_batch(batch(cn(1)))

    assert [(r.outcome, r.code) for r in results] == [(OutcomeClass.UNKNOWN, "NO_ANSWER")]


async def test_connection_refused_is_retryable(vendor: Vendor) -> None:
    async with serve(TencentFake().app) as url:
        pass  # the port is closed again
    provider = make_provider(vendor.fake, url, vendor.http)

    [result] = await provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (OutcomeClass.RETRYABLE, "NOT_SENT")


async def test_bad_secret_key_is_permanent(vendor: Vendor) -> None:
    provider = make_provider(vendor.fake, vendor.url, vendor.http, secret_key="wrong")

    [result] = await provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (
        OutcomeClass.PERMANENT,
        "AuthFailure.SignatureFailure",
    )
    assert vendor.fake.calls == []


async def test_unknown_secret_id_is_permanent(vendor: Vendor) -> None:
    provider = make_provider(vendor.fake, vendor.url, vendor.http, secret_id="AKIDnobody")

    [result] = await provider.send_batch(batch(cn(1)))

    assert (result.outcome, result.code) == (
        OutcomeClass.PERMANENT,
        "AuthFailure.SecretIdNotFound",
    )


async def test_450_recipients_take_three_calls(vendor: Vendor) -> None:
    phones = [cn(i) for i in range(450)]

    results = await vendor.provider.send_batch(batch(*phones))

    assert [len(c["PhoneNumberSet"]) for c in vendor.fake.calls] == [200, 200, 50]
    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 450
    assert len({r.vendor_id for r in results}) == 450


async def test_mixed_domestic_and_international_numbers_are_split(vendor: Vendor) -> None:
    phones = [cn(1), "+14155550123", cn(2), "+447700900123"]

    results = await vendor.provider.send_batch(batch(*phones))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 4
    sent = [c["PhoneNumberSet"] for c in vendor.fake.calls]
    assert sent[0] == phones
    assert sorted(sent[1:]) == sorted([[cn(1), cn(2)], ["+14155550123", "+447700900123"]])


async def test_different_params_go_in_different_calls(vendor: Vendor) -> None:
    recipients = (
        Recipient("m1", cn(1), "code 111111", (("code", "111111"),)),
        Recipient("m2", cn(2), "code 222222", (("code", "222222"),)),
        Recipient("m3", cn(3), "code 111111", (("code", "111111"),)),
    )
    sms = OutboundBatch("app1", recipients, "腾讯云", "", {"tencent": "1110001"})

    results = await vendor.provider.send_batch(sms)

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 3
    sent = sorted((c["TemplateParamSet"], c["PhoneNumberSet"]) for c in vendor.fake.calls)
    assert sent == [(["111111"], [cn(1), cn(3)]), (["222222"], [cn(2)])]


async def test_a_template_without_a_tencent_id_is_refused_without_a_call(vendor: Vendor) -> None:
    sms = OutboundBatch("app1", batch(cn(1)).recipients, "腾讯云", "", {"aliyun": "SMS_1"})

    [result] = await vendor.provider.send_batch(sms)

    assert (result.outcome, result.code) == (OutcomeClass.PERMANENT, "NO_VENDOR_TEMPLATE")
    assert vendor.fake.calls == []


async def test_a_sender_id_goes_only_with_international_numbers(vendor: Vendor) -> None:
    recipients = batch(cn(1), "+14155550123").recipients
    sms = OutboundBatch("app1", recipients, "腾讯云", "ACME", {"tencent": "1110001"})

    await vendor.provider.send_batch(sms)

    sender_ids = {c["PhoneNumberSet"][0]: c.get("SenderId") for c in vendor.fake.calls[1:]}
    assert sender_ids == {cn(1): None, "+14155550123": "ACME"}
