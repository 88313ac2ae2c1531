"""Breakers and pacing through real servers and the vendor fakes: a Tencent that
answers 5xx opens its breaker and routes go to Aliyun, servers on one Redis
(in one process or two) keep an account's rate at the fake, and /providers
shows it all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from redis.asyncio import Redis
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.runtime import Running
from smsgate_server.store.apps import AppStore
from starlette.responses import Response

from tests.conftest import ServerFactory
from tests.pipeline_support import ENDED, Client, Connect, shipped, shipped_template
from tests.processes import Servers
from tests.vendor_fakes.aliyun import AliyunFake
from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake
from tests.waiting import wait_until

S = mpb.MessageStatus
# Handed to the vendor, or ended (the fakes send no receipts unless told).
DONE = ENDED | {S.MESSAGE_STATUS_SENT}


@dataclass
class TimedTencent(TencentFake):
    """The Tencent fake, noting when each SendSms came and how many numbers it carried."""

    times: list[tuple[float, int]] = field(default_factory=list)

    def _send_sms(self, params: dict[str, Any]) -> Response:
        self.times.append((time.monotonic(), len(params.get("PhoneNumberSet", []))))
        return super()._send_sms(params)


@dataclass
class Fakes:
    tencent: TimedTencent = field(default_factory=TimedTencent)
    aliyun: AliyunFake = field(default_factory=AliyunFake)
    urls: dict[str, str] = field(default_factory=dict)

    def providers_file(self, path: Path, *, tencent_extra: str = "", routes: str = "") -> Path:
        path.write_text(
            self.tencent.providers_section(self.urls["tencent"], tencent_extra)
            + self.aliyun.providers_section(self.urls["aliyun"])
            + routes,
            encoding="utf-8",
        )
        return path


@asynccontextmanager
async def vendors() -> AsyncIterator[Fakes]:
    fakes = Fakes()
    async with AsyncExitStack() as stack:
        fakes.urls["tencent"] = await stack.enter_async_context(serve(fakes.tencent.app))
        fakes.urls["aliyun"] = await stack.enter_async_context(serve(fakes.aliyun.app))
        yield fakes


async def breaker_server(
    make_server: ServerFactory, fakes: Fakes, tmp_path: Path, *, cooldown_seconds: float
) -> Running:
    """A server routing CN to Tencent then Aliyun, whose breakers open after two
    failed calls (no breaker cache) and stay open ``cooldown_seconds``."""
    providers = fakes.providers_file(
        tmp_path / "providers.toml",
        routes='[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n',
    )
    return await make_server(
        provider="tencent",
        providers_file=providers,
        breaker_consecutive_failures=2,
        breaker_cooldown_seconds=cooldown_seconds,
        breaker_cache_seconds=0,
        retry_base_seconds=0.01,
        retry_max_seconds=0.02,
    )


async def send(client: Client, phone: str) -> str:
    reply = await client.sms.SendSms(
        pb.SendSmsRequest(phone_number=phone, template=shipped()), metadata=client.meta
    )
    return reply.message.id


async def providers_view(server: Running) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{server.http_port}/providers")
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["providers"]}


async def test_a_failing_vendor_opens_its_breaker_and_routes_skip_it(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.controls.server_errors = [503] * 100
        server = await breaker_server(make_server, fakes, tmp_path, cooldown_seconds=600)
        client = await connect(server)
        await shipped_template(client)

        first = await client.wait(await send(client, "+8613800000001"), DONE)
        tencent_calls = 100 - len(fakes.tencent.controls.server_errors)
        rest = [await send(client, f"+861380000001{i}") for i in range(5)]
        later = [await client.wait(m, DONE) for m in rest]
        view = await providers_view(server)
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"http://127.0.0.1:{server.http_port}/metrics")).text

    # Two 503s opened the breaker; the retry went to Aliyun, and so did the rest.
    assert tencent_calls == 2
    assert 100 - len(fakes.tencent.controls.server_errors) == 2
    assert [m.provider for m in [first, *later]] == ["aliyun"] * 6
    assert {m.status for m in [first, *later]} == {S.MESSAGE_STATUS_SENT}
    tencent = view["tencent"]["breaker"]
    assert (tencent["state"], tencent["opens"], tencent["last_failure_code"]) == (
        "open",
        1,
        "HTTP_503",
    )
    assert view["aliyun"]["breaker"]["state"] == "closed"
    assert 'smsgate_provider_breaker_state{provider="tencent"} 1.0' in metrics
    assert 'smsgate_provider_breaker_state{provider="aliyun"} 0.0' in metrics
    assert 'smsgate_provider_breaker_opens_total{provider="tencent"}' in metrics


async def test_after_the_cooldown_a_successful_probe_closes_the_breaker(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.controls.server_errors = [503, 503]
        server = await breaker_server(make_server, fakes, tmp_path, cooldown_seconds=1)
        client = await connect(server)
        await shipped_template(client)
        opened = await client.wait(await send(client, "+8613800000001"), DONE)
        assert (await providers_view(server))["tencent"]["breaker"]["state"] == "open"
        # The vendor is well again; once the cooldown is over, the next message probes it.
        await wait_until(
            lambda: providers_view(server),
            lambda view: view["tencent"]["breaker"]["state"] == "half_open",
            what="the cooldown to end",
        )
        probe = await client.wait(await send(client, "+8613800000002"), DONE)
        view = await providers_view(server)

    assert (opened.provider, probe.provider) == ("aliyun", "tencent")
    assert view["tencent"]["breaker"]["state"] == "closed"
    assert view["tencent"]["breaker"]["opens"] == 1


async def test_a_throttled_account_is_paced_at_half_its_rate(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        fakes.tencent.call_error = "RequestLimitExceeded"
        providers = fakes.providers_file(
            tmp_path / "providers.toml", tencent_extra="rate_messages_per_second = 100\n"
        )
        server = await make_server(
            provider="tencent",
            providers_file=providers,
            retry_base_seconds=0.01,
            retry_max_seconds=0.02,
        )
        client = await connect(server)
        await shipped_template(client)
        message = await send(client, "+8613800000001")
        view = await wait_until(
            lambda: providers_view(server),
            lambda view: view["tencent"]["rate"]["factor"] < 1,
            what="the throttle to lower the rate",
        )
        fakes.tencent.call_error = ""
        await client.wait(message, DONE)
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"http://127.0.0.1:{server.http_port}/metrics")).text

    assert view["tencent"]["rate"]["factor"] == 0.5
    assert view["tencent"]["rate"]["effective_messages_per_second"] == 50
    assert 'smsgate_provider_rate{provider="tencent",unit="messages"} 50.0' in metrics
    # A throttle is the vendor working: it does not count against the breaker.
    assert view["tencent"]["breaker"]["consecutive_failures"] == 0


async def test_providers_shows_each_account_and_no_secret(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    async with vendors() as fakes:
        providers = fakes.providers_file(
            tmp_path / "providers.toml",
            tencent_extra="rate_messages_per_second = 50\nrate_calls_per_second = 5\n",
        )
        server = await make_server(provider="tencent", providers_file=providers)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{server.http_port}/providers")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["providers"]] == ["tencent", "aliyun"]
    tencent, aliyun = response.json()["providers"]
    assert tencent["breaker"]["state"] == "closed"
    assert tencent["rate"] == {
        "messages_per_second": 50,
        "calls_per_second": 5,
        "burst_seconds": 1.0,
        "factor": 1.0,
        "effective_messages_per_second": 50,
        "effective_calls_per_second": 5,
    }
    assert aliyun["rate"]["messages_per_second"] is None
    for secret in (
        fakes.tencent.secret_key,
        fakes.tencent.secret_id,
        fakes.aliyun.access_key_secret,
    ):
        assert secret not in response.text


async def test_two_server_processes_keep_an_accounts_rate_at_the_vendor(
    servers: Servers, redis_url: str, tmp_path: Path
) -> None:
    rate, count = 30, 90
    async with vendors() as fakes:
        providers = fakes.providers_file(
            tmp_path / "providers.toml", tencent_extra=f"rate_messages_per_second = {rate}\n"
        )
        settings = {
            "redis_url": redis_url,
            "provider": "tencent",
            "providers_file": str(providers),
            "server_secret": "gate-test-secret-0123456789",
        }
        procs = [servers.spawn(tmp_path / f"data{i}", **settings) for i in range(2)]
        # Blocking waits, in threads: the fakes answer on this loop meanwhile.
        for proc in procs:
            await asyncio.to_thread(proc.wait_serving)
        redis = Redis.from_url(redis_url)
        try:
            token = (await AppStore(redis).create("gate-app")).token
        finally:
            await redis.aclose()
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.grpc_port}") for p in procs]
        try:
            clients = [Client(channel, token) for channel in channels]
            await shipped_template(clients[0])
            started = time.monotonic()
            ids = await asyncio.gather(
                *(send(clients[i % 2], f"+86139{i:08d}") for i in range(count))
            )
            for i, m in enumerate(ids):
                await clients[i % 2].wait(m, DONE)
        finally:
            for channel in channels:
                await channel.close()

    sent = sum(n for _, n in fakes.tencent.times)
    span = max(t for t, _ in fakes.tencent.times) - started
    # A call larger than the bucket goes once it is full, leaving a debt.
    debt = max(0, max(n for _, n in fakes.tencent.times) - rate)
    assert sent == count
    # At most a full bucket (one second of the rate) and the rate since.
    assert sent <= rate + rate * span + debt, (span, fakes.tencent.times)
    # Paced, not merely fast: unpaced, the whole lot goes in well under a
    # second; paced, it needs (count - bucket) / rate seconds of Redis's clock
    # (a tenth off for the millisecond clock and the two clocks' ticks).
    assert span >= 0.9 * (count - rate - debt) / rate, (span, fakes.tencent.times)
