"""What one client worker does per call, for each scenario.

An ``Op`` is set up once per client process (on its channel) and then called
by every worker of that process; a call returns how many units it completed
(requests, recipients, pairs). Requests are built up front so the client
spends its time in gRPC, the same way for the echo ceiling and for smsgate.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import grpc
from smsgate.v1 import message_pb2, sms_service_pb2, verification_service_pb2
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate.v1 import verification_service_pb2_grpc as ver_grpc

from bench.echo_server import ECHO_METHOD

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.verification_service_pb2_grpc import VerificationServiceAsyncStub

__all__ = ["OPS", "Op", "Unverified", "phone", "send_request"]

TEXT = "Your order 4711 has shipped and arrives tomorrow. Track it at example.com/t/9f3k"
Metadata = tuple[tuple[str, str], ...]


def phone(client: int, n: int, prefix: str = "138") -> str:
    """A valid, distinct mainland-China mobile number for client ``client``."""
    return f"+86{prefix}{client % 100:02d}{n % 1_000_000:06d}"


def send_request(client: int, n: int) -> sms_service_pb2.SendSmsRequest:
    """The SendSms request used everywhere (the echo payload is this, too)."""
    return sms_service_pb2.SendSmsRequest(phone_number=phone(client, n), text=TEXT)


class Unverified(Exception):
    """A verification pair whose VerifyCode did not say VERIFIED."""


class Op:
    """One scenario's call; subclasses set up stubs and requests."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata, client: int) -> None:
        self.channel = channel
        self.metadata = metadata
        self.client = client
        self.rng = random.Random(client)
        self.sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        self.requests = [send_request(client, n) for n in range(1000)]

    async def setup(self) -> None:
        """Run once before the clock starts."""

    async def __call__(self, n: int) -> int:
        raise NotImplementedError


class EchoOp(Op):
    """The bare grpc.aio ceiling: the SendSms request bytes, echoed."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata, client: int) -> None:
        super().__init__(channel, metadata, client)
        self.echo: Any = channel.unary_unary(
            ECHO_METHOD,
            request_serializer=sms_service_pb2.SendSmsRequest.SerializeToString,
            response_deserializer=sms_service_pb2.SendSmsRequest.FromString,
        )

    async def __call__(self, n: int) -> int:
        await self.echo(self.requests[n % 1000], metadata=self.metadata)
        return 1


class SendSmsOp(Op):
    """SendSms with free text to one of 1,000 numbers."""

    async def __call__(self, n: int) -> int:
        await self.sms.SendSms(self.requests[n % 1000], metadata=self.metadata)
        return 1


class PolicySendOp(Op):
    """SendSms with free text to a new number each call: an app whose sending
    policy keeps its per-number caps runs the policy's script for every send
    and never meets a cap (one request built per call: ~2 us of the client)."""

    async def __call__(self, n: int) -> int:
        request = sms_service_pb2.SendSmsRequest(
            phone_number=phone(self.client, n, "135"), text=TEXT
        )
        await self.sms.SendSms(request, metadata=self.metadata)
        return 1


class GetMessageOp(Op):
    """GetMessage of one of 256 messages this client sent in setup."""

    ids: list[str]

    async def setup(self) -> None:
        self.ids = []
        for request in self.requests[:256]:
            reply = await self.sms.SendSms(request, metadata=self.metadata)
            self.ids.append(reply.message.id)

    async def __call__(self, n: int) -> int:
        request = sms_service_pb2.GetMessageRequest(message_id=self.ids[n % len(self.ids)])
        await self.sms.GetMessage(request, metadata=self.metadata)
        return 1


class ListMessagesOp(Op):
    """ListMessages with no filter: the first page (50) of the app's messages."""

    async def __call__(self, n: int) -> int:
        await self.sms.ListMessages(sms_service_pb2.ListMessagesRequest(), metadata=self.metadata)
        return 1


BATCH_SIZE = 1000


def batch_request(client: int, k: int, size: int = BATCH_SIZE) -> sms_service_pb2.BatchSendRequest:
    """A BatchSend of ``size`` distinct recipients sharing one text."""
    return sms_service_pb2.BatchSendRequest(
        recipients=[
            sms_service_pb2.BatchRecipient(phone_number=phone(client, k * size + i, "139"))
            for i in range(size)
        ],
        text=TEXT,
    )


class BatchSendOp(Op):
    """BatchSend of 1,000 recipients; a unit is an accepted recipient."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata, client: int) -> None:
        super().__init__(channel, metadata, client)
        self.batches = [batch_request(client, k) for k in range(4)]

    async def __call__(self, n: int) -> int:
        reply = await self.sms.BatchSend(self.batches[n % 4], metadata=self.metadata)
        return int(reply.accepted_count)


class VerifyPairOp(Op):
    """GenerateCode (returned to the caller) then VerifyCode with that code.

    Every pair uses a fresh number, so resend cooldowns and per-number caps
    never trigger.
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata, client: int) -> None:
        super().__init__(channel, metadata, client)
        self.verify: VerificationServiceAsyncStub = ver_grpc.VerificationServiceStub(channel)

    async def __call__(self, n: int) -> int:
        generated = await self.verify.GenerateCode(
            verification_service_pb2.GenerateCodeRequest(
                phone_number=phone(self.client, n, "137"),
                scope="login",
                delivery=verification_service_pb2.CODE_DELIVERY_CALLER,
            ),
            metadata=self.metadata,
        )
        checked = await self.verify.VerifyCode(
            verification_service_pb2.VerifyCodeRequest(
                verification_id=generated.verification_id, code=generated.code
            ),
            metadata=self.metadata,
        )
        if checked.result != verification_service_pb2.VERIFICATION_RESULT_VERIFIED:
            raise Unverified(verification_service_pb2.VerificationResult.Name(checked.result))
        return 1


OPS: dict[str, type[Op]] = {
    "echo": EchoOp,
    "sendsms": SendSmsOp,
    "sendsms-api": SendSmsOp,
    "sendsms-policy": PolicySendOp,
    "getmessage": GetMessageOp,
    "listmessages": ListMessagesOp,
    "batchsend": BatchSendOp,
    "verify": VerifyPairOp,
}

DELIVERED = message_pb2.MESSAGE_STATUS_DELIVERED
