"""The signed vendor calls over HTTP/2, as the server's shared client makes them
where a vendor offers it: the signatures cover ``host``, which HTTP/2 sends as
``:authority``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from smsgate_server.providers.aliyun import AliyunConfig, AliyunProvider
from smsgate_server.providers.base import OutboundBatch, OutcomeClass, Recipient
from smsgate_server.providers.tencent import TencentConfig, TencentProvider
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve_h2c
from tests.vendor_fakes.tencent import TencentFake


class Versions:
    """An ASGI app in front of a fake that notes each request's HTTP version."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["http_version"])
        await self.app(scope, receive, send)


@pytest.fixture
async def h2() -> AsyncIterator[httpx.AsyncClient]:
    # No TLS here, so HTTP/2 by prior knowledge rather than ALPN.
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        yield client


def batch(template: str, provider: str, sign: str) -> OutboundBatch:
    recipients = tuple(
        Recipient(f"m{i}", f"+86138{i:08d}", "code 1234", (("code", "1234"),)) for i in range(3)
    )
    return OutboundBatch("app1", recipients, sign, "", {provider: template})


async def test_tencent_over_http2(h2: httpx.AsyncClient) -> None:
    fake = TencentFake()
    versions = Versions(fake.app)
    async with serve_h2c(versions) as url:
        config = TencentConfig(fake.secret_id, fake.secret_key, fake.sdk_app_id, endpoint=url)
        provider = TencentProvider(config, http=h2)

        results = await provider.send_batch(batch("1110001", "tencent", "腾讯云"))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 3
    assert versions.seen == ["2"]


async def test_aliyun_over_http2(h2: httpx.AsyncClient) -> None:
    fake = AliyunFake()
    versions = Versions(fake.app)
    async with serve_h2c(versions) as url:
        config = AliyunConfig(fake.access_key_id, fake.access_key_secret, endpoint=url)
        provider = AliyunProvider(config, http=h2)

        results = await provider.send_batch(batch("SMS_154950909", "aliyun", "阿里云短信测试"))

    assert [r.outcome for r in results] == [OutcomeClass.ACCEPTED] * 3
    assert versions.seen == ["2"]
