"""Pull reconciliation: a SENT message whose receipt never comes is asked about
at its vendor (through the vendor's fake, signatures checked) and ends as the
vendor says; one the vendor has no final word on expires at the receipt timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import ValidationError
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sign_service_pb2 as spb
from smsgate.v1 import sign_service_pb2_grpc, sms_service_pb2_grpc, template_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate_server.config import Settings
from smsgate_server.domain.ids import shard_of_id
from smsgate_server.providers.base import OutboundBatch, Recipient, StatusQuery
from smsgate_server.providers.tencent import TencentConfig, TencentProvider
from smsgate_server.runtime import Running

from tests.conftest import ServerFactory
from tests.pipeline_support import wait_for_statuses
from tests.support import bearer
from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake
from tests.vendor_fakes.twilio import TwilioFake
from tests.waiting import wait_until

S = mpb.MessageStatus
US = "+14155550123"
CN = "+8613800138000"
# Asked about after 0.3 s without receipt; expired after 3 s.
FAST = {"reconcile_after_seconds": 0.3, "receipt_timeout_seconds": 3.0}


class Sender:
    """One app on one server: sends free text and waits for statuses."""

    def __init__(self, server: Running, channel: grpc.aio.Channel, token: str) -> None:
        self.server = server
        self.token = token
        self.sms = sms_service_pb2_grpc.SmsServiceStub(channel)

    async def text(self, phone: str) -> str:
        reply = await self.sms.SendSms(
            pb.SendSmsRequest(phone_number=phone, text="Your order has shipped"),
            metadata=bearer(self.token),
        )
        return reply.message.id

    async def by_template(self, phone: str) -> str:
        """Sends the ``notice`` template (see ``tencent``)."""
        reply = await self.sms.SendSms(
            pb.SendSmsRequest(
                phone_number=phone, template=mpb.TemplateContent(template_id="notice")
            ),
            metadata=bearer(self.token),
        )
        return reply.message.id

    async def wait(self, message_id: str, *statuses: mpb.MessageStatus.ValueType) -> mpb.Message:
        found = await wait_for_statuses(self.sms, self.token, [message_id], set(statuses))
        return found[message_id]


@pytest.fixture
async def twilio(
    make_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[TwilioFake, Sender]]:
    """A server sending through the Twilio fake, with no status callback (every
    receipt lost), and a client of a fresh app."""
    fake = TwilioFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url))
        server = await make_server(provider="twilio", providers_file=providers, **FAST)
        token = (await server.apps.create("reconcile-app")).token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            yield fake, Sender(server, channel, token)


async def sid_of(fake: TwilioFake, sender: Sender, message_id: str) -> str:
    message = await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
    sid = message.provider_message_id
    assert sid in fake.resources, (sid, list(fake.resources))
    return sid


async def test_twilio_a_lost_delivered_receipt_is_recovered(
    twilio: tuple[TwilioFake, Sender],
) -> None:
    fake, sender = twilio
    message_id = await sender.text(US)
    sid = await sid_of(fake, sender, message_id)
    fake.set_status(sid, "delivered")

    message = await sender.wait(message_id, S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert message.status == S.MESSAGE_STATUS_DELIVERED
    assert sid in fake.fetches


async def test_twilio_a_lost_undelivered_receipt_is_recovered_with_its_code(
    twilio: tuple[TwilioFake, Sender],
) -> None:
    fake, sender = twilio
    message_id = await sender.text(US)
    fake.set_status(await sid_of(fake, sender, message_id), "undelivered", 30003)

    message = await sender.wait(message_id, S.MESSAGE_STATUS_UNDELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert (message.status, message.error.code) == (S.MESSAGE_STATUS_UNDELIVERED, "30003")


async def test_twilio_no_final_word_leaves_it_sent_until_it_expires(
    twilio: tuple[TwilioFake, Sender],
) -> None:
    fake, sender = twilio
    message_id = await sender.text(US)
    sid = await sid_of(fake, sender, message_id)
    fake.set_status(sid, "sent")  # the carrier never reports

    # Asked about (more than once) while it waits, and still SENT.
    async def asked() -> int:
        return fake.fetches.count(sid)

    await wait_until(asked, lambda n: n >= 2, what="two status queries")
    assert (await sender.wait(message_id, S.MESSAGE_STATUS_SENT)).status == S.MESSAGE_STATUS_SENT

    message = await sender.wait(message_id, S.MESSAGE_STATUS_EXPIRED, S.MESSAGE_STATUS_DELIVERED)
    assert message.status == S.MESSAGE_STATUS_EXPIRED


async def test_twilio_a_send_of_unknown_outcome_is_found_by_number_and_time(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    fake = TwilioFake()
    # Twilio creates the message, then the answer never comes: our call times out.
    fake.controls.stalled = True
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url, "timeout_seconds = 0.3\n"))
        server = await make_server(provider="twilio", providers_file=providers, **FAST)
        token = (await server.apps.create("unknown-app")).token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            sender = Sender(server, channel, token)
            message_id = await sender.text(US)
            sent = await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
            assert sent.provider_message_id == ""
            fake.controls.release()
            [sid] = fake.resources
            fake.set_status(sid, "delivered")

            message = await sender.wait(
                message_id, S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED
            )

    assert message.status == S.MESSAGE_STATUS_DELIVERED
    assert len(fake.messages) == 1
    assert fake.lists and fake.lists[0]["To"] == US


async def test_a_message_is_picked_by_one_reconciler_per_interval(
    twilio: tuple[TwilioFake, Sender],
) -> None:
    fake, sender = twilio
    message_id = await sender.text(US)
    await sid_of(fake, sender, message_id)
    store = sender.server.store
    shard = shard_of_id(message_id, store.shards)
    assert shard is not None

    # Two replicas' claims at once: the script hands the message to one of them
    # and puts it back for the next interval (a minute here, so no tick of the
    # running server's reconciler takes it in between).
    async def claim_twice() -> list[str]:
        first, second = await asyncio.gather(
            store.claim_reconcile(shard, 100, 60_000), store.claim_reconcile(shard, 100, 60_000)
        )
        return [m.id for m in first + second if m.id == message_id]

    picked = await wait_until(claim_twice, what="the message claimed")
    assert picked == [message_id]


def test_reconcile_time_at_or_above_the_receipt_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="SMSGATE_RECONCILE_AFTER_SECONDS must be below"):
        Settings(reconcile_after_seconds=60, receipt_timeout_seconds=60)


def test_reconcile_time_defaults_below_a_short_receipt_timeout() -> None:
    assert Settings(receipt_timeout_seconds=10).reconcile_after == 5
    assert Settings().reconcile_after == 3600


async def add_notice_template(
    channel: grpc.aio.Channel, token: str, sign: str, provider: str, vendor_template: str
) -> None:
    """The app's default sign and a ``notice`` template the vendor knows."""
    meta = bearer(token)
    await sign_service_pb2_grpc.SignServiceStub(channel).CreateSignName(
        spb.CreateSignNameRequest(sign_name=spb.SignName(name=sign, is_default=True)),
        metadata=meta,
    )
    await template_service_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
        tpb.CreateTemplateRequest(
            template=tpb.Template(
                id="notice",
                kind=tpb.TEMPLATE_KIND_NOTIFICATION,
                body="您的订单已发货",
                provider_template_ids={provider: vendor_template},
            )
        ),
        metadata=meta,
    )


@pytest.fixture
async def tencent(
    make_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[TencentFake, Sender]]:
    """A server sending through the Tencent fake (no receipt is ever pushed), and
    a client of a fresh app with a ``notice`` template Tencent knows."""
    fake = TencentFake(templates={"1110001": 0})
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url))
        server = await make_server(provider="tencent", providers_file=providers, **FAST)
        token = (await server.apps.create("reconcile-app")).token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            await add_notice_template(channel, token, "腾讯云", "tencent", "1110001")
            yield fake, Sender(server, channel, token)


async def test_tencent_a_lost_delivered_receipt_is_pulled(
    tencent: tuple[TencentFake, Sender],
) -> None:
    fake, sender = tencent
    message_id = await sender.by_template(CN)
    await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
    fake.report(CN, True, "用户短信送达成功")

    message = await sender.wait(message_id, S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert message.status == S.MESSAGE_STATUS_DELIVERED
    assert fake.reports == []


async def test_tencent_a_lost_failure_receipt_is_pulled_with_its_words(
    tencent: tuple[TencentFake, Sender],
) -> None:
    fake, sender = tencent
    message_id = await sender.by_template(CN)
    await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
    fake.report(CN, False, "用户手机关机")

    message = await sender.wait(message_id, S.MESSAGE_STATUS_UNDELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert message.status == S.MESSAGE_STATUS_UNDELIVERED
    assert (message.error.code, message.error.reason) == ("FAIL", "用户手机关机")


async def test_tencent_no_report_leaves_it_sent_until_it_expires(
    tencent: tuple[TencentFake, Sender],
) -> None:
    fake, sender = tencent
    message_id = await sender.by_template(CN)
    await sender.wait(message_id, S.MESSAGE_STATUS_SENT)

    async def pulls() -> int:
        return fake.pulls

    await wait_until(pulls, lambda n: n >= 2, what="two pulls")
    assert (await sender.wait(message_id, S.MESSAGE_STATUS_SENT)).status == S.MESSAGE_STATUS_SENT

    message = await sender.wait(message_id, S.MESSAGE_STATUS_EXPIRED, S.MESSAGE_STATUS_DELIVERED)
    assert message.status == S.MESSAGE_STATUS_EXPIRED


@pytest.fixture
async def aliyun(
    make_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[AliyunFake, Sender]]:
    """A server sending through the Aliyun fake (no SmsReport is ever pushed), and
    a client of a fresh app with a ``notice`` template Aliyun knows."""
    fake = AliyunFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url))
        server = await make_server(provider="aliyun", providers_file=providers, **FAST)
        token = (await server.apps.create("reconcile-app")).token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            await add_notice_template(channel, token, "阿里云短信测试", "aliyun", "SMS_154950909")
            yield fake, Sender(server, channel, token)


def queries(fake: AliyunFake) -> list[dict[str, str]]:
    return [form for action, form in fake.calls if action == "QuerySendDetails"]


async def test_aliyun_a_lost_delivered_receipt_is_queried(
    aliyun: tuple[AliyunFake, Sender],
) -> None:
    fake, sender = aliyun
    message_id = await sender.by_template(CN)
    sent = await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
    fake.report("13800138000", True, "DELIVERED")

    message = await sender.wait(message_id, S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert message.status == S.MESSAGE_STATUS_DELIVERED
    # Asked by number, send day and BizId, as the vendor requires.
    query = queries(fake)[0]
    assert query["PhoneNumber"] == "13800138000"
    assert query["BizId"] == sent.provider_message_id.partition("/")[0]


async def test_aliyun_a_lost_failure_receipt_is_queried_with_its_code(
    aliyun: tuple[AliyunFake, Sender],
) -> None:
    fake, sender = aliyun
    message_id = await sender.by_template(CN)
    await sender.wait(message_id, S.MESSAGE_STATUS_SENT)
    fake.report("13800138000", False, "MK:0001")

    message = await sender.wait(message_id, S.MESSAGE_STATUS_UNDELIVERED, S.MESSAGE_STATUS_EXPIRED)

    assert (message.status, message.error.code) == (S.MESSAGE_STATUS_UNDELIVERED, "MK:0001")


async def test_aliyun_no_report_leaves_it_sent_until_it_expires(
    aliyun: tuple[AliyunFake, Sender],
) -> None:
    fake, sender = aliyun
    message_id = await sender.by_template(CN)
    await sender.wait(message_id, S.MESSAGE_STATUS_SENT)

    async def asked() -> int:
        return len(queries(fake))

    await wait_until(asked, lambda n: n >= 2, what="two queries")
    assert (await sender.wait(message_id, S.MESSAGE_STATUS_SENT)).status == S.MESSAGE_STATUS_SENT

    message = await sender.wait(message_id, S.MESSAGE_STATUS_EXPIRED, S.MESSAGE_STATUS_DELIVERED)
    assert message.status == S.MESSAGE_STATUS_EXPIRED


async def test_tencent_pull_matches_a_send_of_unknown_outcome_and_keeps_other_reports() -> None:
    fake = TencentFake(templates={"1110001": 0})
    other = "+8613900139000"
    async with serve(fake.app) as url, httpx.AsyncClient() as http:
        config = TencentConfig(fake.secret_id, fake.secret_key, fake.sdk_app_id, endpoint=url)
        tencent = TencentProvider(config, http=http)
        batch = OutboundBatch(
            "app1",
            (Recipient("msg-a", CN, "您的订单已发货"), Recipient("msg-b", other, "您的订单已发货")),
            "腾讯云",
            "",
            {"tencent": "1110001"},
        )
        await tencent.send_batch(batch)
        fake.report(CN, True, "用户短信送达成功")
        fake.report(other, False, "用户手机关机")

        # Asked about msg-a alone, with no SerialNo (its send's outcome was unknown).
        answer = await tencent.query_status([StatusQuery("msg-a", CN, "", 0)])

    [status] = answer.statuses
    assert status is not None and status.delivered
    # msg-b's report was handed out by the same pull: kept by its SerialNo.
    [(serial, other_status)] = answer.others
    assert serial == next(s["SerialNo"] for s in fake.sent if s["PhoneNumber"] == other)
    assert (other_status.delivered, other_status.reason) == (False, "用户手机关机")
    assert fake.reports == []
