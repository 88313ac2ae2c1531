"""Messages through a real server to a vendor: the simulator's scripted test
numbers, and Tencent and Twilio fakes named by a providers file."""

from __future__ import annotations

from pathlib import Path

import pytest
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sign_service_pb2 as spb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.runtime import Running, StartError

from tests.conftest import ServerFactory
from tests.pipeline_support import CN, ENDED, US, Connect
from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake
from tests.vendor_fakes.twilio import TwilioFake

S = mpb.MessageStatus


def history(message: mpb.Message) -> list[mpb.MessageStatus.ValueType]:
    return [h.status for h in message.history]


# --- the simulator's test numbers ------------------------------------------


async def test_an_unknown_outcome_is_sent_once_and_never_again(
    make_server: ServerFactory, connect: Connect
) -> None:
    server = await make_server(retry_base_seconds=0.01, retry_max_seconds=0.02)
    client = await connect(server)

    message = await client.wait(await client.text("+12025550104"), {S.MESSAGE_STATUS_SENT})

    assert (message.error.code, message.attempts) == ("SIM_NO_ANSWER", 1)
    assert history(message) == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_SENT,
    ]


async def test_a_throttled_number_is_retried_until_its_attempts_run_out(
    make_server: ServerFactory, connect: Connect
) -> None:
    server = await make_server(max_attempts=2, retry_base_seconds=0.01, retry_max_seconds=0.02)
    client = await connect(server)

    message = await client.wait(await client.text("+12025550103"), ENDED)

    assert message.status == S.MESSAGE_STATUS_FAILED
    assert (message.error.code, message.attempts) == ("SIM_THROTTLED", 2)
    assert "gave up after 2 attempts" in message.error.reason


@pytest.mark.parametrize(
    ("phone", "code"), [("+12025550101", "SIM_INVALID_NUMBER"), ("+12025550102", "SIM_OPTED_OUT")]
)
async def test_a_refused_number_fails_at_once(
    make_server: ServerFactory, connect: Connect, phone: str, code: str
) -> None:
    client = await connect(await make_server())

    message = await client.wait(await client.text(phone), ENDED)

    assert message.status == S.MESSAGE_STATUS_FAILED
    assert (message.error.code, message.error.retryable, message.attempts) == (code, False, 1)


async def test_one_number_is_undelivered_and_one_never_hears_back(
    make_server: ServerFactory, connect: Connect
) -> None:
    server = await make_server()
    client = await connect(server)
    silent = await client.text("+12025550105")
    undelivered = await client.wait(await client.text("+12025550106"), ENDED)
    # Receipts come in the order their sends were taken: the silent one's turn is past.
    delivered = await client.wait(await client.text(US), ENDED)

    assert undelivered.status == S.MESSAGE_STATUS_UNDELIVERED
    assert delivered.status == S.MESSAGE_STATUS_DELIVERED
    assert (await client.wait(silent, {S.MESSAGE_STATUS_SENT})).status == S.MESSAGE_STATUS_SENT
    provider = server.provider
    assert isinstance(provider, SimulatorProvider)
    assert provider.sent == 3


# --- vendors from a providers file -------------------------------------------


async def tencent_server(
    make_server: ServerFactory, fake: TencentFake, url: str, tmp_path: Path
) -> Running:
    """A server sending through the Tencent fake at ``url``, its key from the environment."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[providers.tencent]\n"
        'type = "tencent"\n'
        f'secret_id = "{fake.secret_id}"\n'
        'secret_key_env = "SMSGATE_TEST_TENCENT_KEY"\n'
        f'sdk_app_id = "{fake.sdk_app_id}"\n'
        f'endpoint = "{url}"\n'
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SMSGATE_TEST_TENCENT_KEY", fake.secret_key)
        return await make_server(provider="tencent", providers_file=providers)


async def test_a_template_message_goes_to_tencent_with_its_sign_and_params(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    fake = TencentFake(templates={"1110001": 2})
    async with serve(fake.app) as url:
        client = await connect(await tencent_server(make_server, fake, url, tmp_path))
        await client.signs.CreateSignName(
            spb.CreateSignNameRequest(sign_name=spb.SignName(name="腾讯云")), metadata=client.meta
        )
        await client.templates.CreateTemplate(
            tpb.CreateTemplateRequest(
                template=tpb.Template(
                    id="login",
                    kind=tpb.TEMPLATE_KIND_NOTIFICATION,
                    body="您的登录验证码为{code} {minutes}分钟内有效",
                    sign_name="腾讯云",
                    provider_template_ids={"tencent": "1110001"},
                )
            ),
            metadata=client.meta,
        )
        reply = await client.sms.SendSms(
            pb.SendSmsRequest(
                phone_number=CN,
                template=mpb.TemplateContent(
                    template_id="login", params={"minutes": "5", "code": "480215"}
                ),
            ),
            metadata=client.meta,
        )

        message = await client.wait(reply.message.id, {S.MESSAGE_STATUS_SENT})

    assert message.provider == "tencent"
    [call] = fake.calls
    assert call["PhoneNumberSet"] == [CN]
    assert (call["SignName"], call["TemplateId"]) == ("腾讯云", "1110001")
    # In the template's placeholder order, whatever the request's.
    assert call["TemplateParamSet"] == ["480215", "5"]
    assert call["SessionContext"] == reply.message.id


async def test_a_verification_code_goes_to_tencent_as_a_template_param(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    fake = TencentFake(templates={"2220002": 2})
    async with serve(fake.app) as url:
        client = await connect(await tencent_server(make_server, fake, url, tmp_path))
        await client.signs.CreateSignName(
            spb.CreateSignNameRequest(sign_name=spb.SignName(name="腾讯云", is_default=True)),
            metadata=client.meta,
        )
        await client.templates.CreateTemplate(
            tpb.CreateTemplateRequest(
                template=tpb.Template(
                    id="otp",
                    kind=tpb.TEMPLATE_KIND_VERIFICATION,
                    body="验证码{code} {minutes}分钟内有效",
                    provider_template_ids={"tencent": "2220002"},
                )
            ),
            metadata=client.meta,
        )
        issued = await client.verification.GenerateCode(
            vpb.GenerateCodeRequest(phone_number=CN, scope="login", template_id="otp"),
            metadata=client.meta,
        )
        await client.wait(issued.message_id, {S.MESSAGE_STATUS_SENT})

    # The code was sealed in Redis and opened only for the vendor.
    [call] = fake.calls
    code, minutes = call["TemplateParamSet"]
    assert minutes == "5"
    verified = await client.verification.VerifyCode(
        vpb.VerifyCodeRequest(verification_id=issued.verification_id, code=code),
        metadata=client.meta,
    )
    assert verified.result == vpb.VERIFICATION_RESULT_VERIFIED


async def test_free_text_goes_to_twilio(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    fake = TwilioFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(fake.providers_section(url))
        server = await make_server(provider="twilio", providers_file=providers)
        client = await connect(server)

        message = await client.wait(await client.text(US), {S.MESSAGE_STATUS_SENT})

    assert message.provider == "twilio"
    [sent] = fake.messages
    assert (sent["To"], sent["From"], sent["Body"]) == (US, "+15005550006", message.text)


async def test_free_text_to_a_templates_only_vendor_fails_naming_why(
    make_server: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    fake = TencentFake()
    async with serve(fake.app) as url:
        providers = tmp_path / "providers.toml"
        providers.write_text(
            '[providers.tencent]\ntype = "tencent"\nsecret_id = "a"\nsecret_key = "b"\n'
            f'sdk_app_id = "1"\nendpoint = "{url}"\n'
        )
        client = await connect(await make_server(provider="tencent", providers_file=providers))

        message = await client.wait(await client.text(CN), ENDED)

    assert (message.status, message.error.code) == (S.MESSAGE_STATUS_FAILED, "NO_VENDOR_TEMPLATE")
    assert fake.calls == []


async def test_a_bad_providers_file_refuses_to_start(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text('[providers.tencent]\ntype = "tencent"\nsecret_id = "a"\n')

    with pytest.raises(StartError, match=r"providers\.tencent\.secret_key: required"):
        await make_server(provider="tencent", providers_file=providers)
