"""No verification code in clear on disk: the text of an SMS that carries a
code is sealed (AES-GCM under the server secret) before it reaches Redis, so
neither Redis nor its append-only file ever holds the code; only the
provider is handed the text in clear."""

from __future__ import annotations

import re

import grpc
import pytest
from smsgate.v1 import sms_service_pb2 as sms_pb
from smsgate.v1 import verification_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate.v1.verification_service_pb2_grpc import VerificationServiceStub
from smsgate_server.domain.sealed_text import TextCipher, UnreadableText
from smsgate_server.store.embedded_redis import EmbeddedRedis

from tests.conftest import ServerFactory
from tests.pipeline_support import S, wait_for_statuses
from tests.support import bearer
from tests.test_verification import every_redis_value, handset_text

CODES = 3
SECRET = b"s" * 32
APP, MESSAGE = "ak_" + "0" * 20, "01a2129a484f023f187d33aea5"


def aof_bytes(redis_server: EmbeddedRedis) -> bytes:
    """Everything the test Redis has written to disk (its AOF files, any RDB)."""
    files = [p for p in redis_server.data_dir.rglob("*") if p.is_file() and p.suffix != ".log"]
    assert any("appendonly" in p.name for p in files), files
    return b"".join(p.read_bytes() for p in files)


async def test_an_sms_code_is_never_in_redis_or_its_aof_in_clear(
    make_server: ServerFactory, redis_server: EmbeddedRedis
) -> None:
    # Accepted by an API-only server, so the messages wait in Redis for a worker.
    api = await make_server(role="api")
    token = (await api.apps.create("codes")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") as channel:
        verification = VerificationServiceStub(channel)
        message_ids = [
            (
                await verification.GenerateCode(
                    pb.GenerateCodeRequest(
                        phone_number=f"+1415555{i:04d}",
                        scope="login",
                        delivery=pb.CODE_DELIVERY_SMS,
                        alphabet=pb.CODE_ALPHABET_ALPHANUMERIC,
                        length=10,
                    ),
                    metadata=bearer(token),
                )
            ).message_id
            for i in range(CODES)
        ]
        waiting = await every_redis_value(api.redis.client)

        worker = await make_server(role="worker")
        codes = []
        for message_id in message_ids:
            text = await handset_text(worker, message_id)
            found = re.fullmatch(
                r"Your verification code is ([A-Z0-9]{10})\. It is valid for 5 minutes\. "
                r"Do not share it with anyone\.",
                text,
            )
            assert found is not None, text
            codes.append(found[1].encode())
        await wait_for_statuses(
            SmsServiceStub(channel), token, message_ids, {S.MESSAGE_STATUS_DELIVERED}
        )
        ended = await every_redis_value(api.redis.client)

    on_disk = aof_bytes(redis_server)
    for code in codes:
        assert not [v for v in waiting if code in v], "in Redis while queued"
        assert not [v for v in ended if code in v], "in Redis once delivered"
        assert code not in on_disk, "in the append-only file"


def test_a_sealed_text_opens_for_its_own_message_only() -> None:
    cipher = TextCipher(SECRET)
    sealed = cipher.seal(APP, MESSAGE, "Your verification code is 123456.")
    assert "123456" not in sealed
    assert cipher.open(APP, MESSAGE, sealed) == "Your verification code is 123456."
    assert cipher.seal(APP, MESSAGE, "same") != cipher.seal(APP, MESSAGE, "same")  # fresh nonce
    edited = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for app, message, text, secret in [
        ("ak_" + "1" * 20, MESSAGE, sealed, SECRET),  # another app
        (APP, "01a2129a484f023f187d33aea6", sealed, SECRET),  # another message
        (APP, MESSAGE, edited, SECRET),
        (APP, MESSAGE, "", SECRET),
        (APP, MESSAGE, "not base64!", SECRET),
        (APP, MESSAGE, sealed, b"t" * 32),  # another server secret
    ]:
        with pytest.raises(UnreadableText):
            TextCipher(secret).open(app, message, text)


async def test_the_api_still_redacts_a_code_message(make_server: ServerFactory) -> None:
    server = await make_server()
    token = (await server.apps.create("codes")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        issued = await VerificationServiceStub(channel).GenerateCode(
            pb.GenerateCodeRequest(
                phone_number="+14155550123", scope="login", delivery=pb.CODE_DELIVERY_SMS
            ),
            metadata=bearer(token),
        )
        message = (
            await SmsServiceStub(channel).GetMessage(
                sms_pb.GetMessageRequest(message_id=issued.message_id), metadata=bearer(token)
            )
        ).message
    assert message.text == message.rendered_text == "[redacted: verification code]"
