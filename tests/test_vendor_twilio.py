"""The Twilio adapter against a local fake of the Messages resource."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from smsgate_server.providers.base import OutboundBatch, OutcomeClass, Recipient, StatusQuery
from smsgate_server.providers.twilio import TwilioConfig, TwilioProvider

from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.twilio import TwilioFake
from tests.waiting import wait_until

CALLBACK = "https://smsgate.example.com/receipts/twilio"


@dataclass
class Vendor:
    fake: TwilioFake
    http: httpx.AsyncClient
    config: TwilioConfig

    def provider(
        self, *, concurrency: int = 16, timeout: float = 10.0, **changes: str
    ) -> TwilioProvider:
        config = replace(self.config, **changes)
        return TwilioProvider(config, http=self.http, concurrency=concurrency, timeout=timeout)


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    fake = TwilioFake()
    async with serve(fake.app) as url, httpx.AsyncClient() as http:
        config = TwilioConfig(
            account_sid=fake.account_sid,
            password=fake.auth_token,
            from_number="+15005550006",
            status_callback=CALLBACK,
            base_url=url,
        )
        yield Vendor(fake, http, config)
        fake.controls.release()


def batch(*phones: str) -> OutboundBatch:
    return OutboundBatch(
        app="app1",
        recipients=tuple(
            Recipient(f"msg{i}", phone, "Your order has shipped") for i, phone in enumerate(phones)
        ),
    )


async def test_each_recipient_is_one_message_with_its_sid(vendor: Vendor) -> None:
    results = await vendor.provider().send_batch(batch("+14155550123", "+14155550124"))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 2
    assert all(r.vendor_id.startswith("SM") and len(r.vendor_id) == 34 for r in results)
    assert sorted(m["To"] for m in vendor.fake.messages) == ["+14155550123", "+14155550124"]
    assert {m["From"] for m in vendor.fake.messages} == {"+15005550006"}
    assert {m["StatusCallback"] for m in vendor.fake.messages} == {CALLBACK}
    assert {m["Body"] for m in vendor.fake.messages} == {"Your order has shipped"}


async def test_a_messaging_service_replaces_the_from_number(vendor: Vendor) -> None:
    provider = vendor.provider(messaging_service_sid="MG" + "d" * 32)

    [result] = await provider.send_batch(batch("+14155550123"))

    assert result.outcome is OutcomeClass.ACCEPTED
    [message] = vendor.fake.messages
    assert "From" not in message
    assert message["MessagingServiceSid"] == "MG" + "d" * 32


async def test_an_api_key_authenticates_for_the_account(vendor: Vendor) -> None:
    provider = vendor.provider(username="SK" + "e" * 32, password="key-secret")

    [result] = await provider.send_batch(batch("+14155550123"))

    assert result.outcome is OutcomeClass.ACCEPTED


async def test_invalid_and_unsubscribed_numbers_are_refused_for_good(vendor: Vendor) -> None:
    vendor.fake.opted_out.add("+14155550199")

    results = await vendor.provider().send_batch(batch("+14155550123", "+1555", "+14155550199"))

    assert [(r.outcome, r.code, r.opted_out) for r in results] == [
        (OutcomeClass.ACCEPTED, "", False),
        (OutcomeClass.PERMANENT, "21211", False),
        (OutcomeClass.PERMANENT, "21610", True),
    ]


async def test_too_many_requests_is_throttled(vendor: Vendor) -> None:
    vendor.fake.throttled = 1

    [result] = await vendor.provider().send_batch(batch("+14155550123"))

    assert (result.outcome, result.code) == (OutcomeClass.THROTTLED, "20429")


async def test_server_error_is_retryable(vendor: Vendor) -> None:
    vendor.fake.controls.server_errors.append(500)

    [result] = await vendor.provider().send_batch(batch("+14155550123"))

    assert (result.outcome, result.code) == (OutcomeClass.RETRYABLE, "20500")


async def test_timeout_after_the_request_was_written_is_unknown(vendor: Vendor) -> None:
    vendor.fake.controls.stalled = True

    [result] = await vendor.provider(timeout=0.2).send_batch(batch("+14155550123"))

    assert (result.outcome, result.code) == (OutcomeClass.UNKNOWN, "NO_ANSWER")
    assert len(vendor.fake.messages) == 1


async def unknown_send(vendor: Vendor, phone: str) -> tuple[TwilioProvider, int]:
    """A send whose answer is lost after Twilio created the message; the
    provider and the message's SENT time, as the reconciler knows them."""
    vendor.fake.controls.stalled = True
    provider = vendor.provider(timeout=0.2)
    [result] = await provider.send_batch(batch(phone))
    assert result.outcome is OutcomeClass.UNKNOWN
    vendor.fake.controls.release()
    vendor.fake.controls.stalled = False
    return provider, int(time.time() * 1000)


async def test_a_send_of_unknown_outcome_is_found_by_its_number_and_time(vendor: Vendor) -> None:
    provider, sent_ms = await unknown_send(vendor, "+14155550123")
    [sid] = vendor.fake.resources
    vendor.fake.set_status(sid, "undelivered", 30003)

    answer = await provider.query_status([StatusQuery("msg0", "+14155550123", "", sent_ms)])

    [status] = answer.statuses
    assert status is not None and (status.delivered, status.code) == (False, "30003")
    assert vendor.fake.lists[-1] == {
        "To": "+14155550123",
        "From": "+15005550006",
        "PageSize": "100",
    }


async def test_two_messages_to_the_number_at_that_time_are_no_answer(vendor: Vendor) -> None:
    provider, sent_ms = await unknown_send(vendor, "+14155550123")
    await provider.send_batch(batch("+14155550123"))
    for sid in vendor.fake.resources:
        vendor.fake.set_status(sid, "delivered")

    answer = await provider.query_status([StatusQuery("msg0", "+14155550123", "", sent_ms)])

    assert answer.statuses == [None]


async def test_only_a_message_created_while_the_call_ran_is_taken(vendor: Vendor) -> None:
    provider, sent_ms = await unknown_send(vendor, "+14155550123")
    [sid] = vendor.fake.resources
    vendor.fake.set_status(sid, "delivered")
    query = StatusQuery("msg0", "+14155550123", "", sent_ms)
    # Created an hour before: another message; the request never arrived.
    vendor.fake.created_at(sid, datetime.now(UTC) - timedelta(hours=1))

    assert (await provider.query_status([query])).statuses == [None]

    vendor.fake.created_at(sid, datetime.now(UTC))
    [status] = (await provider.query_status([query])).statuses
    assert status is not None and status.delivered


async def test_a_wrong_auth_token_is_permanent(vendor: Vendor) -> None:
    [result] = await vendor.provider(password="wrong").send_batch(batch("+14155550123"))

    assert (result.outcome, result.code) == (OutcomeClass.PERMANENT, "20003")
    assert vendor.fake.messages == []


async def test_no_more_calls_in_flight_than_the_concurrency_limit(vendor: Vendor) -> None:
    vendor.fake.controls.stalled = True
    provider = vendor.provider(concurrency=2)
    sending = asyncio.create_task(
        provider.send_batch(batch(*(f"+1415555010{i}" for i in range(5))))
    )

    await wait_until(
        lambda: asyncio.sleep(0, len(vendor.fake.messages)),
        lambda n: n == 2,
        what="two messages at the fake",
    )
    # Let any request beyond the limit reach the fake if it could.
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(vendor.fake.messages) == 2
    vendor.fake.controls.release()
    results = await sending

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 5
