"""InboundService: an app's replies, protobuf <-> domain."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import inbound_service_pb2 as pb
from smsgate.v1 import inbound_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import timestamp_from_ms
from smsgate_server.api.guard import current_app
from smsgate_server.services.replies import ReplyService

__all__ = ["InboundServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class InboundServicer(pb_grpc.InboundServiceServicer):
    """Translates InboundService calls to ReplyService calls."""

    def __init__(self, replies: ReplyService) -> None:
        self.replies = replies

    async def ListReplies(
        self, request: pb.ListRepliesRequest, context: Context
    ) -> pb.ListRepliesResponse:
        replies, token = await self.replies.page(
            current_app().key, request.page_size, request.page_token
        )
        return pb.ListRepliesResponse(
            replies=[
                pb.Reply(
                    phone_number=r.phone,
                    text=r.text,
                    provider=r.provider,
                    receive_time=timestamp_from_ms(r.time_ms),
                    opted_out=r.opted_out,
                )
                for r in replies
            ],
            next_page_token=token,
        )
