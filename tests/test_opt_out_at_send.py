"""Opt-outs hold at send time too: a marketing message held for quiet hours or
scheduled, whose number opts out before it goes, ends FAILED with the reason a
send to that number is refused with, and is never handed to the vendor;
notifications and verification codes queued the same way still go.

Real Redis, real servers: an API-only server accepts and holds the messages, so
the opt-out lands before any worker exists; a worker started after it sends
(the simulator logs every message it is handed). Quiet hours need time to
pass, so that test drives the sending service and the dispatcher in this
process on one injected clock."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import opt_out_service_pb2 as opb
from smsgate.v1 import opt_out_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.config import Settings
from smsgate_server.dispatch.dispatcher import DispatchConfig, Dispatcher
from smsgate_server.domain.message import StoredMessage
from smsgate_server.domain.policy import OPTED_OUT
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.status import Status
from smsgate_server.domain.templates import Template, TemplateKind
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.services.composing import Composer, TemplateRef
from smsgate_server.services.policy import PolicySettings, SendingPolicy
from smsgate_server.services.sending import SendCommand, SendingService, SendLimits
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.policy import PolicyStore
from smsgate_server.store.queue import DispatchQueue
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore

from tests.conftest import ServerFactory
from tests.pipeline_support import TERMINAL, S, sent_counts, wait_for_statuses
from tests.test_sending_by_template import Api
from tests.waiting import wait_until

OUT = "+14155552671"  # opts out while its messages wait
IN = "+14155552672"  # never opts out
CN = "+8613800138000"  # held for Shanghai's quiet hours, opts out meanwhile
CN2 = "+8613800138001"  # held likewise, never opts out
CN_ZONE = ZoneInfo("Asia/Shanghai")


class HeldApi(Api):
    """One app's stubs on a server that accepts but never sends."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        super().__init__(channel, token)
        self.optouts = opt_out_service_pb2_grpc.OptOutServiceStub(channel)


@pytest.fixture
async def api(make_server: ServerFactory) -> AsyncIterator[HeldApi]:
    """An app on an API-only server, with a sign, a marketing, a notification
    and a verification template."""
    server = await make_server(role="api")
    token = (await server.apps.create("held")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        api = HeldApi(channel, token)
        await api.sign("Acme", default=True)
        await api.template(id="promo", kind=tpb.TEMPLATE_KIND_MARKETING, body="Sale today")
        await api.template(id="order", kind=tpb.TEMPLATE_KIND_NOTIFICATION, body="Order shipped")
        await api.template(id="otp", kind=tpb.TEMPLATE_KIND_VERIFICATION, body="Code {code}")
        yield api


def soon(seconds: float = 1.0) -> Timestamp:
    at = Timestamp()
    at.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return at


async def scheduled(api: HeldApi, phone: str, **content: Any) -> str:
    request = pb.SendSmsRequest(phone_number=phone, send_time=soon(), **content)
    message = (await api.sms.SendSms(request, metadata=api.meta)).message
    assert message.status == S.MESSAGE_STATUS_SCHEDULED
    return message.id


async def opt_out(api: HeldApi, phone: str) -> None:
    request = opb.AddOptOutRequest(phone_number=phone)
    assert (await api.optouts.AddOptOut(request, metadata=api.meta)).added


@pytest.mark.cluster
async def test_scheduled_marketing_to_a_number_that_opted_out_since_fails_unsent(
    api: HeldApi, make_server: ServerFactory, tmp_path: Path
) -> None:
    marketing = tpb.TEMPLATE_KIND_MARKETING
    promo = await scheduled(api, OUT, template=mpb.TemplateContent(template_id="promo"))
    text = await scheduled(api, OUT, text="Sale today, free text", kind=marketing)
    still_in = await scheduled(api, IN, template=mpb.TemplateContent(template_id="promo"))
    batch = await api.sms.BatchSend(
        pb.BatchSendRequest(
            recipients=[pb.BatchRecipient(phone_number=p) for p in (IN, OUT)],
            template=mpb.TemplateContent(template_id="promo"),
            send_time=soon(),
        ),
        metadata=api.meta,
    )
    batch_in, batch_out = (r.message_id for r in batch.results)

    await opt_out(api, OUT)
    log = tmp_path / "sim.log"
    await make_server(role="worker", sim_log=log)
    ids = [promo, text, still_in, batch_in, batch_out]
    final = await wait_for_statuses(api.sms, api.token, ids, TERMINAL)

    for unsent in (promo, text, batch_out):
        message = final[unsent]
        assert message.status == S.MESSAGE_STATUS_FAILED
        assert (message.error.code, message.error.reason) == ("RECIPIENT_OPTED_OUT", OPTED_OUT)
        assert not message.error.retryable and not message.provider
    assert final[still_in].status == final[batch_in].status == S.MESSAGE_STATUS_DELIVERED
    await asyncio.sleep(0.2)  # a stray send would have reached the simulator by now
    assert set(sent_counts(log)) == {still_in, batch_in}


async def test_notifications_and_codes_queued_before_an_opt_out_still_go(
    api: HeldApi, make_server: ServerFactory, tmp_path: Path
) -> None:
    order = await scheduled(api, OUT, template=mpb.TemplateContent(template_id="order"))
    text = await scheduled(api, OUT, text="Your order shipped")
    code = await api.verification.GenerateCode(
        vpb.GenerateCodeRequest(
            phone_number=OUT, scope="login", delivery=vpb.CODE_DELIVERY_SMS, template_id="otp"
        ),
        metadata=api.meta,
    )

    await opt_out(api, OUT)
    log = tmp_path / "sim.log"
    await make_server(role="worker", sim_log=log)
    ids = [order, text, code.message_id]
    final = await wait_for_statuses(api.sms, api.token, ids, TERMINAL)

    assert {m.status for m in final.values()} == {S.MESSAGE_STATUS_DELIVERED}
    assert set(sent_counts(log)) == set(ids)


# --- quiet hours, on an injected clock ----------------------------------------


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=8)
    yield connection
    await connection.aclose()


async def test_marketing_held_for_quiet_hours_fails_unsent_if_the_number_opts_out_meanwhile(
    redis: RedisConnection, tmp_path: Path
) -> None:
    # 22:30 in Shanghai: quiet until 08:00 there.
    clock = Clock(datetime(2026, 3, 2, 22, 30, tzinfo=CN_ZONE))
    settings = Settings(
        policy_same_content_seconds=0, policy_per_number_day=0, policy_quiet_hours="21:00-08:00"
    )
    store = MessageStore(
        redis.client, shards=2, event_retention_seconds=3600, message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600, receipt_timeout_seconds=3600, schedule_max_days=35,
        max_message_age_seconds=86_400, clock=clock,
    )  # fmt: skip
    optouts = OptOutStore(redis.client)
    await SignStore(redis.client).create("app", "Acme", now_ms=0, make_default=True)
    templates = TemplateStore(redis.client, idempotency_ttl_seconds=3600)
    for id, kind in (("promo", TemplateKind.MARKETING), ("order", TemplateKind.NOTIFICATION)):
        await templates.create("app", Template(id=id, version=1, kind=kind, body="Sale today"))
    sending = SendingService(
        store, SendLimits.from_settings(settings), TokenSealer(b"k" * 32),
        texts=TextCipher(b"k" * 32), composer=Composer(templates, SignStore(redis.client)),
        policy=SendingPolicy(
            PolicyStore(redis.client), PolicySettings.from_settings(settings), b"s" * 32,
            clock=clock,
        ),
    )  # fmt: skip

    async def send(template: str, phone: str = CN) -> str:
        command = SendCommand(phone=phone, text="", template=TemplateRef(template))
        return (await sending.send("app", command)).id

    held, held_in, order = await send("promo"), await send("promo", CN2), await send("order")
    assert (await sending.get("app", held)).status is Status.SCHEDULED
    assert await optouts.add("app", CN)

    log = tmp_path / "sim.log"
    dispatcher = Dispatcher(
        store,
        DispatchQueue(redis, shards=2),
        SimulatorProvider(latency_ms=0, receipt_delay_ms=0, log_path=log),
        config=DispatchConfig.from_settings(settings),
        texts=TextCipher(b"k" * 32),
        optouts=optouts,
    )
    await dispatcher.start()
    try:
        # 08:00 in Shanghai: the quiet hours end and the held messages go.
        clock.now = datetime(2026, 3, 3, 8, 0, tzinfo=CN_ZONE).timestamp()
        final = await wait_until(
            lambda: asyncio.gather(*(sending.get("app", i) for i in (held, held_in, order))),
            lambda messages: all(m.status.terminal for m in messages),
            what="the held messages to end",
            describe=lambda messages: ", ".join(m.status.name for m in messages),
        )
    finally:
        await dispatcher.stop(grace=1.0)

    promo_out, promo_in, notification = final
    assert promo_out.status is Status.FAILED
    assert (promo_out.error_code, promo_out.error_reason) == ("RECIPIENT_OPTED_OUT", OPTED_OUT)
    assert promo_in.status is notification.status is Status.DELIVERED
    assert set(sent_counts(log)) == {held_in, order}


async def test_marketing_whose_opt_outs_cannot_be_read_waits_without_spending_attempts(
    redis: RedisConnection, tmp_path: Path
) -> None:
    # One attempt allowed: a lookup failure that spent it would end the message.
    settings = Settings(
        policy_same_content_seconds=0, policy_per_number_day=0, policy_quiet_hours="off",
        max_attempts=1, retry_base_seconds=0.05, retry_max_seconds=0.1,
    )  # fmt: skip
    store = MessageStore(
        redis.client, shards=2, event_retention_seconds=3600, message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600, receipt_timeout_seconds=3600, schedule_max_days=35,
        max_message_age_seconds=86_400,
    )  # fmt: skip
    await SignStore(redis.client).create("app", "Acme", now_ms=0, make_default=True)
    templates = TemplateStore(redis.client, idempotency_ttl_seconds=3600)
    await templates.create(
        "app", Template(id="promo", version=1, kind=TemplateKind.MARKETING, body="Sale today")
    )
    sending = SendingService(
        store, SendLimits.from_settings(settings), TokenSealer(b"k" * 32),
        texts=TextCipher(b"k" * 32), composer=Composer(templates, SignStore(redis.client)),
        policy=SendingPolicy(
            PolicyStore(redis.client), PolicySettings.from_settings(settings), b"s" * 32
        ),
    )  # fmt: skip
    command = SendCommand(phone=IN, text="", template=TemplateRef("promo"))
    promo = (await sending.send("app", command)).id
    log = tmp_path / "sim.log"

    def dispatcher(optouts: OptOutStore) -> Dispatcher:
        return Dispatcher(
            store,
            DispatchQueue(redis, shards=2),
            SimulatorProvider(latency_ms=0, receipt_delay_ms=0, log_path=log),
            config=DispatchConfig.from_settings(settings),
            texts=TextCipher(b"k" * 32),
            optouts=optouts,
        )

    def unchecked(message: StoredMessage) -> int:
        return sum("OPT_OUT_UNCHECKED" in h.detail for h in message.history)

    # The opt-outs' Redis is away (nothing listens on its port; no retries).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    away = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    blind = dispatcher(OptOutStore(away))
    await blind.start()
    try:
        seen = await wait_until(
            lambda: sending.get("app", promo),
            lambda m: m.status.terminal or unchecked(m) >= 3,
            what="the message checked three times",
            describe=lambda m: f"{m.status.name}, {[h.detail for h in m.history]}",
        )
    finally:
        await blind.stop(grace=1.0)
        await away.aclose()
    assert not seen.status.terminal, (seen.error_code, seen.error_reason)
    assert seen.attempts <= 1
    assert sent_counts(log) == {}  # never sent unchecked

    # Once the list can be read, it goes, on its one attempt.
    sighted = dispatcher(OptOutStore(redis.client))
    await sighted.start()
    try:
        final = await wait_until(
            lambda: sending.get("app", promo),
            lambda m: m.status.terminal,
            what="the message to end",
            describe=lambda m: m.status.name,
        )
    finally:
        await sighted.stop(grace=1.0)
    assert (final.status, final.attempts) == (Status.DELIVERED, 1)
    assert set(sent_counts(log)) == {promo}
