"""Sending by template, against a real server: sign names and where the sign
goes per region, versions kept by messages, per-recipient params in a batch,
verification codes through an app's template, and the delete guard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sign_service_pb2 as spb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.domain.ids import shard_of_id
from smsgate_server.domain.phone import NumberPolicy
from smsgate_server.runtime import Running
from smsgate_server.store.keys import QueueField

from tests.conftest import ServerFactory
from tests.pipeline_support import Client, wait_for_statuses
from tests.processes import Servers
from tests.support import Details, bearer, details_of
from tests.test_verification import every_redis_value, handset_text
from tests.waiting import wait_until_blocking

S = mpb.MessageStatus
CN = "+8613800138000"
US = "+14155552671"


class Api(Client):
    """The stubs of one app on one server, with this file's shortcuts."""

    async def template(self, **fields: Any) -> tpb.Template:
        fields.setdefault("kind", tpb.TEMPLATE_KIND_NOTIFICATION)
        reply = await self.templates.CreateTemplate(
            tpb.CreateTemplateRequest(template=tpb.Template(**fields)), metadata=self.meta
        )
        return reply.template

    async def sign(self, name: str, *, default: bool = False) -> None:
        await self.signs.CreateSignName(
            spb.CreateSignNameRequest(sign_name=spb.SignName(name=name, is_default=default)),
            metadata=self.meta,
        )

    async def send(self, phone: str, template_id: str, **content: Any) -> mpb.Message:
        request = pb.SendSmsRequest(
            phone_number=phone, template=mpb.TemplateContent(template_id=template_id, **content)
        )
        return (await self.sms.SendSms(request, metadata=self.meta)).message

    async def get(self, message_id: str) -> mpb.Message:
        reply = await self.sms.GetMessage(
            pb.GetMessageRequest(message_id=message_id), metadata=self.meta
        )
        return reply.message


async def fails(call: Any) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details_of(caught.value)


@pytest.fixture
async def api(channel: grpc.aio.Channel, token: str) -> Api:
    return Api(channel, token)


async def app_api(server: Running, channel: grpc.aio.Channel, **numbers: Any) -> Api:
    creds = await server.apps.create("local", numbers=NumberPolicy(**numbers))
    return Api(channel, creds.token)


# --- signs ---------------------------------------------------------------


async def test_sign_names_are_registered_listed_defaulted_and_deleted(api: Api) -> None:
    await api.sign("Acme")
    await api.sign("Beta", default=True)
    listed = await api.signs.ListSignNames(spb.ListSignNamesRequest(), metadata=api.meta)
    assert [(s.name, s.is_default) for s in listed.sign_names] == [
        ("Acme", False),
        ("Beta", True),
    ]
    await api.signs.SetDefaultSignName(
        spb.SetDefaultSignNameRequest(name="Acme"), metadata=api.meta
    )
    await api.signs.DeleteSignName(spb.DeleteSignNameRequest(name="Acme"), metadata=api.meta)
    listed = await api.signs.ListSignNames(spb.ListSignNamesRequest(), metadata=api.meta)
    # The default went with it.
    assert [(s.name, s.is_default) for s in listed.sign_names] == [("Beta", False)]


async def test_a_sign_name_registered_twice_already_exists(api: Api) -> None:
    await api.sign("Acme")
    details = await fails(api.sign("Acme"))
    assert (details.code, details.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "SIGN_NAME_ALREADY_EXISTS",
    )


async def test_a_bad_or_unknown_sign_name_is_refused(api: Api) -> None:
    details = await fails(api.sign("【x】"))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_SIGN_NAME"
    assert "sign_name.name" in details.fields
    details = await fails(
        api.signs.DeleteSignName(spb.DeleteSignNameRequest(name="Nope"), metadata=api.meta)
    )
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "SIGN_NAME_NOT_FOUND")


async def test_a_chinese_number_reads_the_sign_in_its_text_and_pays_for_it(api: Api) -> None:
    await api.sign("腾讯科技")
    # 65 UCS-2 units: one segment alone (70), two with the 6 units of 【腾讯科技】.
    await api.template(id="order", body="您" * 61 + "{n}", sign_name="腾讯科技")
    message = await api.send(CN, "order", params={"n": "1234"})
    assert message.rendered_text == "【腾讯科技】" + "您" * 61 + "1234"
    assert (message.encoding, message.segments) == (tpb.TEXT_ENCODING_UCS2, 2)
    assert message.sender_id == ""
    assert (message.template.sign_name, message.template.version) == ("腾讯科技", 1)
    # The same template to a US number: the sign is the sender id, one segment.
    abroad = await api.send(US, "order", params={"n": "1234"})
    assert abroad.rendered_text == "您" * 61 + "1234"
    assert (abroad.segments, abroad.sender_id) == (1, "腾讯科技")


async def test_elsewhere_the_sign_is_the_sender_id_and_not_in_the_text(api: Api) -> None:
    await api.sign("Acme")
    await api.template(id="order", body="Order {n} has shipped", sign_name="Acme")
    message = await api.send(US, "order", params={"n": "42"})
    assert message.rendered_text == "Order 42 has shipped"
    assert message.encoding == tpb.TEXT_ENCODING_GSM7
    assert message.segments == 1
    assert message.sender_id == "Acme"


@pytest.mark.cluster
async def test_the_sign_named_by_the_send_wins_then_the_templates_then_the_apps(
    api: Api,
) -> None:
    await api.sign("AppSign", default=True)
    await api.sign("TplSign")
    await api.sign("Other")
    await api.template(id="with", body="hi", sign_name="TplSign")
    await api.template(id="without", body="hi")
    assert (await api.send(CN, "with", sign_name="Other")).rendered_text == "【Other】hi"
    assert (await api.send(CN, "with")).rendered_text == "【TplSign】hi"
    assert (await api.send(CN, "without")).rendered_text == "【AppSign】hi"


async def test_an_unregistered_sign_is_a_failed_precondition(api: Api) -> None:
    await api.template(id="t", body="hi", sign_name="Ghost")
    details = await fails(api.send(CN, "t"))
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SIGN_NOT_REGISTERED",
    )
    assert "Ghost" in details.message


# --- SendSms by template -------------------------------------------------


async def test_a_message_keeps_its_version_after_the_template_changes(api: Api) -> None:
    await api.template(
        id="ship", body="Parcel {id} ships", provider_template_ids={"tencent": "1001"}
    )
    first = await api.send(US, "ship", params={"id": "A1"})
    await api.templates.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template=tpb.Template(id="ship", body="Parcel {id} is on its way"),
            update_mask=FieldMask(paths=["body"]),
        ),
        metadata=api.meta,
    )
    second = await api.send(US, "ship", params={"id": "A2"})
    pinned = await api.send(US, "ship", params={"id": "A3"}, version=1)

    kept = await api.get(first.id)
    assert (kept.template.template_id, kept.template.version) == ("ship", 1)
    assert kept.rendered_text == "Parcel A1 ships"
    assert dict(kept.template.params) == {"id": "A1"}
    assert (second.template.version, second.rendered_text) == (2, "Parcel A2 is on its way")
    assert (pinned.template.version, pinned.rendered_text) == (1, "Parcel A3 ships")


async def test_bad_params_are_named_each(api: Api) -> None:
    await api.template(id="t", body="{a} {b}")
    details = await fails(api.send(US, "t", params={"a": "x" * 36, "c": "1"}))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_TEMPLATE_PARAMS"
    assert set(details.fields) == {
        "template.params[a]",
        "template.params[b]",
        "template.params[c]",
    }


@pytest.mark.parametrize("value", ["{b}", "【Evil】", "}{"])
async def test_a_param_value_never_makes_a_placeholder_or_a_sign(api: Api, value: str) -> None:
    await api.template(id="t", body="{a} {b}")
    details = await fails(api.send(CN, "t", params={"a": value, "b": "x"}))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "template.params[a]" in details.fields


async def test_an_unknown_template_version_is_not_found(api: Api) -> None:
    await api.template(id="t", body="hi")
    details = await fails(api.send(US, "t", version=7))
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND")


# --- BatchSend by template -----------------------------------------------


async def test_a_batch_of_1000_renders_each_recipients_params(api: Api) -> None:
    await api.template(id="greet", body="Hi {name}, your code word is {word}")
    recipients = []
    for i in range(1000):
        # Every 10th recipient lacks its own `name`, which nothing else gives.
        params = {} if i % 10 == 0 else {"name": f"n{i}"}
        if i % 2:
            params["word"] = f"w{i}"  # overrides the shared one
        recipients.append(pb.BatchRecipient(phone_number=f"+1415555{i:04d}", params=params))
    reply = await api.sms.BatchSend(
        pb.BatchSendRequest(
            recipients=recipients,
            template=mpb.TemplateContent(template_id="greet", params={"word": "shared"}),
        ),
        metadata=api.meta,
    )
    assert (reply.accepted_count, reply.rejected_count) == (900, 100)
    for result in reply.results:
        if result.index % 10 == 0:
            assert result.error.reason == "INVALID_TEMPLATE_PARAMS"
            assert "params[name]" in result.error.description
        else:
            assert result.message_id
    accepted = [r.message_id for r in reply.results if r.message_id]
    delivered = await _delivered(api, accepted)
    m3 = delivered[reply.results[3].message_id]
    assert m3.rendered_text == "Hi n3, your code word is w3"
    m4 = delivered[reply.results[4].message_id]
    assert m4.rendered_text == "Hi n4, your code word is shared"
    assert dict(m4.template.params) == {"name": "n4", "word": "shared"}


async def _delivered(api: Api, ids: list[str]) -> dict[str, mpb.Message]:
    return await wait_for_statuses(
        api.sms, api.token, ids, {S.MESSAGE_STATUS_DELIVERED}, timeout=60
    )


async def test_per_recipient_params_have_a_byte_cap(api: Api) -> None:
    await api.template(id="t", body="{a}")
    reply = await api.sms.BatchSend(
        pb.BatchSendRequest(
            recipients=[
                pb.BatchRecipient(phone_number=US, params={"a": "1"}),
                pb.BatchRecipient(
                    phone_number="+14155552672", params={f"k{i}": "v" * 30 for i in range(9)}
                ),
            ],
            template=mpb.TemplateContent(template_id="t"),
        ),
        metadata=api.meta,
    )
    assert reply.results[0].message_id
    assert reply.results[1].error.reason == "INVALID_TEMPLATE_PARAMS"
    assert "256 are allowed" in reply.results[1].error.description


async def test_per_recipient_params_with_text_are_invalid(api: Api) -> None:
    details = await fails(
        api.sms.BatchSend(
            pb.BatchSendRequest(
                recipients=[pb.BatchRecipient(phone_number=US, params={"a": "1"})], text="hi"
            ),
            metadata=api.meta,
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "recipients[0].params" in details.fields


# --- verification codes by template --------------------------------------


@pytest.mark.cluster
async def test_a_code_goes_out_through_the_apps_verification_template(
    api: Api, server: Running
) -> None:
    await api.sign("Acme", default=True)
    await api.template(
        id="otp",
        kind=tpb.TEMPLATE_KIND_VERIFICATION,
        body="Your Acme code is {code}, valid {minutes} min",
    )
    issued = await api.verification.GenerateCode(
        vpb.GenerateCodeRequest(
            phone_number=CN, scope="login", delivery=vpb.CODE_DELIVERY_SMS, template_id="otp"
        ),
        metadata=api.meta,
    )
    text = await handset_text(server, issued.message_id)
    assert text.startswith("【Acme】Your Acme code is ") and text.endswith(", valid 5 min")
    code = text.removeprefix("【Acme】Your Acme code is ").removesuffix(", valid 5 min")
    message = await api.get(issued.message_id)
    assert (message.template.template_id, message.template.version) == ("otp", 1)
    assert code not in str(message)
    verified = await api.verification.VerifyCode(
        vpb.VerifyCodeRequest(verification_id=issued.verification_id, code=code),
        metadata=api.meta,
    )
    assert verified.result == vpb.VERIFICATION_RESULT_VERIFIED


async def test_a_code_needs_a_verification_template(api: Api) -> None:
    await api.template(id="note", body="hello {code}")
    details = await fails(
        api.verification.GenerateCode(
            vpb.GenerateCodeRequest(
                phone_number=US, scope="login", delivery=vpb.CODE_DELIVERY_SMS, template_id="note"
            ),
            metadata=api.meta,
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "template_id" in details.fields


# --- the delete guard ----------------------------------------------------


@pytest.mark.cluster
async def test_a_template_scheduled_messages_use_cannot_be_deleted(api: Api) -> None:
    await api.template(id="later", body="Reminder {what}")
    later = Timestamp(seconds=int(time.time()) + 3600)
    ids = [
        (
            await api.sms.SendSms(
                pb.SendSmsRequest(
                    phone_number=f"+1415555{i:04d}",
                    template=mpb.TemplateContent(template_id="later", params={"what": "x"}),
                    send_time=later,
                ),
                metadata=api.meta,
            )
        ).message.id
        for i in range(2)
    ]
    delete = tpb.DeleteTemplateRequest(template_id="later")
    details = await fails(api.templates.DeleteTemplate(delete, metadata=api.meta))
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TEMPLATE_IN_USE",
    )
    assert details.message.startswith("2 scheduled or queued messages")
    for message_id in ids:
        await api.sms.CancelMessage(
            pb.CancelMessageRequest(message_id=message_id), metadata=api.meta
        )
    await api.templates.DeleteTemplate(delete, metadata=api.meta)


async def test_a_template_whose_messages_were_delivered_can_be_deleted(api: Api) -> None:
    await api.template(id="now", body="hi")
    message = await api.send(US, "now")
    await _delivered(api, [message.id])
    await api.templates.DeleteTemplate(
        tpb.DeleteTemplateRequest(template_id="now"), metadata=api.meta
    )


# --- local number formats ------------------------------------------------


@pytest.mark.parametrize(
    ("region", "local", "e164"),
    [
        ("CN", "13800138000", CN),
        ("US", "(415) 555-2671", US),
        ("GB", "07911 123456", "+447911123456"),
    ],
)
async def test_local_numbers_are_read_in_the_apps_region(
    server: Running, channel: grpc.aio.Channel, region: str, local: str, e164: str
) -> None:
    app = await app_api(server, channel, default_region=region)
    reply = await app.sms.SendSms(
        pb.SendSmsRequest(phone_number=local, text="hi"), metadata=app.meta
    )
    assert reply.message.phone_number == e164


async def test_without_a_region_a_local_number_is_invalid(api: Api) -> None:
    details = await fails(
        api.sms.SendSms(pb.SendSmsRequest(phone_number="13800138000", text="hi"), metadata=api.meta)
    )
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PHONE_NUMBER",
    )


@pytest.mark.parametrize("number", ["+442079460958", "+861012345678", "+18005551212"])
async def test_a_number_that_cannot_receive_sms_is_refused(api: Api, number: str) -> None:
    details = await fails(
        api.sms.SendSms(pb.SendSmsRequest(phone_number=number, text="hi"), metadata=api.meta)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "NUMBER_CANNOT_RECEIVE_SMS"
    assert "phone_number" in details.fields


async def test_a_batch_refuses_a_fixed_line_alone(api: Api) -> None:
    reply = await api.sms.BatchSend(
        pb.BatchSendRequest(
            recipients=[
                pb.BatchRecipient(phone_number="+442079460958"),
                pb.BatchRecipient(phone_number=US),
            ],
            text="hi",
        ),
        metadata=api.meta,
    )
    assert reply.results[0].error.reason == "NUMBER_CANNOT_RECEIVE_SMS"
    assert reply.results[1].message_id


async def test_a_mobile_only_app_refuses_numbers_that_may_be_fixed_lines(
    server: Running, channel: grpc.aio.Channel
) -> None:
    app = await app_api(server, channel, default_region="US", mobile_only=True)
    details = await fails(
        app.sms.SendSms(pb.SendSmsRequest(phone_number=US, text="hi"), metadata=app.meta)
    )
    assert details.reason == "NUMBER_CANNOT_RECEIVE_SMS"
    reply = await app.sms.SendSms(pb.SendSmsRequest(phone_number=CN, text="hi"), metadata=app.meta)
    assert reply.message.phone_number == CN


@pytest.mark.slow
def test_apps_create_and_set_region_on_the_command_line(servers: Servers, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # A long auth cache: set-region must reach the running server all the same.
    server = servers.start(data_dir, AUTH_CACHE_SECONDS="3600")
    created = servers.run(data_dir, "apps", "create", "cn", "--default-region", "cn", "--json")
    assert created.returncode == 0, created.stderr
    creds = json.loads(created.stdout)
    stub = server.sms()

    def send(number: str) -> str:
        try:
            reply = stub.SendSms(
                pb.SendSmsRequest(phone_number=number, text="hi"),
                metadata=bearer(creds["token"]),
                timeout=5,
            )
        except grpc.RpcError as err:
            return str(err.code().name)
        return reply.message.phone_number

    assert send("13800138000") == CN
    assert send("(415) 555-2671") == "INVALID_ARGUMENT"
    changed = servers.run(data_dir, "apps", "set-region", creds["app_key"], "US")
    assert changed.returncode == 0, changed.stderr
    assert "default region US" in changed.stdout
    wait_until_blocking(
        lambda: send("(415) 555-2671"), lambda seen: seen == US, what="the US region to apply"
    )
    bad = servers.run(data_dir, "apps", "set-region", creds["app_key"], "XX")
    assert bad.returncode != 0 and "not a region code" in bad.stderr
    unknown = servers.run(data_dir, "apps", "set-region", "ak_" + "0" * 20, "US")
    assert unknown.returncode == 1 and "no app has the key" in unknown.stderr


async def test_codes_and_listings_read_local_numbers_too(
    server: Running, channel: grpc.aio.Channel
) -> None:
    app = await app_api(server, channel, default_region="CN")
    issued = await app.verification.GenerateCode(
        vpb.GenerateCodeRequest(
            phone_number="138 0013 8000", scope="login", delivery=vpb.CODE_DELIVERY_CALLER
        ),
        metadata=app.meta,
    )
    verified = await app.verification.VerifyCode(
        vpb.VerifyCodeRequest(phone_number="13800138000", scope="login", code=issued.code),
        metadata=app.meta,
    )
    assert verified.result == vpb.VERIFICATION_RESULT_VERIFIED
    sent = await app.sms.SendSms(
        pb.SendSmsRequest(phone_number="13800138000", text="hi"), metadata=app.meta
    )
    listed = await app.sms.ListMessages(
        pb.ListMessagesRequest(phone_number="13800138000"), metadata=app.meta
    )
    assert [m.id for m in listed.messages] == [sent.message.id]


async def test_an_sms_code_is_not_sent_to_a_fixed_line(api: Api) -> None:
    details = await fails(
        api.verification.GenerateCode(
            vpb.GenerateCodeRequest(phone_number="+442079460958", scope="login"),
            metadata=api.meta,
        )
    )
    assert details.reason == "NUMBER_CANNOT_RECEIVE_SMS"


async def test_a_worker_claims_what_a_vendor_needs_of_a_template_message(
    make_server: ServerFactory,
) -> None:
    # No dispatcher in this process: the test claims the message itself.
    server = await make_server(role="api")
    token = (await server.apps.create("vendor")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        api = Api(channel, token)
        await api.sign("Acme")
        await api.template(
            id="vendor",
            body="{b} then {a}",
            sign_name="Acme",
            provider_template_ids={"tencent": "1001", "aliyun": "SMS_1"},
        )
        message = await api.send(CN, "vendor", params={"a": "1", "b": "2"})
    store = server.store
    shard = shard_of_id(message.id, store.shards)
    assert shard is not None
    keys = store.shard_keys[shard]
    member = f"{token.split('.')[0]}:{message.id}"
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await store.redis.xrange(keys.queue))
    mine = [
        (e.decode(), member) for e, f in entries if f[QueueField.MEMBER.encode()] == member.encode()
    ]
    (claimed,) = await store.claim(shard, mine, reclaimed=False, max_attempts=5)
    assert (claimed.template_id, claimed.sign) == ("vendor", "Acme")
    assert json.loads(claimed.vendor_ids_json) == {"aliyun": "SMS_1", "tencent": "1001"}
    # In placeholder order, as vendors with numbered params ({1}, {2}) need them.
    assert list(json.loads(claimed.params_json).items()) == [("b", "2"), ("a", "1")]


async def test_a_code_template_too_long_to_send_fails_before_a_code_is_issued(api: Api) -> None:
    # 800 UCS-2 units and the code: 13 segments, more than the 10 a message may have.
    await api.template(id="long", kind=tpb.TEMPLATE_KIND_VERIFICATION, body="验" * 800 + "{code}")
    request = vpb.GenerateCodeRequest(phone_number=CN, scope="login", template_id="long")
    details = await fails(api.verification.GenerateCode(request, metadata=api.meta))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "CONTENT_TOO_LONG"
    assert "template_id" in details.fields
    # Nothing was issued: no cooldown stands in the way of a code by the built-in text.
    await api.verification.GenerateCode(
        vpb.GenerateCodeRequest(phone_number=CN, scope="login"), metadata=api.meta
    )


async def test_a_preview_falls_back_to_the_apps_default_sign_as_a_send_does(api: Api) -> None:
    await api.sign("AppSign", default=True)
    await api.template(id="t", body="hi")
    preview = await api.templates.RenderTemplate(
        tpb.RenderTemplateRequest(template_id="t", region_code="CN"), metadata=api.meta
    )
    sent = await api.send(CN, "t")
    assert preview.text == sent.rendered_text == "【AppSign】hi"
    assert preview.segments == sent.segments


async def test_a_code_sent_by_template_is_never_in_redis_in_clear(
    make_server: ServerFactory,
) -> None:
    # Accepted by an API-only server, so the message waits in Redis for a worker.
    server = await make_server(role="api")
    token = (await server.apps.create("codes")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        api = Api(channel, token)
        await api.template(
            id="otp", kind=tpb.TEMPLATE_KIND_VERIFICATION, body="Code {code} ({minutes} min)"
        )
        issued = await api.verification.GenerateCode(
            vpb.GenerateCodeRequest(
                phone_number=US,
                scope="login",
                alphabet=vpb.CODE_ALPHABET_ALPHANUMERIC,
                length=10,
                template_id="otp",
            ),
            metadata=api.meta,
        )
        waiting = await every_redis_value(server.redis.client)
        worker = await make_server(role="worker")
        text = await handset_text(worker, issued.message_id)
        delivered = await _delivered(api, [issued.message_id])
        ended = await every_redis_value(server.redis.client)
    code = text.removeprefix("Code ").removesuffix(" (5 min)")
    assert len(code) == 10, text
    assert not [v for v in waiting + ended if code.encode() in v]
    assert code not in str(delivered[issued.message_id])
