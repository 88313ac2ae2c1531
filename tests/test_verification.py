"""VerificationService over a real gRPC channel against real Redis: codes
verify once, die after five wrong attempts, expire, stay within their scope and
app, are never stored or logged in plain, and resends are rate limited."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from smsgate.v1 import sms_service_pb2 as sms_pb
from smsgate.v1 import verification_service_pb2 as pb
from smsgate.v1 import verification_service_pb2_grpc as pb_grpc
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.runtime import Running, start
from smsgate_server.store.connection import RedisClient

from tests.conftest import ServerFactory, server_settings
from tests.pipeline_support import TERMINAL, wait_for_statuses
from tests.support import bearer, details_of
from tests.waiting import wait_until

if TYPE_CHECKING:  # the async stub types exist only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.verification_service_pb2_grpc import VerificationServiceAsyncStub

R = pb.VerificationResult
PHONE = "+14155550123"
CALLER = pb.CODE_DELIVERY_CALLER
SECRET = "a-shared-secret-of-replicas"


@pytest.fixture
def verification(channel: grpc.aio.Channel) -> VerificationServiceAsyncStub:
    return pb_grpc.VerificationServiceStub(channel)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def generate(
    stub: VerificationServiceAsyncStub, token: str, **fields: Any
) -> pb.GenerateCodeResponse:
    """GenerateCode for PHONE / login, returned to the caller, unless overridden."""
    request = {"phone_number": PHONE, "scope": "login", "delivery": CALLER, **fields}
    return await stub.GenerateCode(pb.GenerateCodeRequest(**request), metadata=bearer(token))


async def verify(
    stub: VerificationServiceAsyncStub, token: str, code: str, **fields: Any
) -> pb.VerifyCodeResponse:
    return await stub.VerifyCode(pb.VerifyCodeRequest(code=code, **fields), metadata=bearer(token))


async def fails(call: Any) -> grpc.aio.AioRpcError:
    """The error a call ends with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def wrong(code: str) -> str:
    """A code of the same shape that is not ``code``."""
    return code[:-1] + ("3" if code[-1] != "3" else "4")


async def serve_with_channel(
    make_server: ServerFactory, **overrides: Any
) -> tuple[Running, grpc.aio.Channel, VerificationServiceAsyncStub]:
    running = await make_server(**overrides)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    return running, channel, pb_grpc.VerificationServiceStub(channel)


# -- generate and verify ---------------------------------------------------------


@pytest.mark.cluster
async def test_a_caller_delivered_code_verifies_once(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    before = time.time()
    issued = await generate(verification, token)
    assert re.fullmatch(r"[0-9]{6}", issued.code)
    assert not issued.message_id
    assert issued.expire_time.ToSeconds() == pytest.approx(before + 300, abs=2)
    assert issued.resend_time.ToSeconds() == pytest.approx(before + 60, abs=2)

    first = await verify(verification, token, issued.code, verification_id=issued.verification_id)
    assert first.result == R.VERIFICATION_RESULT_VERIFIED
    again = await verify(verification, token, issued.code, verification_id=issued.verification_id)
    assert again.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND


async def test_a_code_verifies_by_phone_number_and_scope(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token, phone_number="+1 415 555 0123")
    reply = await verify(verification, token, issued.code, phone_number=PHONE, scope="login")
    assert reply.result == R.VERIFICATION_RESULT_VERIFIED


async def handset_text(server: Running, message_id: str) -> str:
    """The text the simulator provider was handed for a message."""
    provider = server.provider
    assert isinstance(provider, SimulatorProvider)

    async def handed() -> list[str]:
        return [sms.text for sms in provider.outbox if sms.reference == message_id]

    texts = await wait_until(
        handed,
        what=f"message {message_id} to reach the provider",
        describe=lambda _: f"{len(provider.outbox)} other message(s) in the outbox",
    )
    return texts[0]


@pytest.mark.cluster
async def test_an_sms_delivered_code_is_sent_and_never_returned(
    verification: VerificationServiceAsyncStub,
    sms: SmsServiceAsyncStub,
    token: str,
    server: Running,
) -> None:
    issued = await generate(verification, token, delivery=pb.CODE_DELIVERY_UNSPECIFIED)
    assert issued.message_id and not issued.code
    message = (
        await sms.GetMessage(
            sms_pb.GetMessageRequest(message_id=issued.message_id), metadata=bearer(token)
        )
    ).message
    assert message.phone_number == PHONE
    # The API never shows the code, not even to the app that asked for it.
    assert message.text == message.rendered_text == "[redacted: verification code]"

    text = await handset_text(server, issued.message_id)
    found = re.search(r"code is ([0-9]{6})\. It is valid for 5 minutes", text)
    assert found is not None
    reply = await verify(
        verification, token, found.group(1), verification_id=issued.verification_id
    )
    assert reply.result == R.VERIFICATION_RESULT_VERIFIED


async def test_an_alphanumeric_code_verifies_as_typed_in_lower_case(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token, alphabet=pb.CODE_ALPHABET_ALPHANUMERIC, length=8)
    assert re.fullmatch(r"[34679ACDEFGHJKMNPQRTUVWXY]{8}", issued.code)
    typed = f" {issued.code.lower()} "
    reply = await verify(verification, token, typed, verification_id=issued.verification_id)
    assert reply.result == R.VERIFICATION_RESULT_VERIFIED


async def test_fifty_concurrent_checks_of_the_right_code_verify_exactly_once(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token)
    replies = await asyncio.gather(
        *(
            verify(verification, token, issued.code, verification_id=issued.verification_id)
            for _ in range(50)
        )
    )
    results = [r.result for r in replies]
    assert results.count(R.VERIFICATION_RESULT_VERIFIED) == 1
    assert results.count(R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND) == 49


@pytest.mark.cluster
async def test_after_five_wrong_codes_even_the_right_one_fails(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token)
    by_id = {"verification_id": issued.verification_id}
    seen = [await verify(verification, token, wrong(issued.code), **by_id) for _ in range(5)]
    assert [(r.result, r.attempts_left) for r in seen] == [
        (R.VERIFICATION_RESULT_INCORRECT, 4),
        (R.VERIFICATION_RESULT_INCORRECT, 3),
        (R.VERIFICATION_RESULT_INCORRECT, 2),
        (R.VERIFICATION_RESULT_INCORRECT, 1),
        (R.VERIFICATION_RESULT_TOO_MANY_ATTEMPTS, 0),
    ]
    sixth = await verify(verification, token, issued.code, **by_id)
    assert (sixth.result, sixth.attempts_left) == (R.VERIFICATION_RESULT_TOO_MANY_ATTEMPTS, 0)
    by_scope = await verify(verification, token, issued.code, phone_number=PHONE, scope="login")
    assert by_scope.result == R.VERIFICATION_RESULT_TOO_MANY_ATTEMPTS


async def test_a_code_past_its_validity_is_expired(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token, validity=Duration(nanos=300_000_000))
    await asyncio.sleep(0.4)
    reply = await verify(verification, token, issued.code, verification_id=issued.verification_id)
    assert reply.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND


async def test_a_login_code_does_not_verify_another_scope(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token, scope="login")
    for fields in (
        {"phone_number": PHONE, "scope": "reset"},
        {"verification_id": issued.verification_id, "scope": "reset"},
    ):
        reply = await verify(verification, token, issued.code, **fields)
        assert reply.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND
    # Asking in the wrong scope cost no attempt of the login code.
    reply = await verify(verification, token, issued.code, phone_number=PHONE, scope="login")
    assert reply.result == R.VERIFICATION_RESULT_VERIFIED


async def test_an_id_checked_with_another_phone_number_does_not_verify(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token)
    reply = await verify(
        verification,
        token,
        issued.code,
        verification_id=issued.verification_id,
        phone_number="+14155550124",
    )
    assert reply.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND


async def test_another_app_cannot_verify_an_apps_code(
    verification: VerificationServiceAsyncStub, token: str, server: Running
) -> None:
    other = (await server.apps.create("other")).token
    issued = await generate(verification, token)

    err = await fails(
        verify(verification, other, issued.code, verification_id=issued.verification_id)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    by_scope = await verify(verification, other, issued.code, phone_number=PHONE, scope="login")
    assert by_scope.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND

    mine = await verify(verification, token, issued.code, verification_id=issued.verification_id)
    assert mine.result == R.VERIFICATION_RESULT_VERIFIED


@pytest.mark.parametrize(
    "verification_id", ["nope", "0" * 48, "0" * 47 + "g", "ab" * 24 + "\n", "x" * 64]
)
async def test_a_verification_id_never_issued_is_not_found(
    verification: VerificationServiceAsyncStub, token: str, verification_id: str
) -> None:
    err = await fails(verify(verification, token, "123456", verification_id=verification_id))
    details = details_of(err)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "VERIFICATION_NOT_FOUND"
    assert "verification_id" in details.message


async def test_a_forged_variant_of_an_issued_id_is_not_found(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    issued = await generate(verification, token)
    vid = issued.verification_id
    forged = vid[:20] + ("0" if vid[20] != "0" else "1") + vid[21:]
    err = await fails(verify(verification, token, issued.code, verification_id=forged))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- secrecy ---------------------------------------------------------------------


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def every_redis_value(client: RedisClient) -> list[bytes]:
    """Every key with its DUMP and its readable contents (fields, members, entries)."""
    out: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        kind = _bytes(await client.type(key)).decode()
        parts: list[Any] = [key, await client.dump(key) or b""]
        if kind == "string":
            parts.append(await client.get(key))
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                parts += [field, value]
        elif kind == "zset":
            parts += await client.zrange(key, 0, -1)
        elif kind == "set":
            parts += await client.smembers(key)
        elif kind == "list":
            parts += await client.lrange(key, 0, -1)
        elif kind == "stream":
            entries: list[Any] = await client.xrange(key) or []
            for _, entry in entries:
                for field, value in entry.items():
                    parts += [field, value]
        elif kind != "none":  # "none": gone since the scan saw it
            raise AssertionError(f"unexpected key type {kind}")
        out += [_bytes(p) for p in parts if p is not None]
    return out


async def test_redis_never_holds_a_plain_code(
    verification: VerificationServiceAsyncStub, token: str, redis_client: aioredis.Redis
) -> None:
    codes = [
        (await generate(verification, token, scope=f"s{i}", **fields)).code
        for i, fields in enumerate(
            [{}, {"length": 10}, {"alphabet": pb.CODE_ALPHABET_ALPHANUMERIC, "length": 10}]
        )
    ]
    values = await every_redis_value(redis_client)
    assert any(b"{v:" in v for v in values)  # the codes' keys were seen
    for code in codes:
        assert not [v for v in values if code.encode() in v], code


async def test_an_sms_code_leaves_redis_once_a_provider_has_it(
    verification: VerificationServiceAsyncStub,
    sms: SmsServiceAsyncStub,
    token: str,
    server: Running,
    redis_client: aioredis.Redis,
) -> None:
    # Until dispatch the text (with the code) must be stored; once the provider
    # took it, the message keeps no copy.
    issued = await generate(
        verification,
        token,
        delivery=pb.CODE_DELIVERY_SMS,
        alphabet=pb.CODE_ALPHABET_ALPHANUMERIC,
        length=10,
    )
    found = re.search(r"code is ([A-Z0-9]{10})\.", await handset_text(server, issued.message_id))
    assert found is not None
    await wait_for_statuses(sms, token, [issued.message_id], TERMINAL)
    holders = [v for v in await every_redis_value(redis_client) if found.group(1).encode() in v]
    assert holders == []


async def test_logs_never_contain_a_code(
    verification: VerificationServiceAsyncStub,
    server: Running,
    token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alnum = {"alphabet": pb.CODE_ALPHABET_ALPHANUMERIC, "length": 10}
    issued = await generate(verification, token, **alnum)
    await verify(verification, token, wrong(issued.code), verification_id=issued.verification_id)
    await verify(verification, token, issued.code, verification_id=issued.verification_id)
    by_sms = await generate(
        verification, token, scope="sms", delivery=pb.CODE_DELIVERY_SMS, **alnum
    )
    text = await handset_text(server, by_sms.message_id)
    sms_code = re.search(r"code is ([A-Z0-9]{10})\.", text)
    assert sms_code is not None
    await asyncio.sleep(0.3)  # let the dispatcher send it, and log what it logs
    records = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert any("verification code issued" in r for r in records)
    for code in (issued.code, sms_code.group(1)):
        assert not [r for r in records if code in r or code.lower() in r]


# -- resend policy and abuse controls ----------------------------------------------


@pytest.mark.cluster
async def test_a_resend_within_the_cooldown_is_refused_with_retry_info(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(
        make_server, verify_resend_cooldown_seconds=0.5
    )
    async with channel:
        token = (await running.apps.create("a")).token
        first = await generate(stub, token)
        err = await fails(generate(stub, token))
        details = details_of(err)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "RESEND_COOLDOWN"
        assert details.retry_delay is not None and 0 < details.retry_delay <= 0.5
        # Another scope has a cooldown of its own.
        await generate(stub, token, scope="register")

        await asyncio.sleep(details.retry_delay + 0.05)
        second = await generate(stub, token)
        # The resend invalidated the first code.
        old = await verify(stub, token, first.code, verification_id=first.verification_id)
        assert old.result == R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND
        new = await verify(stub, token, second.code, verification_id=second.verification_id)
        assert new.result == R.VERIFICATION_RESULT_VERIFIED


async def test_per_number_caps_are_refused_with_quota_failure(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(
        make_server,
        verify_resend_cooldown_seconds=0,
        verify_per_number_hour=2,
        verify_per_number_day=3,
    )
    async with channel:
        token = (await running.apps.create("a")).token
        await generate(stub, token, scope="login")
        await generate(stub, token, scope="register")
        details = details_of(await fails(generate(stub, token, scope="reset")))
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "PHONE_CODE_CAP"
        assert details.quota_subjects == [f"phone:{PHONE}:hour"]
        # Caps are per number and per app.
        await generate(stub, token, phone_number="+14155550124")
        other = (await running.apps.create("b")).token
        await generate(stub, other)


async def test_the_daily_cap_names_the_day(make_server: ServerFactory) -> None:
    running, channel, stub = await serve_with_channel(
        make_server,
        verify_resend_cooldown_seconds=0,
        verify_per_number_hour=5,
        verify_per_number_day=1,
    )
    async with channel:
        token = (await running.apps.create("a")).token
        await generate(stub, token)
        details = details_of(await fails(generate(stub, token)))
        assert details.quota_subjects == [f"phone:{PHONE}:day"]


async def wait_for_a_fresh_minute() -> None:
    """Per-minute windows are wall-clock minutes; do not straddle one."""
    if time.time() % 60 > 58:
        await asyncio.sleep(60 - time.time() % 60 + 0.05)


async def test_the_apps_per_minute_cap_is_refused_with_retry_info(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(make_server)
    async with channel:
        token = (await running.apps.create("a", verify_per_minute=2)).token
        await wait_for_a_fresh_minute()
        await generate(stub, token, phone_number="+14155550123")
        await generate(stub, token, phone_number="+14155550124")
        details = details_of(await fails(generate(stub, token, phone_number="+14155550125")))
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "APP_VERIFY_RATE_LIMITED"
        assert details.retry_delay is not None and 0 < details.retry_delay <= 60


@pytest.mark.cluster
async def test_concurrent_codes_of_many_numbers_each_verify_once(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    # Calls made together share a pipeline (store/grouping.py); on the cluster
    # each number's scripts go to its own slot's node.
    phones = [f"+1415555{i:04d}" for i in range(30)]
    issued = await asyncio.gather(*(generate(verification, token, phone_number=p) for p in phones))
    checks = await asyncio.gather(
        *(verify(verification, token, i.code, verification_id=i.verification_id) for i in issued),
        *(
            verify(verification, token, wrong(i.code), phone_number=p, scope="login")
            for i, p in zip(issued, phones, strict=True)
        ),
    )
    assert [c.result for c in checks[:30]] == [R.VERIFICATION_RESULT_VERIFIED] * 30
    # The wrong codes raced the right ones: each met its number's code live or gone.
    assert {c.result for c in checks[30:]} <= {
        R.VERIFICATION_RESULT_INCORRECT,
        R.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND,
    }


@pytest.mark.cluster
async def test_concurrent_codes_beyond_the_apps_per_minute_cap_issue_exactly_the_cap(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(make_server)
    async with channel:
        token = (await running.apps.create("a", verify_per_minute=7)).token
        await wait_for_a_fresh_minute()
        replies = await asyncio.gather(
            *(generate(stub, token, phone_number=f"+1415555{i:04d}") for i in range(20)),
            return_exceptions=True,
        )
        refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
        assert len(replies) - len(refused) == 7
        assert {details_of(r).reason for r in refused} == {"APP_VERIFY_RATE_LIMITED"}


async def test_the_server_wide_per_minute_cap_applies_to_apps_without_their_own(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(make_server, verify_per_minute=1)
    async with channel:
        token = (await running.apps.create("a")).token
        generous = (await running.apps.create("b", verify_per_minute=5)).token
        await wait_for_a_fresh_minute()
        await generate(stub, token)
        err = await fails(generate(stub, token, phone_number="+14155550124"))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await generate(stub, generous)
        await generate(stub, generous, phone_number="+14155550124")


async def test_a_country_outside_the_apps_allow_list_is_refused_before_anything_happens(
    make_server: ServerFactory, redis_client: aioredis.Redis
) -> None:
    running, channel, stub = await serve_with_channel(make_server)
    async with channel:
        token = (await running.apps.create("cn", allowed_countries=[86])).token
        details = details_of(await fails(generate(stub, token, delivery=pb.CODE_DELIVERY_SMS)))
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.reason == "COUNTRY_NOT_ALLOWED"
        assert "+1" in details.message
        # No code was issued or counted, no message accepted.
        assert [k async for k in redis_client.scan_iter("sg:{v*")] == []
        assert [k async for k in redis_client.scan_iter("sg:{sg*}:m:*")] == []
        await generate(stub, token, phone_number="+8613800138000")


async def test_the_server_wide_allow_list_applies_to_apps_without_their_own(
    make_server: ServerFactory,
) -> None:
    running, channel, stub = await serve_with_channel(
        make_server, verify_allowed_countries=frozenset({44})
    )
    async with channel:
        token = (await running.apps.create("a")).token
        err = await fails(generate(stub, token))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        await generate(stub, token, phone_number="+447911123456")
        us = (await running.apps.create("us", allowed_countries=[1])).token
        await generate(stub, us)


# -- server secret ------------------------------------------------------------------


@pytest.fixture
async def replicas(redis_url: str, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Starts servers on the test Redis, each with a data directory of its own."""
    started: list[Running] = []

    async def factory(**overrides: Any) -> Running:
        data_dir = tmp_path / f"replica-{len(started)}"
        started.append(await start(server_settings(redis_url, data_dir, **overrides)))
        return started[-1]

    yield factory
    for running in reversed(started):
        await running.stop()


async def test_replicas_sharing_the_server_secret_verify_each_others_codes(
    replicas: ServerFactory,
) -> None:
    one, ch1, stub1 = await serve_with_channel(replicas, server_secret=SECRET)
    _, ch2, stub2 = await serve_with_channel(replicas, server_secret=SECRET)
    async with ch1, ch2:
        token = (await one.apps.create("a")).token
        issued = await generate(stub1, token)
        reply = await verify(stub2, token, issued.code, verification_id=issued.verification_id)
        assert reply.result == R.VERIFICATION_RESULT_VERIFIED


async def test_without_a_shared_secret_replicas_warn_and_cannot_verify_each_other(
    replicas: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smsgate.server")
    one, ch1, stub1 = await serve_with_channel(replicas)
    _, ch2, stub2 = await serve_with_channel(replicas)
    assert any("SMSGATE_SERVER_SECRET" in r.getMessage() for r in caplog.records)
    async with ch1, ch2:
        token = (await one.apps.create("a")).token
        issued = await generate(stub1, token)
        err = await fails(verify(stub2, token, issued.code, verification_id=issued.verification_id))
        assert err.code() == grpc.StatusCode.NOT_FOUND


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"length": 3}, "length"),
        ({"length": 11}, "length"),
        ({"length": -1}, "length"),
        ({"validity": Duration(seconds=0)}, "validity"),
        ({"validity": Duration(seconds=601)}, "validity"),
        ({"validity": Duration(seconds=-5)}, "validity"),
        ({"alphabet": 99}, "alphabet"),
        ({"delivery": 99}, "delivery"),
        ({"scope": ""}, "scope"),
        ({"scope": "Login"}, "scope"),
        ({"scope": "x" * 65}, "scope"),
        ({"phone_number": ""}, "phone_number"),
        ({"phone_number": "12345"}, "phone_number"),
        ({"phone_number": "+1415555"}, "phone_number"),
        ({"template_id": "t"}, "template_id"),
        ({"sender_id": "ACME"}, "sender_id"),
        ({"delivery": pb.CODE_DELIVERY_SMS, "sender_id": "s" * 33}, "sender_id"),
    ],
)
async def test_bad_generate_requests_are_invalid_argument_naming_the_field(
    verification: VerificationServiceAsyncStub, token: str, fields: dict[str, Any], field: str
) -> None:
    details = details_of(await fails(generate(verification, token, **fields)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


async def test_an_unknown_template_for_an_sms_code_is_not_found(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    err = await fails(
        generate(verification, token, delivery=pb.CODE_DELIVERY_SMS, template_id="otp")
    )
    details = details_of(err)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "TEMPLATE_NOT_FOUND"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"code": "", "phone_number": PHONE, "scope": "login"}, "code"),
        ({"code": "   ", "phone_number": PHONE, "scope": "login"}, "code"),
        ({"code": "1" * 65, "phone_number": PHONE, "scope": "login"}, "code"),
        ({"code": "123456"}, "verification_id"),
        ({"code": "123456", "phone_number": PHONE}, "verification_id"),
        ({"code": "123456", "scope": "login"}, "verification_id"),
        ({"code": "123456", "phone_number": "12345", "scope": "login"}, "phone_number"),
        ({"code": "123456", "phone_number": PHONE, "scope": "LOGIN"}, "scope"),
    ],
)
async def test_bad_verify_requests_are_invalid_argument_naming_the_field(
    verification: VerificationServiceAsyncStub, token: str, fields: dict[str, Any], field: str
) -> None:
    err = await fails(
        verification.VerifyCode(pb.VerifyCodeRequest(**fields), metadata=bearer(token))
    )
    details = details_of(err)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


async def test_verification_needs_credentials(
    verification: VerificationServiceAsyncStub,
) -> None:
    err = await fails(verification.VerifyCode(pb.VerifyCodeRequest(code="1")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
