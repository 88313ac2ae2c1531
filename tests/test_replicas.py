"""Replicas: two API processes and two workers (``SMSGATE_ROLE``) share one
Redis, a cluster or one server. Whatever replica a call reaches, it sees the
work of all: status events, scheduled sends, verification codes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate.v1 import verification_service_pb2 as verify_pb
from smsgate.v1 import verification_service_pb2_grpc as verify_grpc

from tests.conftest import ServerFactory
from tests.pipeline_support import S, sent_counts, wait_for_statuses
from tests.support import bearer
from tests.test_watch import FULL_LIFE, collect, started

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.verification_service_pb2_grpc import VerificationServiceAsyncStub

pytestmark = pytest.mark.cluster

# Every replica must share it: codes and tokens are keyed with it.
SECRET = "replicas-share-this-secret"


@dataclass
class Replicas:
    """Channels to two API replicas, the token of an app, the workers' send logs."""

    apis: list[grpc.aio.Channel]
    token: str
    logs: list[Path]

    def sms(self, i: int) -> SmsServiceAsyncStub:
        stub: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(self.apis[i])
        return stub

    def codes(self, i: int) -> VerificationServiceAsyncStub:
        stub: VerificationServiceAsyncStub = verify_grpc.VerificationServiceStub(self.apis[i])
        return stub


@pytest.fixture
async def replicas(make_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Replicas]:
    apis = [await make_server(role="api", server_secret=SECRET) for _ in range(2)]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    for log in logs:
        await make_server(role="worker", server_secret=SECRET, sim_log=log)
    token = (await apis[0].apps.create("replicas")).token
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") for api in apis]
    yield Replicas(channels, token, logs)
    for channel in channels:
        await channel.close()


async def test_a_watch_on_one_api_replica_sees_messages_sent_through_the_other(
    replicas: Replicas,
) -> None:
    call = await started(
        replicas.sms(0).WatchStatus(pb.WatchStatusRequest(), metadata=bearer(replicas.token))
    )
    ids = []
    for i in range(10):
        reply = await replicas.sms(1).SendSms(
            pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="seen"),
            metadata=bearer(replicas.token),
        )
        ids.append(reply.message.id)
    events = await collect(call, until=len(ids) * len(FULL_LIFE))
    call.cancel()
    by_message: dict[str, list[int]] = {}
    for event in events:
        by_message.setdefault(event.message_id, []).append(event.status)
    assert by_message == {i: FULL_LIFE for i in ids}


async def test_scheduled_messages_are_promoted_and_sent_once_by_two_workers(
    replicas: Replicas,
) -> None:
    soon = Timestamp()
    soon.FromMilliseconds(int(time.time() * 1000) + 1000)
    ids = []
    for i in range(20):
        reply = await replicas.sms(i % 2).SendSms(
            pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="later", send_time=soon),
            metadata=bearer(replicas.token),
        )
        assert reply.message.status == S.MESSAGE_STATUS_SCHEDULED
        ids.append(reply.message.id)
    await wait_for_statuses(replicas.sms(0), replicas.token, ids, {S.MESSAGE_STATUS_DELIVERED})
    sent = sent_counts(replicas.logs[0]) + sent_counts(replicas.logs[1])
    assert sent == Counter({i: 1 for i in ids})


async def test_a_code_issued_on_one_api_replica_verifies_on_the_other(
    replicas: Replicas,
) -> None:
    issued = await replicas.codes(0).GenerateCode(
        verify_pb.GenerateCodeRequest(
            phone_number="+14155550123", scope="login", delivery=verify_pb.CODE_DELIVERY_CALLER
        ),
        metadata=bearer(replicas.token),
    )
    checked = await replicas.codes(1).VerifyCode(
        verify_pb.VerifyCodeRequest(verification_id=issued.verification_id, code=issued.code),
        metadata=bearer(replicas.token),
    )
    assert checked.result == verify_pb.VerificationResult.VERIFICATION_RESULT_VERIFIED
