"""Helpers for pipeline tests: waiting on statuses, reading the simulator log,
and one app's client on a real server (the ``connect`` fixture) with the
"shipped" template the vendor tests send."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from smsgate.v1 import (
    message_pb2,
    sign_service_pb2_grpc,
    sms_service_pb2_grpc,
    template_service_pb2_grpc,
    usage_service_pb2_grpc,
    verification_service_pb2_grpc,
)
from smsgate.v1 import sign_service_pb2 as spb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate_server.runtime import Running

from tests.support import bearer
from tests.waiting import wait_until

if TYPE_CHECKING:  # the async stub types exist only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.usage_service_pb2_grpc import UsageServiceAsyncStub

S = message_pb2.MessageStatus
TERMINAL = {
    S.MESSAGE_STATUS_DELIVERED,
    S.MESSAGE_STATUS_UNDELIVERED,
    S.MESSAGE_STATUS_FAILED,
    S.MESSAGE_STATUS_CANCELED,
    S.MESSAGE_STATUS_EXPIRED,
}
# The statuses a message sent to a vendor ends in (no test here cancels one).
ENDED = TERMINAL - {S.MESSAGE_STATUS_CANCELED}
CN = "+8613800138000"
US = "+14155550123"
# A sign both Chinese clouds' fakes know, and the "shipped" template's ids there.
SIGN = "阿里云短信测试"
CLOUD_TEMPLATE_IDS = {"tencent": "1110001", "aliyun": "SMS_154950909"}


def describe_statuses(statuses: Mapping[str, message_pb2.MessageStatus.ValueType]) -> str:
    """How many messages are in each status, for a wait that gives up."""
    counts = Counter(S.Name(status) for status in statuses.values())
    return ", ".join(f"{count} {name}" for name, count in counts.most_common())


async def wait_for_statuses(
    sms: SmsServiceAsyncStub,
    token: str,
    ids: list[str],
    done: set[message_pb2.MessageStatus.ValueType],
    timeout: float = 10.0,
) -> dict[str, message_pb2.Message]:
    """GetMessage each id until its status is in ``done``; returns the messages."""
    seen: dict[str, message_pb2.Message] = {}

    async def observe() -> dict[str, message_pb2.Message]:
        pending = [i for i in ids if i not in seen or seen[i].status not in done]
        replies = await asyncio.gather(
            *(
                sms.GetMessage(pb.GetMessageRequest(message_id=i), metadata=bearer(token))
                for i in pending
            )
        )
        for reply in replies:
            seen[reply.message.id] = reply.message
        return seen

    return await wait_until(
        observe,
        lambda messages: all(messages[i].status in done for i in ids),
        what=f"{len(ids)} message(s) to reach {sorted(S.Name(s) for s in done)}",
        timeout=timeout,
        describe=lambda messages: describe_statuses({i: m.status for i, m in messages.items()}),
    )


def sent_counts(log: Path) -> Counter[str]:
    """How many times the simulator was handed each message id."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


class Client:
    """One app's stubs on one server."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.token = token
        self.meta = bearer(token)
        self.sms: SmsServiceAsyncStub = sms_service_pb2_grpc.SmsServiceStub(channel)
        self.templates = template_service_pb2_grpc.TemplateServiceStub(channel)
        self.signs = sign_service_pb2_grpc.SignServiceStub(channel)
        self.verification = verification_service_pb2_grpc.VerificationServiceStub(channel)
        self.usage: UsageServiceAsyncStub = usage_service_pb2_grpc.UsageServiceStub(channel)

    async def text(self, phone: str, text: str = "Your order has shipped") -> str:
        reply = await self.sms.SendSms(
            pb.SendSmsRequest(phone_number=phone, text=text), metadata=self.meta
        )
        return reply.message.id

    async def wait(
        self, message_id: str, statuses: set[message_pb2.MessageStatus.ValueType]
    ) -> message_pb2.Message:
        found = await wait_for_statuses(self.sms, self.token, [message_id], statuses)
        return found[message_id]


Connect = Callable[[Running], Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens a client of a fresh app on a server; its channel closes after the test."""
    channels: list[grpc.aio.Channel] = []

    async def open_client(server: Running) -> Client:
        token = (await server.apps.create("pipeline-app")).token
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        channels.append(channel)
        return Client(channel, token)

    yield open_client
    for channel in channels:
        await channel.close()


async def shipped_template(
    client: Client,
    *,
    sign: str = SIGN,
    provider_template_ids: Mapping[str, str] = CLOUD_TEMPLATE_IDS,
) -> None:
    """Creates ``sign`` and the "shipped" notification template under it, with
    these vendors' template ids (by default both Chinese clouds')."""
    await client.signs.CreateSignName(
        spb.CreateSignNameRequest(sign_name=spb.SignName(name=sign)), metadata=client.meta
    )
    await client.templates.CreateTemplate(
        tpb.CreateTemplateRequest(
            template=tpb.Template(
                id="shipped",
                kind=tpb.TEMPLATE_KIND_NOTIFICATION,
                body="您的订单{order}已发货",
                sign_name=sign,
                provider_template_ids=provider_template_ids,
            )
        ),
        metadata=client.meta,
    )


def shipped(order: str = "A1") -> message_pb2.TemplateContent:
    """The "shipped" template's content for one order."""
    return message_pb2.TemplateContent(template_id="shipped", params={"order": order})
