"""Routes and failover through a real server and the vendor fakes: weights
split the traffic, a proven refusal moves a message to the next provider of
its route, an unknown outcome never does, and a bad route stops the start."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import REGISTRY
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import usage_service_pb2 as upb
from smsgate_server.providers.base import OutcomeClass, RecipientResult
from smsgate_server.providers.signing import twilio_signature
from smsgate_server.runtime import StartError
from smsgate_server.store.queue import DispatchQueue
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import ServerFactory
from tests.pipeline_support import (
    CN,
    ENDED,
    US,
    Client,
    Connect,
    shipped,
    shipped_template,
    wait_for_statuses,
)
from tests.test_buf_curl import buf_curl
from tests.test_receipt_endpoints import beijing
from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake
from tests.vendor_fakes.twilio import TwilioFake
from tests.waiting import wait_until

S = mpb.MessageStatus
TOKEN = "tok-0123456789abcdef"
# A Tencent refusal about the account (its sign), not the recipient: fails over.
SIGN_REFUSED = "FailedOperation.SignatureIncorrectOrUnapproved"


@dataclass
class TimedTencent(TencentFake):
    """The Tencent fake, noting when each send call came (refused ones too)."""

    times: list[float] = field(default_factory=list)

    def _send_sms(self, params: dict[str, Any]) -> Response:
        self.times.append(time.monotonic())
        return super()._send_sms(params)


@dataclass
class TimedAliyun(AliyunFake):
    """The Aliyun fake, noting when each send it took came and with how many numbers."""

    taken: list[tuple[float, int]] = field(default_factory=list)

    def _send(
        self,
        numbers: list[str],
        signs: list[str],
        params: list[str],
        form: dict[str, str],
        limit: int,
    ) -> Response:
        self.taken.append((time.monotonic(), len(numbers)))
        return super()._send(numbers, signs, params, form, limit)


@dataclass
class TimedTwilio(TwilioFake):
    """The Twilio fake, noting when each message create came."""

    times: list[float] = field(default_factory=list)

    async def _create(self, request: Request) -> Response:
        self.times.append(time.monotonic())
        return await super()._create(request)


@dataclass
class Fakes:
    """The three vendors' fakes, served on loopback, and a providers file naming them."""

    tencent: TimedTencent = field(default_factory=TimedTencent)
    aliyun: TimedAliyun = field(default_factory=TimedAliyun)
    twilio: TimedTwilio = field(default_factory=TimedTwilio)
    urls: dict[str, str] = field(default_factory=dict)

    def providers_file(
        self,
        path: Path,
        routes: str,
        *,
        tencent_timeout: float = 10.0,
        aliyun_extra: str = "",
        twilio_extra: str = "",
    ) -> Path:
        receipts = f'receipt_token = "{TOKEN}"\n'
        path.write_text(
            self.tencent.providers_section(
                self.urls["tencent"], f"{receipts}timeout_seconds = {tencent_timeout}\n"
            )
            + self.aliyun.providers_section(self.urls["aliyun"], receipts + aliyun_extra)
            + self.twilio.providers_section(self.urls["twilio"], twilio_extra)
            + routes,
            encoding="utf-8",
        )
        return path

    def tencent_numbers(self) -> Counter[str]:
        """Numbers Tencent took (refused calls take none)."""
        return Counter(s["PhoneNumber"] for s in self.tencent.sent)

    def aliyun_numbers(self) -> Counter[str]:
        """Numbers Aliyun took, as E.164."""
        return Counter(
            "+86" + d["PhoneNum"] if len(d["PhoneNum"]) == 11 else "+" + d["PhoneNum"]
            for d in self.aliyun.details
        )


@asynccontextmanager
async def vendors() -> AsyncIterator[Fakes]:
    fakes = Fakes()
    async with AsyncExitStack() as stack:
        for name, app in [
            ("tencent", fakes.tencent.app),
            ("aliyun", fakes.aliyun.app),
            ("twilio", fakes.twilio.app),
        ]:
            fakes.urls[name] = await stack.enter_async_context(serve(app))
        yield fakes
        # A stalled fake lets its requests go, so the servers can stop.
        for controls in (fakes.tencent.controls, fakes.aliyun.controls):
            controls.release()


def cn_numbers(count: int) -> list[str]:
    return [f"+86138{i:08d}" for i in range(count)]


async def routes_client(
    make_server: ServerFactory,
    connect: Connect,
    fakes: Fakes,
    tmp_path: Path,
    routes: str,
    **settings: Any,
) -> Client:
    """A client of a server whose providers file names the three fakes and
    ``routes``, with the shipped template made; ``settings`` go to the server."""
    server = await make_server(
        providers_file=fakes.providers_file(tmp_path / "providers.toml", routes), **settings
    )
    client = await connect(server)
    await shipped_template(client)
    return client


async def batch_send(client: Client, phones: list[str]) -> list[str]:
    """BatchSend the shipped template to ``phones``, 1,000 per call; the ids."""
    ids: list[str] = []
    for start in range(0, len(phones), 1000):
        reply = await client.sms.BatchSend(
            pb.BatchSendRequest(
                recipients=[
                    pb.BatchRecipient(phone_number=p) for p in phones[start : start + 1000]
                ],
                template=shipped(),
            ),
            metadata=client.meta,
            timeout=60,
        )
        assert reply.rejected_count == 0
        ids += [r.message_id for r in reply.results]
    return ids


async def count_statuses(client: Client) -> Counter[str]:
    """How many of the app's messages are in each status (ListMessages, all pages)."""
    counts: Counter[str] = Counter()
    token = ""
    while True:
        page = await client.sms.ListMessages(
            pb.ListMessagesRequest(page_size=500, page_token=token), metadata=client.meta
        )
        counts.update(S.Name(m.status) for m in page.messages)
        token = page.next_page_token
        if not token:
            return counts


def assert_paced(
    taken: list[tuple[float, int]], rate: float, burst: float, *, since: float
) -> None:
    """By each send of ``taken`` (time it reached the fake, messages), at most
    the bucket (``burst`` messages) plus ``rate`` a second since ``since``, a
    time before the first send was let go, had reached it. One-sided: a send
    reaches the fake some time after the pace let it go, so a slow machine
    only makes the bound easier to keep; only a wrong pace can break it (10 ms
    given for Redis's millisecond clock against this process's)."""
    total = 0
    for at, count in sorted(taken):
        total += count
        allowed = burst + rate * (at - since + 0.01)
        assert total <= allowed, f"{total} messages {at - since:.3f} s in (allowed {allowed:g})"


def deferrals_counted() -> float:
    """This process's count of Twilio sends put off by its pace (metrics)."""
    labels = {"provider": "twilio", "outcome": "defer"}
    return REGISTRY.get_sample_value("smsgate_send_outcomes_total", labels) or 0.0


async def post(url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, **kwargs)  # type: ignore[arg-type]


# --- weights -----------------------------------------------------------------


async def test_a_70_30_route_splits_2000_messages_within_tolerance(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = (
            '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
            "weights = [70, 30]\n"
        )
        client = await routes_client(make_server, connect, fakes, tmp_path, routes)
        phones = cn_numbers(2000)

        await batch_send(client, phones)
        await wait_until(
            lambda: asyncio.sleep(0, fakes.tencent_numbers() + fakes.aliyun_numbers()),
            lambda taken: sum(taken.values()) >= 2000,
            what="2,000 numbers taken by Tencent and Aliyun together",
            timeout=30,
            describe=lambda taken: f"{sum(taken.values())} taken",
        )

    tencent, aliyun = fakes.tencent_numbers(), fakes.aliyun_numbers()
    # Each number once, at one vendor.
    assert set(tencent) | set(aliyun) == set(phones)
    assert not set(tencent) & set(aliyun)
    assert max((tencent + aliyun).values()) == 1
    # 70% of 2,000 is 1,400, with a standard deviation of about 20.5: five of them.
    assert 1300 <= len(tencent) <= 1500, (len(tencent), len(aliyun))


# --- failover ------------------------------------------------------------------


@pytest.mark.cluster
async def test_a_permanent_refusal_at_tencent_fails_over_to_aliyun_with_both_attempts_in_history(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.call_error = SIGN_REFUSED
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        client = await routes_client(make_server, connect, fakes, tmp_path, routes)

        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        message = await client.wait(reply.message.id, {S.MESSAGE_STATUS_SENT})

    assert (message.provider, message.attempts) == ("aliyun", 2)
    assert len(fakes.tencent.calls) == 1
    assert fakes.aliyun_numbers() == Counter({CN: 1})
    assert [h.status for h in message.history] == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_SENT,
    ]
    refused, sent = message.history[2].detail, message.history[4].detail
    assert refused.startswith(f"tencent refused {SIGN_REFUSED}: failover to the next provider")
    assert "route CN: tencent, aliyun" in refused
    assert sent.startswith("aliyun ") and "route CN: aliyun" in sent


async def test_a_throttled_account_fails_over_to_the_next_provider(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.twilio.throttled = 1
        routes = '[[routes]]\ndestination = "US"\nproviders = ["twilio", "simulator"]\n'
        server = await make_server(
            providers_file=fakes.providers_file(tmp_path / "providers.toml", routes)
        )
        client = await connect(server)

        # The simulator reports delivery at once.
        message = await client.wait(
            await client.text(US), {S.MESSAGE_STATUS_SENT, S.MESSAGE_STATUS_DELIVERED}
        )

    assert (message.provider, message.attempts) == ("simulator", 2)
    assert len(fakes.twilio.messages) == 1
    assert message.history[2].detail.startswith("twilio refused 20429: failover")


async def test_routes_skip_a_provider_whose_breaker_opened(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        # Tencent's gateway fails every call: retried, until its breaker opens.
        fakes.tencent.controls.server_errors = [502] * 100
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        client = await routes_client(
            make_server,
            connect,
            fakes,
            tmp_path,
            routes,
            breaker_consecutive_failures=2,
            retry_base_seconds=0.01,
            retry_max_seconds=0.02,
        )

        first = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        sent = await client.wait(first.message.id, {S.MESSAGE_STATUS_SENT})
        later = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number="+8613800138001", template=shipped("B2")),
            metadata=client.meta,
        )
        skipped = await client.wait(later.message.id, {S.MESSAGE_STATUS_SENT})

    # Two failed calls opened it; the retry and the next message went to Aliyun.
    assert (sent.provider, sent.attempts) == ("aliyun", 3)
    assert (skipped.provider, skipped.attempts) == ("aliyun", 1)
    assert 100 - len(fakes.tencent.controls.server_errors) == 2
    assert fakes.aliyun_numbers() == Counter({CN: 1, "+8613800138001": 1})


async def test_a_route_whose_every_breaker_is_open_retries_then_fails_providers_unavailable(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.controls.server_errors = [502] * 100
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent"]\n'
        client = await routes_client(
            make_server,
            connect,
            fakes,
            tmp_path,
            routes,
            breaker_consecutive_failures=2,
            max_attempts=4,
            retry_base_seconds=0.01,
            retry_max_seconds=0.02,
        )

        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        message = await client.wait(reply.message.id, ENDED)

    # Two calls failed and opened the breaker; the last two attempts found it
    # open and made no call.
    assert 100 - len(fakes.tencent.controls.server_errors) == 2
    assert (message.status, message.error.code, message.attempts) == (
        S.MESSAGE_STATUS_FAILED,
        "PROVIDERS_UNAVAILABLE",
        4,
    )
    assert message.error.reason == "breaker open for tencent (gave up after 4 attempts)"


async def test_a_refusal_about_the_recipient_ends_the_message_without_failover(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.number_codes[CN] = "InvalidParameterValue.IncorrectPhoneNumber"
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        client = await routes_client(make_server, connect, fakes, tmp_path, routes)

        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        message = await client.wait(reply.message.id, ENDED)

    assert message.status == S.MESSAGE_STATUS_FAILED
    assert message.error.code == "InvalidParameterValue.IncorrectPhoneNumber"
    assert fakes.aliyun.calls == []


async def test_every_provider_refusing_fails_the_message_naming_each_code(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.call_error = SIGN_REFUSED
        fakes.aliyun.call_error = ("isv.AMOUNT_NOT_ENOUGH", "账户余额不足")
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        client = await routes_client(make_server, connect, fakes, tmp_path, routes)

        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        message = await client.wait(reply.message.id, ENDED)

    assert (message.status, message.error.code) == (
        S.MESSAGE_STATUS_FAILED,
        "ALL_PROVIDERS_REFUSED",
    )
    assert f"tencent {SIGN_REFUSED}, aliyun isv.AMOUNT_NOT_ENOUGH" in message.error.reason


@pytest.mark.cluster
async def test_a_tencent_timeout_never_fails_over_and_ends_outcome_unknown(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.controls.stalled = True
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        server = await make_server(
            providers_file=fakes.providers_file(
                tmp_path / "providers.toml", routes, tencent_timeout=0.3
            ),
            receipt_timeout_seconds=2.0,
            reconcile_after_seconds=0.5,
        )
        client = await connect(server)
        await shipped_template(client)

        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        sent = await client.wait(reply.message.id, {S.MESSAGE_STATUS_SENT})
        ended = await client.wait(reply.message.id, ENDED)

    assert (sent.provider, sent.provider_message_id) == ("tencent", "")
    # One call written to Tencent, none to Aliyun: the message may have gone out.
    assert len(fakes.tencent.calls) == 1
    assert fakes.aliyun.calls == []
    # Tencent was asked about it (pull reconciliation) and never knew.
    assert fakes.tencent.pulls >= 1
    assert (ended.status, ended.error.code) == (S.MESSAGE_STATUS_EXPIRED, "OUTCOME_UNKNOWN")
    assert "may or may not have reached the phone" in ended.error.reason
    assert ended.attempts == 1


async def test_a_send_cut_off_at_tencent_never_goes_to_aliyun_when_tencents_breaker_opens(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.controls.stalled = True
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        settings: dict[str, Any] = {
            "providers_file": fakes.providers_file(tmp_path / "providers.toml", routes),
            "breaker_consecutive_failures": 1,
            "receipt_timeout_seconds": 2.0,
            "reconcile_after_seconds": 0.5,
        }
        api = await make_server(role="api", **settings)
        client = await connect(api)
        await shipped_template(client)
        first = await make_server(role="worker", **settings)
        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        await wait_until(
            lambda: asyncio.sleep(0, len(fakes.tencent.calls)), what="the call at Tencent"
        )
        # Meanwhile a timeout at Tencent (another call's, as the gate records it)
        # opens its breaker; then the worker stops with the call still out.
        assert first.dispatcher is not None
        timeout = RecipientResult(OutcomeClass.UNKNOWN, "", "PROVIDER_TIMEOUT")
        await first.dispatcher.gate.record("tencent", [timeout])
        assert await first.dispatcher.gate.usable(["tencent", "aliyun"]) == ["aliyun"]
        await first.stop()

        await make_server(role="worker", **settings)
        ended = await client.wait(reply.message.id, ENDED)

    # Tencent may have it: Aliyun never got it.
    assert len(fakes.tencent.calls) == 1
    assert fakes.aliyun.calls == []
    assert (ended.status, ended.error.code, ended.provider) == (
        S.MESSAGE_STATUS_EXPIRED,
        "OUTCOME_UNKNOWN",
        "tencent",
    )
    assert ended.history[2].detail == "tencent outcome unknown (route CN: tencent)"
    assert ended.attempts == 1


async def test_a_reclaimed_message_handed_to_tencent_stays_there_with_its_breaker_open(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        settings: dict[str, Any] = {
            "providers_file": fakes.providers_file(tmp_path / "providers.toml", routes),
            "breaker_consecutive_failures": 1,
            "receipt_timeout_seconds": 2.0,
            "reconcile_after_seconds": 0.5,
            "visibility_timeout_seconds": 0.3,
        }
        api = await make_server(role="api", **settings)
        client = await connect(api)
        await shipped_template(client)
        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
        )
        # A worker that died during its Tencent call, whose breaker opened since.
        message_id = reply.message.id
        shard = int(message_id[12:14], 16)
        queue = DispatchQueue(api.redis, shards=api.settings.shards)
        await queue.ensure_groups()
        entries = await queue.read(shard, "dead-worker", 10)
        claimed = await api.store.claim(shard, entries, reclaimed=False, max_attempts=5)
        assert await api.store.hand_over(shard, "tencent", claimed) == [True]
        worker = await make_server(role="worker", **settings)
        assert worker.dispatcher is not None
        timeout = RecipientResult(OutcomeClass.UNKNOWN, "", "PROVIDER_TIMEOUT")
        await worker.dispatcher.gate.record("tencent", [timeout])

        ended = await client.wait(message_id, ENDED)

    assert fakes.tencent.calls == []
    assert fakes.aliyun.calls == []
    assert (ended.status, ended.error.code, ended.provider) == (
        S.MESSAGE_STATUS_EXPIRED,
        "OUTCOME_UNKNOWN",
        "tencent",
    )


async def test_an_unknown_outcome_ends_outcome_unknown_and_a_silent_receipt_only_expires(
    make_server: ServerFactory, connect: Connect
) -> None:
    server = await make_server(receipt_timeout_seconds=0.5)
    client = await connect(server)

    # The simulator's numbers: no answer to the send; sent, and no receipt ever.
    unknown = await client.wait(await client.text("+12025550104"), ENDED)
    silent = await client.wait(await client.text("+12025550105"), ENDED)

    assert (unknown.status, unknown.error.code) == (S.MESSAGE_STATUS_EXPIRED, "OUTCOME_UNKNOWN")
    assert unknown.error.reason.startswith("simulator gave no answer (SIM_NO_ANSWER)")
    assert (unknown.attempts, unknown.history[-1].detail) == (1, "OUTCOME_UNKNOWN")
    assert (silent.status, silent.error.code) == (S.MESSAGE_STATUS_EXPIRED, "")


# --- skipping what a vendor cannot send ----------------------------------------


async def test_free_text_skips_a_templates_only_vendor_of_its_route(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = '[[routes]]\ndestination = "default"\nproviders = ["tencent", "twilio"]\n'
        server = await make_server(
            providers_file=fakes.providers_file(tmp_path / "providers.toml", routes)
        )
        client = await connect(server)

        message = await client.wait(await client.text(CN), {S.MESSAGE_STATUS_SENT})

    assert message.provider == "twilio"
    assert fakes.tencent.calls == []
    assert [m["To"] for m in fakes.twilio.messages] == [CN]
    assert "route default: twilio" in message.history[-1].detail


async def test_a_message_no_route_can_take_fails_with_no_route(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent"]\n'
        server = await make_server(
            providers_file=fakes.providers_file(tmp_path / "providers.toml", routes)
        )
        client = await connect(server)

        free_text = await client.wait(await client.text(CN), ENDED)
        elsewhere = await client.wait(await client.text(US), ENDED)

    assert (free_text.status, free_text.error.code) == (S.MESSAGE_STATUS_FAILED, "NO_ROUTE")
    assert "tencent sends templates only" in free_text.error.reason
    assert (elsewhere.error.code, elsewhere.error.reason) == ("NO_ROUTE", "no route for US")
    assert fakes.tencent.calls == [] and fakes.twilio.messages == []


async def test_a_bad_route_refuses_to_start_naming_the_key(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "alyun"]\n'
        path = fakes.providers_file(tmp_path / "providers.toml", routes)

        with pytest.raises(StartError, match=r"routes\[0\]\.providers\[1\]: 'alyun' is not"):
            await make_server(providers_file=path)


# --- issue 13, done when -----------------------------------------------------------


async def test_5000_through_the_working_vendor_of_a_route_with_zero_double_sends(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.call_error = SIGN_REFUSED
        routes = (
            '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
            '[prices.aliyun]\ncurrency = "CNY"\nCN = "0.045"\n'
            '[prices.tencent]\ncurrency = "CNY"\nCN = "0.04"\n'
        )
        # The Aliyun account's rate: 2,000 messages a second, a second's worth at once.
        rate = "rate_messages_per_second = 2000\nrate_burst_seconds = 1\n"
        server = await make_server(
            providers_file=fakes.providers_file(
                tmp_path / "providers.toml", routes, aliyun_extra=rate
            )
        )
        client = await connect(server)
        await shipped_template(client)
        phones = cn_numbers(5000)

        await batch_send(client, phones)
        await wait_until(
            lambda: asyncio.sleep(0, fakes.aliyun_numbers()),
            lambda taken: len(taken) >= 5000,
            what="5,000 numbers taken by Aliyun",
            timeout=60,
            describe=lambda taken: f"{len(taken)} taken",
        )
        # Aliyun reports each delivered, as its SmsReport push does.
        now = beijing(int(time.time() * 1000))
        reports = [
            {
                "phone_number": d["PhoneNum"],
                "send_time": d["SendDate"],
                "report_time": now,
                "success": True,
                "err_code": "DELIVERED",
                "err_msg": "用户接收成功",
                "sms_size": "1",
                "biz_id": d["BizId"],
                "out_id": d["OutId"],
            }
            for d in fakes.aliyun.details
        ]
        for start in range(0, len(reports), 1000):
            reply = await post(
                f"http://127.0.0.1:{server.http_port}/receipts/aliyun/{TOKEN}",
                content=json.dumps(reports[start : start + 1000], ensure_ascii=False).encode(),
                headers={"content-type": "application/json"},
            )
            assert reply.json() == {"code": 0, "msg": "成功"}
        statuses = await wait_until(
            lambda: count_statuses(client),
            lambda counts: counts["MESSAGE_STATUS_DELIVERED"] == 5000,
            what="5,000 messages DELIVERED",
            timeout=60,
        )
        day = datetime.now(UTC).date()
        usage = await client.usage.GetUsage(
            upb.GetUsageRequest(start_date=str(day - timedelta(days=1)), end_date=str(day)),
            metadata=client.meta,
        )

    assert statuses == Counter({"MESSAGE_STATUS_DELIVERED": 5000})
    # Zero double sends: every number taken once, by Aliyun only.
    assert fakes.aliyun_numbers() == Counter(dict.fromkeys(phones, 1))
    assert fakes.tencent_numbers() == Counter()
    # The account's rate held at the fake: 5,000 took at least 1.5 s after the
    # burst. Each message went to Tencent first: Aliyun took none before the
    # first call to Tencent.
    assert_paced(fakes.aliyun.taken, rate=2000, burst=2000, since=min(fakes.tencent.times))
    # What it cost: 5,000 one-segment messages at Aliyun's price, none at Tencent's.
    [total] = usage.totals
    assert (total.currency_code, total.messages, Decimal(total.cost)) == (
        "CNY",
        5000,
        Decimal("225"),
    )
    assert {(r.provider, r.status) for r in usage.rows if r.messages} == {
        ("aliyun", S.MESSAGE_STATUS_SENT),
        ("aliyun", S.MESSAGE_STATUS_DELIVERED),
    }


async def test_a_pace_wait_puts_the_message_back_in_the_queue_without_an_attempt(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        routes = '[[routes]]\ndestination = "US"\nproviders = ["twilio"]\n'
        rate = "rate_messages_per_second = 1\nrate_burst_seconds = 1\n"
        server = await make_server(
            providers_file=fakes.providers_file(
                tmp_path / "providers.toml", routes, twilio_extra=rate
            )
        )
        client = await connect(server)
        phones = [f"+1415555{i:04d}" for i in range(3)]
        deferred = deferrals_counted()

        started = time.monotonic()
        ids = [await client.text(phone) for phone in phones]
        sent = await wait_for_statuses(
            client.sms, client.token, ids, {S.MESSAGE_STATUS_SENT}, timeout=20
        )

    # Twilio takes one number a call: one went at once, the others waited
    # for their turn in the due set, each sent once, a second apiece: the
    # third no sooner than two seconds after the first was accepted.
    assert sorted(m["To"] for m in fakes.twilio.messages) == phones
    assert_paced([(t, 1) for t in fakes.twilio.times], rate=1, burst=1, since=started)
    assert [m.attempts for m in sent.values()] == [1, 1, 1]
    waited = [h.detail for m in sent.values() for h in m.history if "waits for twilio" in h.detail]
    assert len(waited) >= 2
    assert deferrals_counted() - deferred == len(waited)


# --- issue 12, done when -----------------------------------------------------------


async def test_buf_curl_sends_cn_through_tencent_and_us_through_twilio_both_delivered(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    public = "https://sms.example.com"
    async with vendors() as fakes:
        routes = (
            '[[routes]]\ndestination = "CN"\nproviders = ["tencent"]\n'
            '[[routes]]\ndestination = "US"\nproviders = ["twilio"]\n'
        )
        providers = fakes.providers_file(tmp_path / "providers.toml", routes)
        providers.write_text(
            providers.read_text(encoding="utf-8").replace(
                'from_number = "+15005550006"\n',
                f'from_number = "+15005550006"\nstatus_callback = "{public}/receipts/twilio"\n',
            ),
            encoding="utf-8",
        )
        server = await make_server(providers_file=providers, public_base_url=public)
        client = await connect(server)
        await shipped_template(client)
        url = f"http://127.0.0.1:{server.grpc_port}/smsgate.v1.SmsService/SendSms"
        auth = f"authorization: Bearer {client.token}"
        bodies = [
            {"phone_number": CN, "template": {"template_id": "shipped", "params": {"order": "A1"}}},
            {"phone_number": US, "text": "Your order has shipped"},
        ]
        ids = []
        for body in bodies:
            code, out, err = await buf_curl("-H", auth, "-d", json.dumps(body), url)
            assert code == 0, err
            ids.append(json.loads(out)["message"]["id"])
        cn, us = [await client.wait(i, {S.MESSAGE_STATUS_SENT}) for i in ids]

        # Each vendor reports delivery to its receipt endpoint.
        tencent_reports = fakes.tencent.status_callbacks(since=0)
        reply = await post(
            f"http://127.0.0.1:{server.http_port}/receipts/tencent/{TOKEN}", json=tencent_reports
        )
        assert reply.json() == {"result": 0, "errmsg": "OK"}
        form = {
            "AccountSid": fakes.twilio.account_sid,
            "MessageSid": us.provider_message_id,
            "MessageStatus": "delivered",
            "To": US,
        }
        signature = twilio_signature(
            fakes.twilio.auth_token, f"{public}/receipts/twilio", form.items()
        )
        reply = await post(
            f"http://127.0.0.1:{server.http_port}/receipts/twilio",
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signature,
            },
        )
        assert reply.is_success, reply.text
        delivered = [await client.wait(i, {S.MESSAGE_STATUS_DELIVERED}) for i in ids]

    assert [(m.provider, m.status) for m in delivered] == [
        ("tencent", S.MESSAGE_STATUS_DELIVERED),
        ("twilio", S.MESSAGE_STATUS_DELIVERED),
    ]
    assert (cn.provider, us.provider) == ("tencent", "twilio")
    assert [m["To"] for m in fakes.twilio.messages] == [US]
    assert [c["PhoneNumberSet"] for c in fakes.tencent.calls] == [[CN]]
