"""Replies on the HTTP side port, in each vendor's real format: a STOP reply
opts its sender out of the account's app, so the next marketing send to the
number is refused and a verification code is not; Twilio's must be signed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import grpc
import httpx
import pytest
from smsgate.v1 import inbound_service_pb2 as ipb
from smsgate.v1 import inbound_service_pb2_grpc
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.providers.inbound import is_stop, parse_aliyun_replies
from smsgate_server.providers.receipts import ReceiptFormatError
from smsgate_server.providers.signing import twilio_signature
from smsgate_server.runtime import Running
from smsgate_server.store.optouts import OptOutStore

from tests.conftest import ServerFactory
from tests.test_opt_out import templates
from tests.test_sending_by_template import Api, fails

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    from smsgate.v1.inbound_service_pb2_grpc import InboundServiceAsyncStub

TOKEN = "tok-0123456789abcdef"
TWILIO_TOKEN = "twilio-auth-token-0123"
CN = "+8613800138000"
US = "+14155552671"


@dataclass
class Gateway:
    """A server whose three vendor accounts send their replies to one app."""

    server: Running
    api: Api
    app: str
    inbound: InboundServiceAsyncStub

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.http_port}{path}"

    async def post(self, path: str, **kwargs: object) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(self.url(path), **kwargs)  # type: ignore[arg-type]

    async def twilio(self, form: dict[str, str], signature: str) -> httpx.Response:
        return await self.post(
            "/inbound/twilio",
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signature,
            },
        )

    def signed(self, form: dict[str, str]) -> str:
        return twilio_signature(TWILIO_TOKEN, self.url("/inbound/twilio"), form.items())


@pytest.fixture
async def gateway(make_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Gateway]:
    creds = await (await make_server()).apps.create("replies")
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[providers.tencent]\ntype = "tencent"\nsecret_id = "id"\nsecret_key = "key"\n'
        f'sdk_app_id = "1400000000"\nreceipt_token = "{TOKEN}"\n'
        f'inbound_app = "{creds.app_key}"\n'
        f'[providers.ali]\ntype = "aliyun"\naccess_key_id = "id"\naccess_key_secret = "key"\n'
        f'receipt_token = "{TOKEN}"\ninbound_app = "{creds.app_key}"\n'
        f'[providers.twilio]\ntype = "twilio"\naccount_sid = "AC{"0" * 32}"\n'
        f'auth_token = "{TWILIO_TOKEN}"\nfrom_number = "+15005550006"\n'
        f'inbound_app = "{creds.app_key}"\n'
    )
    server = await make_server(providers_file=providers)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    api = Api(channel, creds.token)
    await templates(api)
    inbound: InboundServiceAsyncStub = inbound_service_pb2_grpc.InboundServiceStub(channel)
    yield Gateway(server, api, creds.app_key, inbound)
    await channel.close()


async def blocks_marketing_not_codes(gw: Gateway, phone: str) -> None:
    assert (await fails(gw.api.send(phone, "promo"))).reason == "RECIPIENT_OPTED_OUT"
    issued = await gw.api.verification.GenerateCode(
        vpb.GenerateCodeRequest(
            phone_number=phone, scope="login", delivery=vpb.CODE_DELIVERY_SMS, template_id="otp"
        ),
        metadata=gw.api.meta,
    )
    assert issued.message_id


async def test_a_tencent_stop_reply_blocks_marketing(gateway: Gateway) -> None:
    reply = {
        "extend": "",
        "mobile": "13800138000",
        "nationcode": "86",
        "sign": "腾讯云",
        "text": "退订",
        "time": 1457336869,
    }
    response = await gateway.post(f"/inbound/tencent/{TOKEN}", json=reply)

    assert (response.status_code, response.json()) == (200, {"result": 0, "errmsg": "OK"})
    await blocks_marketing_not_codes(gateway, CN)


async def test_an_aliyun_td_reply_blocks_marketing(gateway: Gateway) -> None:
    replies = [
        {
            "phone_number": "13800138000",
            "send_time": "2026-11-25 10:00:00",
            "content": "td",
            "sign_name": "阿里云短信测试",
            "dest_code": "1234",
            "sequence_id": 1234567890,
        }
    ]
    response = await gateway.post(f"/inbound/ali/{TOKEN}", json=replies)

    assert response.status_code == 200
    await blocks_marketing_not_codes(gateway, CN)


async def test_a_signed_twilio_stop_reply_blocks_marketing(gateway: Gateway) -> None:
    form = {"MessageSid": "SM" + "1" * 32, "From": US, "To": "+15005550006", "Body": "STOP"}
    response = await gateway.twilio(form, gateway.signed(form))

    assert response.status_code == 200
    await blocks_marketing_not_codes(gateway, US)


async def test_a_twilio_reply_with_a_bad_signature_is_403_and_stores_nothing(
    gateway: Gateway,
) -> None:
    form = {"MessageSid": "SM" + "1" * 32, "From": US, "To": "+15005550006", "Body": "STOP"}
    bad = twilio_signature("wrong", gateway.url("/inbound/twilio"), form.items())

    assert (await gateway.twilio(form, bad)).status_code == 403
    assert (await gateway.twilio(form, "")).status_code == 403
    optouts = OptOutStore(gateway.server.redis.client)
    assert await optouts.opted_out(gateway.app, [US]) == set()
    listed = await gateway.inbound.ListReplies(ipb.ListRepliesRequest(), metadata=gateway.api.meta)
    assert list(listed.replies) == []
    assert (await gateway.api.send(US, "promo")).id


async def test_a_reply_that_is_no_keyword_opts_nobody_out(gateway: Gateway) -> None:
    form = {"MessageSid": "SM" + "2" * 32, "From": US, "To": "+15005550006", "Body": "stop it"}

    assert (await gateway.twilio(form, gateway.signed(form))).status_code == 200
    assert (await gateway.api.send(US, "promo")).id


async def test_a_wrong_token_is_404(gateway: Gateway) -> None:
    response = await gateway.post("/inbound/tencent/tok-wrong-wrong-wrong", json={})
    assert response.status_code == 404


@pytest.mark.parametrize("text", ["STOP", " stop ", "Unsubscribe", "TD", "退订", "拒收", "r"])
def test_stop_keywords_match_whatever_the_case(text: str) -> None:
    assert is_stop(text, {"STOP", "UNSUBSCRIBE", "TD", "退订", "拒收", "R"})


@pytest.mark.parametrize(
    "body",
    [b"{", b"{}", b"[1]", json.dumps([{"phone_number": "12", "content": "TD"}]).encode()],
)
def test_a_malformed_smsup_push_is_refused(body: bytes) -> None:
    with pytest.raises(ReceiptFormatError):
        parse_aliyun_replies(body)


async def test_replies_are_listed_newest_first_by_pages(gateway: Gateway) -> None:
    for i in range(3):
        form = {"MessageSid": f"SM{i:032d}", "From": US, "To": "+15005550006", "Body": f"hi {i}"}
        assert (await gateway.twilio(form, gateway.signed(form))).status_code == 200
    await gateway.post(
        f"/inbound/tencent/{TOKEN}",
        json=[{"nationcode": "86", "mobile": "13800138000", "text": "TD", "time": 1}],
    )

    seen: list[ipb.Reply] = []
    token, pages = "", 0
    while True:
        page = await gateway.inbound.ListReplies(
            ipb.ListRepliesRequest(page_size=3, page_token=token), metadata=gateway.api.meta
        )
        seen += page.replies
        pages += 1
        token = page.next_page_token
        if not token:
            break

    assert pages == 2
    assert [(r.phone_number, r.text, r.provider, r.opted_out) for r in seen] == [
        (CN, "TD", "tencent", True),
        (US, "hi 2", "twilio", False),
        (US, "hi 1", "twilio", False),
        (US, "hi 0", "twilio", False),
    ]
    assert seen[0].receive_time.ToMilliseconds() >= seen[-1].receive_time.ToMilliseconds() > 0
    details = await fails(
        gateway.inbound.ListReplies(
            ipb.ListRepliesRequest(page_token="x"), metadata=gateway.api.meta
        )
    )
    assert details.reason == "INVALID_PAGE_TOKEN"
