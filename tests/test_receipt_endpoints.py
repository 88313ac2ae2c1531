"""Vendor delivery receipts on the HTTP side port: a message sent through each
vendor's local fake, then the vendor's receipt posted in its real format."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.dispatch.receipt_intake import ReceiptIntake
from smsgate_server.providers.aliyun import aliyun_number
from smsgate_server.providers.providers_file import ProvidersFileError, load_providers_file
from smsgate_server.providers.receipts import (
    FIELD_LIMIT,
    ReceiptFormatError,
    parse_aliyun_receipts,
    parse_tencent_receipts,
    twilio_request_valid,
)
from smsgate_server.providers.signing import twilio_signature
from smsgate_server.receipt_endpoints import (
    MAX_BODY_BYTES,
    ReceiptEndpoint,
    Vendor,
    receipt_routes,
)
from smsgate_server.runtime import Running
from smsgate_server.store.messages import MessageStore
from starlette.applications import Starlette

from tests.conftest import ServerFactory
from tests.pipeline_support import CN, US, Client, Connect, shipped, shipped_template
from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake
from tests.vendor_fakes.twilio import TwilioFake

S = mpb.MessageStatus
# A copy of ../shared/vectors/signing.json, so the tests run from any checkout.
VECTORS = Path(__file__).parent / "vectors" / "signing.json"
TOKEN = "tok-0123456789abcdef"
BEIJING = timezone(timedelta(hours=8))
PUBLIC = "https://sms.example.com/gw"


@dataclass
class Sent:
    """A message a vendor took, and where its receipts go."""

    server: Running
    client: Client
    message: mpb.Message

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.http_port}{path}"


def beijing(ms: int) -> str:
    """A time as the Chinese clouds write it in reports."""
    return datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def sent_ms(message: mpb.Message) -> int:
    [entry] = [h for h in message.history if h.status == S.MESSAGE_STATUS_SENT]
    return entry.time.ToMilliseconds()


async def post(url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, **kwargs)  # type: ignore[arg-type]


async def receipts_metric(server: Running, provider: str, result: str) -> float:
    """``smsgate_receipts_total`` of one provider and result, scraped from ``server``."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{server.http_port}/metrics")).text
    line = f'smsgate_receipts_total{{provider="{provider}",result="{result}"}} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))


async def template_send(client: Client, vendor: str, vendor_template: str, sign: str) -> str:
    await shipped_template(client, sign=sign, provider_template_ids={vendor: vendor_template})
    reply = await client.sms.SendSms(
        pb.SendSmsRequest(phone_number=CN, template=shipped()), metadata=client.meta
    )
    return reply.message.id


@pytest.fixture
async def tencent(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> AsyncIterator[Sent]:
    """A template message sent to a Chinese number through the Tencent fake."""
    fake = TencentFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url, f'receipt_token = "{TOKEN}"\n'))
        server = await make_server(provider="tencent", providers_file=providers)
        client = await connect(server)
        message_id = await template_send(client, "tencent", "1110001", "腾讯云")
        message = await client.wait(message_id, {S.MESSAGE_STATUS_SENT})
        yield Sent(server, client, message)


def tencent_report(message: mpb.Message, status: str = "SUCCESS", **fields: str) -> dict[str, str]:
    report = {
        "user_receive_time": beijing(int(time.time() * 1000)),
        "nationcode": "86",
        "mobile": CN.removeprefix("+86"),
        "report_status": status,
        "errmsg": "DELIVRD" if status == "SUCCESS" else "MK:0005",
        "description": "用户短信送达成功" if status == "SUCCESS" else "空号",
        "sid": message.provider_message_id,
    }
    return {**report, **fields}


async def test_a_tencent_receipt_delivers_the_message_at_the_vendors_time(tencent: Sent) -> None:
    # The vendor's time: the first whole second after SENT, already past.
    vendor_ms = (sent_ms(tencent.message) // 1000 + 1) * 1000
    await asyncio.sleep(max(0.0, vendor_ms / 1000 - time.time()) + 0.05)
    report = tencent_report(tencent.message, user_receive_time=beijing(vendor_ms))

    reply = await post(tencent.url(f"/receipts/tencent/{TOKEN}"), json=[report])

    assert (reply.status_code, reply.json()) == (200, {"result": 0, "errmsg": "OK"})
    message = await tencent.client.wait(tencent.message.id, {S.MESSAGE_STATUS_DELIVERED})
    last = message.history[-1]
    assert (last.status, last.detail) == (S.MESSAGE_STATUS_DELIVERED, "DELIVRD")
    assert last.time.ToMilliseconds() == vendor_ms


async def test_a_receipt_is_stored_by_a_replica_that_did_not_send_the_message(
    tencent: Sent, make_server: ServerFactory
) -> None:
    settings = tencent.server.settings
    other = await make_server(
        role="api", provider="tencent", providers_file=settings.providers_file
    )
    report = tencent_report(tencent.message, "FAIL")

    reply = await post(
        f"http://127.0.0.1:{other.http_port}/receipts/tencent/{TOKEN}", json=[report]
    )

    assert reply.json() == {"result": 0, "errmsg": "OK"}
    message = await tencent.client.wait(tencent.message.id, {S.MESSAGE_STATUS_UNDELIVERED})
    assert (message.error.code, message.error.reason) == ("MK:0005", "空号")


async def test_a_duplicate_receipt_changes_nothing_and_an_ended_message_stays(
    tencent: Sent,
) -> None:
    url = tencent.url(f"/receipts/tencent/{TOKEN}")
    delivered = tencent_report(tencent.message)
    ignored = await receipts_metric(tencent.server, "tencent", "ignored")

    replies = [await post(url, json=[delivered]) for _ in range(2)]
    replies.append(await post(url, json=[tencent_report(tencent.message, "FAIL")]))

    assert {r.json()["result"] for r in replies} == {0}
    message = await tencent.client.wait(tencent.message.id, {S.MESSAGE_STATUS_DELIVERED})
    assert [h.status for h in message.history].count(S.MESSAGE_STATUS_DELIVERED) == 1
    assert message.history[-1].status == S.MESSAGE_STATUS_DELIVERED
    assert await receipts_metric(tencent.server, "tencent", "ignored") == ignored + 2


async def test_a_receipt_for_an_unknown_id_is_acknowledged_and_counted(tencent: Sent) -> None:
    before = await receipts_metric(tencent.server, "tencent", "unknown")
    report = tencent_report(tencent.message, sid="2640:00000000000000000000")

    reply = await post(tencent.url(f"/receipts/tencent/{TOKEN}"), json=[report])

    assert (reply.status_code, reply.json()["result"]) == (200, 0)
    assert await receipts_metric(tencent.server, "tencent", "unknown") == before + 1
    message = await tencent.client.wait(tencent.message.id, {S.MESSAGE_STATUS_SENT})
    assert message.status == S.MESSAGE_STATUS_SENT


@pytest.mark.parametrize(
    "path",
    [
        "/receipts/tencent/tok-0123456789abcdeX",
        "/receipts/tencent/" + TOKEN[:-1],
        "/receipts/aliyun/" + TOKEN,
        "/receipts/tencent",
    ],
)
async def test_a_wrong_path_token_or_name_is_not_found(tencent: Sent, path: str) -> None:
    reply = await post(tencent.url(path), json=[tencent_report(tencent.message)])

    assert reply.status_code == 404
    message = await tencent.client.wait(tencent.message.id, {S.MESSAGE_STATUS_SENT})
    assert message.status == S.MESSAGE_STATUS_SENT


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"sid": "x"}', b"[1]", b'[{"sid": "x", "report_status": "MAYBE"}]'],
)
async def test_a_malformed_body_is_a_400_without_a_traceback(tencent: Sent, body: bytes) -> None:
    reply = await post(tencent.url(f"/receipts/tencent/{TOKEN}"), content=body)

    assert reply.status_code == 400
    assert "Traceback" not in reply.text


async def test_a_body_over_the_cap_is_refused_unread(tencent: Sent) -> None:
    url = tencent.url(f"/receipts/tencent/{TOKEN}")
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"

    declared = await post(url, content=big)

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the cap holds while reading the stream.
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await post(url, content=chunks())

    assert (declared.status_code, streamed.status_code) == (413, 413)


async def test_an_aliyun_report_makes_the_message_undelivered_with_the_vendors_code(
    make_server: ServerFactory,
    connect: Connect,
    tmp_path: Path,
) -> None:
    fake = AliyunFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(
            '[providers.ali]\ntype = "aliyun"\n'
            f'access_key_id = "{fake.access_key_id}"\n'
            f'access_key_secret = "{fake.access_key_secret}"\nendpoint = "{url}"\n'
            'receipt_token_env = "SMSGATE_TEST_ALIYUN_RECEIPTS"\n'
        )
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SMSGATE_TEST_ALIYUN_RECEIPTS", TOKEN)
            server = await make_server(provider="ali", providers_file=providers)
        client = await connect(server)
        message_id = await template_send(client, "ali", "SMS_154950909", "阿里云短信测试")
        message = await client.wait(message_id, {S.MESSAGE_STATUS_SENT})
    biz_id = message.provider_message_id.partition("/")[0]
    report = {
        "phone_number": aliyun_number(CN),
        "send_time": beijing(sent_ms(message)),
        "report_time": beijing(int(time.time() * 1000)),
        "success": False,
        "err_code": "IC:0015",
        "err_msg": "用户关机",
        "sms_size": "1",
        "biz_id": biz_id,
        "out_id": message_id,
    }

    reply = await post(
        f"http://127.0.0.1:{server.http_port}/receipts/ali/{TOKEN}",
        content=json.dumps([report], ensure_ascii=False).encode(),
        headers={"content-type": "application/json"},
    )

    assert (reply.status_code, reply.json()) == (200, {"code": 0, "msg": "成功"})
    ended = await client.wait(message_id, {S.MESSAGE_STATUS_UNDELIVERED})
    assert (ended.error.code, ended.error.reason) == ("IC:0015", "用户关机")


# --- Twilio: signed status callbacks -------------------------------------------


@pytest.fixture
async def twilio(
    make_server: ServerFactory,
    connect: Connect,
    tmp_path: Path,
) -> AsyncIterator[tuple[Sent, TwilioFake]]:
    """A free-text message to a US number through the Twilio fake, behind a
    proxy that publishes the side port at PUBLIC."""
    fake = TwilioFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(
            fake.providers_section(url, f'status_callback = "{PUBLIC}/receipts/twilio"\n')
        )
        server = await make_server(
            provider="twilio", providers_file=providers, public_base_url=PUBLIC
        )
        client = await connect(server)
        reply = await client.sms.SendSms(
            pb.SendSmsRequest(phone_number=US, text="Your order has shipped"),
            metadata=client.meta,
        )
        message = await client.wait(reply.message.id, {S.MESSAGE_STATUS_SENT})
        yield Sent(server, client, message), fake


def twilio_callback(
    fake: TwilioFake, message: mpb.Message, status: str, **extra: str
) -> dict[str, str]:
    """The form Twilio posts to a message's StatusCallback."""
    sid = message.provider_message_id
    return {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": US,
        **extra,
    }


async def post_twilio(sent: Sent, form: dict[str, str], signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    return await post(sent.url("/receipts/twilio"), content=urlencode(form), headers=headers)


async def test_a_signed_twilio_callback_behind_a_proxy_delivers_the_message(
    twilio: tuple[Sent, TwilioFake],
) -> None:
    sent, fake = twilio
    assert fake.messages[0]["StatusCallback"] == f"{PUBLIC}/receipts/twilio"

    replies = []
    for status in ("sent", "delivered"):
        form = twilio_callback(fake, sent.message, status)
        signature = twilio_signature(fake.auth_token, f"{PUBLIC}/receipts/twilio", form.items())
        replies.append(await post_twilio(sent, form, signature))

    assert [r.status_code for r in replies] == [204, 204]
    message = await sent.client.wait(sent.message.id, {S.MESSAGE_STATUS_DELIVERED})
    assert [h.status for h in message.history][-2:] == [
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_DELIVERED,
    ]


async def test_a_twilio_failure_keeps_its_error_code(twilio: tuple[Sent, TwilioFake]) -> None:
    sent, fake = twilio
    form = twilio_callback(fake, sent.message, "undelivered", ErrorCode="30003")
    signature = twilio_signature(fake.auth_token, f"{PUBLIC}/receipts/twilio", form.items())

    reply = await post_twilio(sent, form, signature)

    assert reply.status_code == 204
    message = await sent.client.wait(sent.message.id, {S.MESSAGE_STATUS_UNDELIVERED})
    assert (message.error.code, message.error.reason) == ("30003", "undelivered")


async def test_a_tampered_or_missing_twilio_signature_is_refused_and_changes_nothing(
    twilio: tuple[Sent, TwilioFake],
) -> None:
    sent, fake = twilio
    delivered = twilio_callback(fake, sent.message, "delivered")
    signature = twilio_signature(fake.auth_token, f"{PUBLIC}/receipts/twilio", delivered.items())
    # Signed for the URL as seen behind the proxy, not the public one.
    local = twilio_signature(fake.auth_token, sent.url("/receipts/twilio"), delivered.items())

    replies = [
        await post_twilio(sent, {**delivered, "MessageStatus": "undelivered"}, signature),
        await post_twilio(sent, delivered, None),
        await post_twilio(sent, delivered, local),
        await post_twilio(sent, delivered, twilio_signature("wrong", PUBLIC, delivered.items())),
    ]

    assert [r.status_code for r in replies] == [403, 403, 403, 403]
    await asyncio.sleep(0.2)
    message = await sent.client.wait(sent.message.id, {S.MESSAGE_STATUS_SENT})
    assert message.status == S.MESSAGE_STATUS_SENT


def test_the_published_twilio_example_verifies_with_or_without_the_default_port() -> None:
    vector = json.loads(VECTORS.read_text())["twilio_request_validation"]
    params = list(vector["params"].items())
    expected = vector["expect"]["x_twilio_signature"]
    with_port = vector["url"].replace("mycompany.com", "mycompany.com:443")

    assert twilio_request_valid(vector["auth_token"], vector["url"], params, expected)
    assert twilio_request_valid(vector["auth_token"], with_port, params, expected)
    assert not twilio_request_valid("54321", vector["url"], params, expected)
    assert not twilio_request_valid(vector["auth_token"], vector["url"], params[1:], expected)


def test_a_short_receipt_token_refuses_the_providers_file(tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[providers.tencent]\ntype = "tencent"\nsecret_id = "a"\nsecret_key = "b"\n'
        'sdk_app_id = "1"\nreceipt_token = "short"\n'
    )

    with pytest.raises(ProvidersFileError, match=r"providers\.tencent\.receipt_token: must be"):
        load_providers_file(providers)


def test_twilio_with_an_api_key_needs_the_token_it_signs_callbacks_with(tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[providers.twilio]\ntype = "twilio"\naccount_sid = "AC{"0" * 32}"\n'
        f'auth_token = "key-secret"\napi_key_sid = "SK{"1" * 32}"\nfrom_number = "+15005550006"\n'
        'status_callback = "https://sms.example.com/receipts/twilio"\n'
    )

    with pytest.raises(ProvidersFileError, match="callback_token"):
        load_providers_file(providers)


# --- the formats, on any input ---------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
_REPORT_KEYS = ["sid", "report_status", "errmsg", "user_receive_time", "biz_id", "phone_number"]
_REPORTS = st.lists(
    st.dictionaries(st.sampled_from(_REPORT_KEYS) | st.text(max_size=5), _JSON, max_size=8),
    max_size=4,
)


@given(
    body=st.binary()
    | _JSON.map(json.dumps).map(str.encode)
    | _REPORTS.map(json.dumps).map(str.encode)
)
def test_any_body_is_read_as_receipts_or_refused_as_malformed(body: bytes) -> None:
    for parse in (parse_tencent_receipts, parse_aliyun_receipts):
        try:
            receipts = parse(body)
        except ReceiptFormatError:
            continue
        assert all(r.vendor_id and len(r.code) <= FIELD_LIMIT for r in receipts)


async def test_no_ok_while_redis_is_away_so_the_vendor_posts_again() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = Redis.from_url(f"redis://127.0.0.1:{s.getsockname()[1]}/0")
    store = MessageStore(
        gone, shards=1, event_retention_seconds=3600, message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600, receipt_timeout_seconds=3600, schedule_max_days=35,
        max_message_age_seconds=86_400,
    )  # fmt: skip
    endpoints = {
        "tencent": ReceiptEndpoint("tencent", Vendor.TENCENT, TOKEN),
        "twilio": ReceiptEndpoint("twilio", Vendor.TWILIO, "twilio-token"),
    }
    app = Starlette(routes=receipt_routes(endpoints, ReceiptIntake(store, hold=0.1)))
    report = {"sid": "2640:1", "report_status": "SUCCESS", "errmsg": "DELIVRD"}
    form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    signature = twilio_signature("twilio-token", "http://smsgate/receipts/twilio", form.items())
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://smsgate") as http:
            tencent = await http.post(f"/receipts/tencent/{TOKEN}", json=[report])
            twilio = await http.post(
                "/receipts/twilio", data=form, headers={"x-twilio-signature": signature}
            )
    finally:
        await gone.aclose()

    assert (tencent.status_code, tencent.json()["result"]) == (503, 1)
    assert twilio.status_code == 503
