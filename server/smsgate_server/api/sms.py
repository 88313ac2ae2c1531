"""SmsService: sending, reading and watching messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import message_to_proto
from smsgate_server.api.guard import current_app
from smsgate_server.domain.errors import InvalidArgument, NotImplementedYet
from smsgate_server.sending import SendCommand, SendingService

__all__ = ["SmsServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class SmsServicer(pb_grpc.SmsServiceServicer):
    """Translates SmsService calls to SendingService calls."""

    def __init__(self, sending: SendingService) -> None:
        self.sending = sending

    async def SendSms(self, request: pb.SendSmsRequest, context: Context) -> pb.SendSmsResponse:
        which = request.WhichOneof("content")
        if which is None:
            raise InvalidArgument.field(
                "text", "one of text or template is required", reason="EMPTY_CONTENT"
            )
        if which == "template":
            raise NotImplementedYet(
                "template content needs TemplateService, which this server does not provide yet",
                reason="TEMPLATES_NOT_IMPLEMENTED",
            )
        message = await self.sending.send(
            current_app().key,
            SendCommand(
                phone=request.phone_number,
                text=request.text,
                send_at_ms=request.send_at.ToMilliseconds() if request.HasField("send_at") else 0,
                request_id=request.request_id,
                sender=request.sender_id,
                labels=dict(request.labels),
                fingerprint=request.SerializeToString(deterministic=True),
            ),
        )
        return pb.SendSmsResponse(message=message_to_proto(message))

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Context
    ) -> pb.GetMessageResponse:
        message = await self.sending.get(current_app().key, request.message_id)
        return pb.GetMessageResponse(message=message_to_proto(message))

    async def CancelMessage(
        self, request: pb.CancelMessageRequest, context: Context
    ) -> pb.CancelMessageResponse:
        message = await self.sending.cancel(current_app().key, request.message_id)
        return pb.CancelMessageResponse(message=message_to_proto(message))

    async def BatchSend(
        self, request: pb.BatchSendRequest, context: Context
    ) -> pb.BatchSendResponse:
        raise NotImplementedYet("BatchSend is not built yet (delivery pipeline, issue 6)")

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        raise NotImplementedYet("ListMessages is not built yet (delivery pipeline, issue 6)")

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Context
    ) -> pb.CancelBatchResponse:
        raise NotImplementedYet("CancelBatch is not built yet (delivery pipeline, issue 6)")

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        raise NotImplementedYet("WatchStatus is not built yet (delivery pipeline, issue 6)")
        yield pb.WatchStatusResponse()  # pragma: no cover - makes this an async generator
