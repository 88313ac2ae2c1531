"""Credentials: every smsgate RPC needs a valid app token; health does not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.api.guard import GuardedServer, TokenCache
from smsgate_server.domain.apps import App
from smsgate_server.runtime import Running

from tests.conftest import ServerFactory
from tests.support import bearer, details_of

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

REQUEST = pb.SendSmsRequest(phone_number="+14155550123", text="x")


async def test_call_without_credentials_is_unauthenticated(sms: SmsServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST)
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "MISSING_CREDENTIALS"


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer nonsense"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer ak_00000000000000000000.as_wrong"),),
    ],
)
async def test_call_with_bad_credentials_is_unauthenticated(
    sms: SmsServiceAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_right_key_with_wrong_secret_is_unauthenticated(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    key = token.split(".", 1)[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST, metadata=bearer(key + ".as_not-the-secret"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_secret_is_stored_hashed(server: Running, token: str) -> None:
    secret = token.split(".", 1)[1]
    async for key in server.redis.client.scan_iter(match="*"):
        value = await server.redis.client.dump(key)
        assert secret.encode() not in (value or b"")


async def test_health_needs_no_credentials(channel: grpc.aio.Channel) -> None:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs are typed for sync channels
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="smsgate.v1.SmsService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_worker_only_process_reports_no_api_service(make_server: ServerFactory) -> None:
    worker = await make_server(role="worker")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.grpc_port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="smsgate.v1.SmsService"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "spelling",
    [
        "Bearer  {token}",
        " Bearer {token}",
        "Bearer {token} ",
        "Bearer{token}",
        "{token}",
        "Bearer {token}.",
        "Bearer {token}x",
        "Bearer .{token}",
        "Token {token}",
    ],
)
async def test_only_bearer_one_space_and_the_token_is_accepted(
    sms: SmsServiceAsyncStub, token: str, spelling: str
) -> None:
    metadata = (("authorization", spelling.format(token=token)),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST, metadata=metadata)
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(
    sms: SmsServiceAsyncStub, token: str, scheme: str
) -> None:
    reply = await sms.SendSms(REQUEST, metadata=(("authorization", f"{scheme} {token}"),))
    assert reply.message.id


async def test_two_authorization_values_are_unauthenticated(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    metadata = (("authorization", f"Bearer {token}"),) * 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST, metadata=metadata)
    assert details_of(caught.value).reason == "INVALID_CREDENTIALS"


async def test_a_cached_app_key_with_another_secret_is_unauthenticated(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    await sms.SendSms(REQUEST, metadata=bearer(token))  # the key is cached now
    forged = token.split(".", 1)[0] + ".as_" + "A" * 43
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sms.SendSms(REQUEST, metadata=bearer(forged))
    assert details_of(caught.value).reason == "INVALID_CREDENTIALS"


async def test_spellings_of_one_token_share_one_cache_entry(
    server: Running, sms: SmsServiceAsyncStub, token: str
) -> None:
    assert isinstance(server.server, GuardedServer)
    for scheme in ("Bearer", "bearer", "BEARER", "beareR"):
        await sms.SendSms(REQUEST, metadata=(("authorization", f"{scheme} {token}"),))
    assert len(server.server.guard.cache) == 1


def test_the_token_cache_holds_at_most_its_size_dropping_the_oldest() -> None:
    cache = TokenCache(ttl=60, max_size=2)
    apps = [App(key=f"ak_{i:020x}", name=str(i)) for i in range(3)]
    for app in apps:
        cache.put(app.key, "as_secret", app, revision=cache.revision)
    assert len(cache) == 2
    assert cache.get(apps[0].key, "as_secret") is None
    assert cache.get(apps[2].key, "as_secret") == apps[2]
