"""The sending policy, against a real server and Redis: per-number frequency
caps, the app's daily cap and its metric, quiet hours for marketing (with an
injected clock where time must pass), opt-outs per recipient of a batch, and
a reason on every refusal. The other tests' servers run with the caps and
quiet hours off (tests/conftest.py); these turn them on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import redis.asyncio as aioredis
import smsgate
from prometheus_client import REGISTRY
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.cli import main as cli_main
from smsgate_server.config import Settings
from smsgate_server.domain.errors import (
    QuotaExceeded,
    RateLimited,
    Reason,
    SmsgateError,
    Unavailable,
)
from smsgate_server.domain.policy import (
    PolicyOverrides,
    QuietHours,
    policy_day,
    quiet_release_ms,
)
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.status import Status
from smsgate_server.domain.templates import Template, TemplateKind
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.runtime import Running
from smsgate_server.services.composing import Composer, TemplateRef
from smsgate_server.services.policy import PolicySettings, SendingPolicy
from smsgate_server.services.sending import BatchCommand, SendCommand, SendingService, SendLimits
from smsgate_server.store.apps import AppStore
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.policy import PolicyStore
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore

from tests.conftest import ServerFactory
from tests.test_sending_by_template import Api, fails

CN = "+8613800138000"
CN2 = "+8613800138001"
CN3 = "+8613800138002"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class PolicyApi(Api):
    """The stubs of one app on a server with the policy on, and the server."""

    def __init__(self, channel: grpc.aio.Channel, token: str, server: Running) -> None:
        super().__init__(channel, token)
        self.server = server
        self.app = token.partition(".")[0]


ApiFactory = Callable[..., Awaitable[PolicyApi]]


@pytest.fixture
async def make_api(make_server: ServerFactory) -> AsyncIterator[ApiFactory]:
    """A server with the vendors' default caps (quiet hours off unless given),
    policy settings overridden, and an app on it (with its own ``own`` values)."""
    channels: list[grpc.aio.Channel] = []

    async def factory(own: PolicyOverrides | None = None, **policy: Any) -> PolicyApi:
        settings = {
            "policy_same_content_seconds": 30,
            "policy_per_number_day": 10,
            "policy_quiet_hours": "off",
            **policy,
        }
        server = await make_server(**settings)
        creds = await server.apps.create("policy")
        if own is not None:
            assert await server.apps.set_policy(creds.app_key, own)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        channels.append(channel)
        return PolicyApi(channel, creds.token, server)

    yield factory
    for channel in channels:
        await channel.close()


async def send_text(api: Api, phone: str, text: str, **fields: Any) -> mpb.Message:
    request = pb.SendSmsRequest(phone_number=phone, text=text, **fields)
    return (await api.sms.SendSms(request, metadata=api.meta)).message


async def batch(api: Api, phones: list[str], **content: Any) -> pb.BatchSendResponse:
    request = pb.BatchSendRequest(
        recipients=[pb.BatchRecipient(phone_number=p) for p in phones], **content
    )
    return await api.sms.BatchSend(request, metadata=api.meta)


# --- frequency caps --------------------------------------------------------


async def test_the_same_content_twice_within_the_window_is_refused_with_retry_info(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    assert (await send_text(api, CN, "Your order shipped")).id

    details = await fails(send_text(api, CN, "Your order shipped"))

    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "SAME_CONTENT_TOO_SOON"
    assert details.retry_delay is not None and 0 < details.retry_delay <= 30
    # The number is named, masked.
    assert details.quota_subjects == ["phone:+86138******00:same_content"]


async def test_different_content_or_another_number_is_not_held_by_the_same_content_cap(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    assert (await send_text(api, CN, "Your order shipped")).id

    assert (await send_text(api, CN, "Your order was delivered")).id
    assert (await send_text(api, CN2, "Your order shipped")).id


async def test_a_number_gets_at_most_its_day_cap_of_messages(
    make_api: ApiFactory,
) -> None:
    api = await make_api(policy_per_number_day=3)
    for i in range(3):
        assert (await send_text(api, CN, f"update {i}")).id

    details = await fails(send_text(api, CN, "update 3"))

    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "PHONE_DAILY_CAP"
    _, day_left_ms = policy_day(int(datetime.now(UTC).timestamp() * 1000))
    assert details.retry_delay is not None and 0 < details.retry_delay <= day_left_ms / 1000 + 1
    assert details.quota_subjects == ["phone:+86138******00:day"]
    # Another number has its own count.
    assert (await send_text(api, CN2, "update 3")).id


async def test_verification_codes_are_not_held_by_the_per_number_caps(
    make_api: ApiFactory,
) -> None:
    api = await make_api(policy_per_number_day=1)
    assert (await send_text(api, CN, "update")).id
    await fails(send_text(api, CN, "another update"))

    for scope in ("login", "reset"):
        issued = await api.verification.GenerateCode(
            vpb.GenerateCodeRequest(phone_number=CN, scope=scope, delivery=vpb.CODE_DELIVERY_SMS),
            metadata=api.meta,
        )
        assert issued.message_id


async def test_a_retry_with_the_same_request_id_returns_the_first_message(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    first = await send_text(api, CN, "Your order shipped", request_id="r-1")

    again = await send_text(api, CN, "Your order shipped", request_id="r-1")

    assert again.id == first.id


@pytest.fixture
async def two_servers(make_server: ServerFactory) -> AsyncIterator[tuple[Api, Api]]:
    """One app on two servers of one Redis: one without the per-number caps
    (it runs no policy script, so remembers no verdicts), one with them."""
    plain = await make_server()
    capped = await make_server(policy_same_content_seconds=30, policy_per_number_day=10)
    token = (await plain.apps.create("two")).token
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") for server in (plain, capped)
    ]
    yield Api(channels[0], token), Api(channels[1], token)
    for channel in channels:
        await channel.close()


async def test_what_a_request_that_was_not_stored_counted_is_given_back(
    two_servers: tuple[Api, Api],
) -> None:
    plain, capped = two_servers
    await send_text(plain, CN, "first text", request_id="r-1")
    # The same request id with other content: the policy counts "second text"
    # (no verdicts remembered for r-1), then the accept refuses the request.
    details = await fails(send_text(capped, CN, "second text", request_id="r-1"))
    assert details.reason == "REQUEST_ID_REUSED"

    # Had the count stayed, this would be SAME_CONTENT_TOO_SOON.
    assert (await send_text(capped, CN, "second text")).id
    await fails(send_text(capped, CN, "second text"))


async def test_a_retry_answered_from_the_record_keeps_the_first_calls_counts(
    make_api: ApiFactory,
) -> None:
    api = await make_api(policy_app_daily_cap=1)
    first = await send_text(api, CN, "Your order shipped", request_id="r-1")
    assert (await send_text(api, CN, "Your order shipped", request_id="r-1")).id == first.id

    details = await fails(send_text(api, CN2, "Your parcel is out"))

    assert details.reason == "APP_DAILY_CAP"


async def listed(api: Api) -> int:
    reply = await api.sms.ListMessages(pb.ListMessagesRequest(), metadata=api.meta)
    return len(reply.messages)


async def test_a_send_stored_but_not_confirmed_by_a_replica_stays_counted(
    make_api: ApiFactory, redis_kind: str
) -> None:
    """On the standalone Redis (no replica) every accept is stored and none is
    confirmed: each answers UNAVAILABLE, yet is sent, so it must count."""
    if redis_kind == "cluster":
        pytest.skip("every cluster master has a replica: accepts are confirmed")
    api = await make_api(policy_app_daily_cap=1, redis_wait_replicas=1, redis_wait_timeout_ms=50)

    first = await fails(send_text(api, CN, "Your order shipped", request_id="r-1"))
    retried = await fails(send_text(api, CN, "Your order shipped", request_id="r-1"))
    same = await fails(send_text(api, CN, "Your order shipped"))
    other = await fails(send_text(api, CN2, "Your parcel is out"))

    for unconfirmed in (first, retried):
        assert unconfirmed.code == grpc.StatusCode.UNAVAILABLE
        assert unconfirmed.reason == "UNAVAILABLE"
        assert unconfirmed.message.startswith("stored, but 0 of 1 Redis replicas confirmed")
    assert same.reason == "SAME_CONTENT_TOO_SOON"
    assert other.reason == "APP_DAILY_CAP"
    assert await listed(api) == 1


async def test_a_batch_stored_but_not_confirmed_by_a_replica_stays_counted(
    make_api: ApiFactory, redis_kind: str
) -> None:
    if redis_kind == "cluster":
        pytest.skip("every cluster master has a replica: accepts are confirmed")
    api = await make_api(policy_app_daily_cap=2, redis_wait_replicas=1, redis_wait_timeout_ms=50)

    unconfirmed = await fails(batch(api, [CN, CN2], text="Your parcel is out"))
    other = await fails(send_text(api, CN3, "Your order shipped"))

    assert unconfirmed.code == grpc.StatusCode.UNAVAILABLE
    assert other.reason == "APP_DAILY_CAP"
    assert await listed(api) == 2


async def send_failing_once(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, failure: SmsgateError
) -> SendingService:
    """A service under an app daily cap of 1 whose first accept raises ``failure``."""
    sending, store = await clocked_service(
        redis_client, Clock(datetime.now(UTC)), policy_app_daily_cap=1
    )

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise failure

    with monkeypatch.context() as patched:
        patched.setattr(store, "accept", fail)
        with pytest.raises(type(failure)):
            await sending.send("app", SendCommand(phone=CN, text="Your order shipped"))
    return sending


async def test_a_send_redis_refused_as_full_gives_back_what_it_counted(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = RateLimited("full", retry_after=5.0, reason=Reason.STORAGE_FULL)
    sending = await send_failing_once(redis_client, monkeypatch, full)

    assert (await sending.send("app", SendCommand(phone=CN2, text="Your parcel is out"))).id


async def test_a_send_whose_redis_call_failed_keeps_what_it_counted(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection was lost after the script was sent: it may have run.
    lost = Unavailable("storage is unavailable; retry")
    sending = await send_failing_once(redis_client, monkeypatch, lost)

    with pytest.raises(QuotaExceeded) as refused:
        await sending.send("app", SendCommand(phone=CN2, text="Your parcel is out"))
    assert refused.value.reason is Reason.APP_DAILY_CAP


# --- the app's daily cap ---------------------------------------------------


def used_ratio(app: str) -> float | None:
    return REGISTRY.get_sample_value("smsgate_app_daily_cap_used_ratio", {"app": app})


def refusals(cap: str) -> float:
    return REGISTRY.get_sample_value("smsgate_policy_refusals_total", {"cap": cap}) or 0.0


async def test_the_app_daily_cap_refuses_beyond_it_and_its_use_is_a_metric(
    make_api: ApiFactory,
) -> None:
    api = await make_api(policy_app_daily_cap=4)
    before = refusals("app_daily_cap")
    await send_text(api, CN, "one")
    await send_text(api, CN2, "two")
    assert used_ratio(api.app) == 0.5

    reply = await batch(api, [CN, CN2, CN3], text="three")

    assert [r.WhichOneof("result") for r in reply.results] == ["message_id", "message_id", "error"]
    assert reply.results[2].error.reason == "APP_DAILY_CAP"
    assert used_ratio(api.app) == 1.0
    details = await fails(send_text(api, CN3, "four"))
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "APP_DAILY_CAP"
    assert details.retry_delay is not None and details.retry_delay > 0
    assert details.quota_subjects == [f"app:{api.app}:daily_messages"]
    assert refusals("app_daily_cap") == before + 2


async def test_an_apps_own_values_win_over_the_servers(make_api: ApiFactory) -> None:
    api = await make_api(PolicyOverrides(daily_cap=1, same_content_seconds=0))
    await send_text(api, CN, "one")

    details = await fails(send_text(api, CN2, "two"))

    assert details.reason == "APP_DAILY_CAP"


# --- opt-outs and kinds in a batch -----------------------------------------


@pytest.mark.cluster
async def test_a_marketing_batch_refuses_each_recipient_for_its_own_reason(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    await api.sign("Acme", default=True)
    await api.template(id="promo", kind=tpb.TEMPLATE_KIND_MARKETING, body="Sale today")
    await OptOutStore(api.server.redis.client).add(api.app, CN3)
    await api.send(CN2, "promo")

    reply = await batch(api, [CN, CN2, CN3], template=mpb.TemplateContent(template_id="promo"))

    assert reply.results[0].message_id
    assert reply.results[1].error.reason == "SAME_CONTENT_TOO_SOON"
    assert reply.results[2].error.reason == "RECIPIENT_OPTED_OUT"
    assert (reply.accepted_count, reply.rejected_count) == (1, 2)


async def test_notification_batches_still_reach_opted_out_numbers(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    await api.sign("Acme", default=True)
    await api.template(id="order", kind=tpb.TEMPLATE_KIND_NOTIFICATION, body="Order shipped")
    await OptOutStore(api.server.redis.client).add(api.app, CN3)

    reply = await batch(api, [CN, CN3], template=mpb.TemplateContent(template_id="order"))
    text = await batch(api, [CN2, CN3], text="Order shipped, free text")

    assert all(r.message_id for r in [*reply.results, *text.results])


async def test_free_text_named_marketing_honours_opt_outs_and_quiet_hours(
    make_api: ApiFactory,
) -> None:
    quiet, end = window_around(datetime.now(UTC), SHANGHAI)
    api = await make_api(policy_quiet_hours=quiet)
    await OptOutStore(api.server.redis.client).add(api.app, CN3)
    marketing = tpb.TEMPLATE_KIND_MARKETING

    held = await send_text(api, CN, "Sale today", kind=marketing)
    refused = await fails(send_text(api, CN3, "Sale today", kind=marketing))
    reply = await batch(api, [CN2, CN3], text="Sale tomorrow", kind=marketing)
    # Unnamed, free text is a notification: neither held nor refused.
    plain = await send_text(api, CN3, "Your order shipped")

    assert held.status == mpb.MESSAGE_STATUS_SCHEDULED
    assert held.send_time.ToDatetime(UTC) == end.astimezone(UTC)
    assert refused.reason == "RECIPIENT_OPTED_OUT"
    assert reply.results[0].message_id and reply.results[1].error.reason == "RECIPIENT_OPTED_OUT"
    assert plain.status != mpb.MESSAGE_STATUS_SCHEDULED


async def test_a_kind_free_text_cannot_have_is_invalid_naming_the_field(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    await api.sign("Acme", default=True)
    await api.template(id="order", kind=tpb.TEMPLATE_KIND_NOTIFICATION, body="Order shipped")

    for kind in (tpb.TEMPLATE_KIND_VERIFICATION, 7):
        details = await fails(send_text(api, CN, "Your code is 1234", kind=kind))
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "kind" in details.fields

    def by_template(kind: tpb.TemplateKind.ValueType) -> Any:
        request = pb.SendSmsRequest(
            phone_number=CN, template=mpb.TemplateContent(template_id="order"), kind=kind
        )
        return api.sms.SendSms(request, metadata=api.meta)

    other = await fails(by_template(tpb.TEMPLATE_KIND_MARKETING))
    assert other.code == grpc.StatusCode.INVALID_ARGUMENT and "kind" in other.fields
    assert (await by_template(tpb.TEMPLATE_KIND_NOTIFICATION)).message.id


# --- quiet hours -------------------------------------------------------------


def window_around(now: datetime, zone: ZoneInfo) -> tuple[str, datetime]:
    """Quiet hours from an hour before to an hour after ``now`` in ``zone``, and their end."""
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}", end


async def test_marketing_due_in_quiet_hours_is_held_until_they_end(
    make_api: ApiFactory,
) -> None:
    quiet, end = window_around(datetime.now(UTC), SHANGHAI)
    api = await make_api(policy_quiet_hours=quiet)
    await api.sign("Acme", default=True)
    await api.template(id="promo", kind=tpb.TEMPLATE_KIND_MARKETING, body="Sale today")
    await api.template(id="order", kind=tpb.TEMPLATE_KIND_NOTIFICATION, body="Order shipped")

    promo = await api.send(CN, "promo")
    order = await api.send(CN, "order")

    assert promo.status == mpb.MESSAGE_STATUS_SCHEDULED
    assert promo.send_time.ToDatetime(UTC) == end.astimezone(UTC)
    assert order.status != mpb.MESSAGE_STATUS_SCHEDULED


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


async def clocked_service(
    redis_client: aioredis.Redis, clock: Clock, **policy: Any
) -> tuple[SendingService, MessageStore]:
    settings = Settings(policy_same_content_seconds=0, policy_per_number_day=0, **policy)
    store = MessageStore(
        redis_client,
        shards=2,
        event_retention_seconds=3600,
        message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600,
        receipt_timeout_seconds=3600,
        schedule_max_days=35,
        max_message_age_seconds=86_400,
        clock=clock,
    )
    templates = TemplateStore(redis_client, idempotency_ttl_seconds=3600)
    signs = SignStore(redis_client)
    sending = SendingService(
        store,
        SendLimits.from_settings(settings),
        TokenSealer(b"k" * 32),
        texts=TextCipher(b"k" * 32),
        composer=Composer(templates, signs),
        policy=SendingPolicy(
            PolicyStore(redis_client), PolicySettings.from_settings(settings), b"s" * 32,
            clock=clock,
        ),
    )  # fmt: skip
    return sending, store


async def marketing_template(redis_client: aioredis.Redis, app: str) -> None:
    await SignStore(redis_client).create(app, "Acme", now_ms=0, make_default=True)
    await TemplateStore(redis_client, idempotency_ttl_seconds=3600).create(
        app, Template(id="promo", version=1, kind=TemplateKind.MARKETING, body="Sale today")
    )


@pytest.fixture
async def redis_client(redis_url: str) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_held_marketing_message_is_released_when_the_window_opens(
    redis_client: aioredis.Redis,
) -> None:
    clock = Clock(datetime(2026, 3, 2, 22, 30, tzinfo=SHANGHAI))
    sending, store = await clocked_service(redis_client, clock, policy_quiet_hours="21:00-08:00")
    await marketing_template(redis_client, "app")

    held = await sending.send("app", SendCommand(phone=CN, text="", template=TemplateRef("promo")))
    opens = datetime(2026, 3, 3, 8, 0, tzinfo=SHANGHAI)
    assert held.status is Status.SCHEDULED
    assert held.send_at_ms == int(opens.timestamp() * 1000)

    clock.now = opens.timestamp() - 1
    assert await promote_all(store) == 0
    clock.now = opens.timestamp()
    assert await promote_all(store) == 1
    assert (await sending.get("app", held.id)).status is Status.QUEUED


async def promote_all(store: MessageStore) -> int:
    return sum([(await store.promote(s, 100))[0] for s in range(store.shards)])


async def test_a_batch_holds_each_recipient_by_its_own_local_time(
    redis_client: aioredis.Redis,
) -> None:
    # 13:30 UTC: 21:30 in Shanghai (quiet), 14:30 in London (not).
    clock = Clock(datetime(2026, 3, 2, 13, 30, tzinfo=UTC))
    sending, _ = await clocked_service(redis_client, clock, policy_quiet_hours="21:00-08:00")
    await marketing_template(redis_client, "app")

    outcome = await sending.send_batch(
        "app",
        BatchCommand(phones=[CN, "+447911123456"], text="", template=TemplateRef("promo")),
    )

    ids = [r for r in outcome.results if isinstance(r, str)]
    shanghai, london = [await sending.get("app", i) for i in ids]
    assert shanghai.status is Status.SCHEDULED
    assert shanghai.send_at_ms == int(datetime(2026, 3, 3, 8, tzinfo=SHANGHAI).timestamp() * 1000)
    assert london.status is Status.QUEUED


async def test_the_app_daily_cap_follows_the_clock_into_the_next_day_and_back(
    redis_client: aioredis.Redis,
) -> None:
    # The day is computed once and reused until it ends: this holds it to the clock.
    clock = Clock(datetime(2026, 3, 2, 23, 59, 0, tzinfo=UTC))
    sending, _ = await clocked_service(redis_client, clock, policy_app_daily_cap=1)
    text = "Your order shipped"

    await sending.send("app", SendCommand(phone=CN, text=text))
    with pytest.raises(QuotaExceeded) as refused:
        await sending.send("app", SendCommand(phone=CN2, text=text))
    assert refused.value.reason is Reason.APP_DAILY_CAP

    clock.now = datetime(2026, 3, 3, 0, 0, 0, tzinfo=UTC).timestamp()
    assert (await sending.send("app", SendCommand(phone=CN2, text=text))).id

    clock.now = datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC).timestamp()
    with pytest.raises(QuotaExceeded) as again:
        await sending.send("app", SendCommand(phone=CN3, text=text))
    assert again.value.reason is Reason.APP_DAILY_CAP


# --- the domain rules ------------------------------------------------------


def test_quiet_hours_parse_and_wrap_midnight() -> None:
    quiet = QuietHours.parse("21:00-08:00")
    assert quiet is not None and str(quiet) == "21:00-08:00"
    assert quiet.contains(21 * 60) and quiet.contains(7 * 60 + 59)
    assert not quiet.contains(8 * 60) and not quiet.contains(12 * 60)
    assert QuietHours.parse("off") is None
    for bad in ("21-8", "25:00-08:00", "08:00-08:00", "9pm"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


def test_a_number_of_several_zones_waits_until_every_zone_is_out_of_quiet_hours() -> None:
    # A Russian mobile number may be anywhere from Kaliningrad to Kamchatka.
    quiet = QuietHours(21 * 60, 8 * 60)
    due = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 15:00 Moscow, 00:00 Kamchatka

    release = quiet_release_ms("+79161234567", int(due.timestamp() * 1000), quiet)

    # 08:00 in Kamchatka (UTC+12) is 20:00 UTC; 23:00 in Moscow is then quiet
    # too, so it waits for the next window open in every zone: 06:00 UTC
    # (08:00 in Bucharest/Kaliningrad, 18:00 in Kamchatka).
    at = datetime.fromtimestamp(release / 1000, UTC)
    assert at == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)


def test_a_number_outside_quiet_hours_goes_when_due() -> None:
    quiet = QuietHours(21 * 60, 8 * 60)
    due = int(datetime(2026, 3, 2, 4, 0, tzinfo=UTC).timestamp() * 1000)  # 12:00 Shanghai
    assert quiet_release_ms(CN, due, quiet) == due


def test_settings_refuse_a_bad_quiet_window_or_zone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        Settings(policy_quiet_hours="late")
    with pytest.raises(ValueError, match="time zone"):
        Settings(policy_day_zone="Mars/Olympus")


# --- the admin command -----------------------------------------------------


def test_apps_set_policy_changes_only_the_values_given(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SMSGATE_REDIS_URL", redis_url)
    monkeypatch.setenv("SMSGATE_DATA_DIR", str(tmp_path))

    async def create() -> str:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return (await AppStore(client).create("cli")).app_key
        finally:
            await client.aclose()

    async def own(key: str) -> PolicyOverrides | None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await AppStore(client).own_policy(key)
        finally:
            await client.aclose()

    key = asyncio.run(create())
    assert (
        cli_main(["apps", "set-policy", key, "--daily-cap", "500", "--quiet-hours", "22:00-7:30"])
        == 0
    )
    assert cli_main(["apps", "set-policy", key, "--per-number-day", "0"]) == 0
    assert asyncio.run(own(key)) == PolicyOverrides(
        per_number_day=0, daily_cap=500, quiet_hours="22:00-07:30"
    )
    assert cli_main(["apps", "set-policy", key, "--daily-cap", "default"]) == 0
    assert asyncio.run(own(key)) == PolicyOverrides(per_number_day=0, quiet_hours="22:00-07:30")
    assert "daily-cap server's" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        cli_main(["apps", "set-policy", key, "--quiet-hours", "late"])
    assert cli_main(["apps", "set-policy", "ak_" + "0" * 20, "--daily-cap", "1"]) == 1


@pytest.mark.cluster
async def test_a_batch_of_several_policy_chunks_is_idempotent_and_refunded_whole(
    two_servers: tuple[Api, Api],
) -> None:
    plain, capped = two_servers
    phones = [f"+861390000{i:04d}" for i in range(1_200)]
    first = await batch(capped, phones, text="Your parcel is out", request_id="b-1")
    assert first.accepted_count == 1_200

    again = await batch(capped, phones, text="Your parcel is out", request_id="b-1")
    assert [r.message_id for r in again.results] == [r.message_id for r in first.results]

    await batch(plain, phones, text="Your parcel is in", request_id="b-2")
    other = await fails(batch(capped, phones, text="Your parcel is on its way", request_id="b-2"))
    assert other.reason == "REQUEST_ID_REUSED"
    # What the refused request counted in each of its two chunks was given back.
    assert (await batch(capped, phones, text="Your parcel is on its way")).accepted_count == 1_200


# --- the Python client -----------------------------------------------------


async def test_the_python_client_marks_free_text_marketing_and_types_the_refusals(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    await OptOutStore(api.server.redis.client).add(api.app, CN3)
    async with smsgate.AsyncClient(f"127.0.0.1:{api.server.grpc_port}", api.token) as client:
        with pytest.raises(smsgate.errors.FailedPrecondition) as opted_out:
            await client.send(CN3, "Sale today", marketing=True)
        assert (await client.send(CN3, "Your order shipped")).id
        with pytest.raises(smsgate.errors.ResourceExhausted) as too_soon:
            await client.send(CN3, "Your order shipped")
        reply = await client.send_batch([CN, CN3], "Sale tomorrow", marketing=True)

    assert opted_out.value.reason == "RECIPIENT_OPTED_OUT"
    assert too_soon.value.reason == "SAME_CONTENT_TOO_SOON"
    assert too_soon.value.retry_after is not None and 0 < too_soon.value.retry_after <= 30
    assert [r.error.reason for r in reply.results] == ["", "RECIPIENT_OPTED_OUT"]


async def test_a_batch_refused_whole_answers_its_retry_as_the_first_time(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    optouts = OptOutStore(api.server.redis.client)
    await optouts.add(api.app, CN3)
    marketing = tpb.TEMPLATE_KIND_MARKETING
    first = await batch(api, [CN3], text="Sale today", kind=marketing, request_id="b-all")
    # Opted in again before the retry: the retry still returns the first answer.
    await optouts.remove(api.app, CN3)

    again = await batch(api, [CN3], text="Sale today", kind=marketing, request_id="b-all")

    assert first.results[0].error.reason == "RECIPIENT_OPTED_OUT"
    assert again == first
