"""InboundService: an app's replies, protobuf <-> domain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from smsgate.v1 import inbound_service_pb2 as pb
from smsgate.v1 import inbound_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import timestamp_from_ms
from smsgate_server.api.guard import current_app
from smsgate_server.services.replies import ReplyService
from smsgate_server.services.reply_watch import ReplyHub
from smsgate_server.store.replies import StoredReply

__all__ = ["InboundServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def reply_to_proto(r: StoredReply) -> pb.Reply:
    return pb.Reply(
        phone_number=r.phone,
        text=r.text,
        provider=r.provider,
        receive_time=timestamp_from_ms(r.time_ms),
        opted_out=r.opted_out,
    )


class InboundServicer(pb_grpc.InboundServiceServicer):
    """Translates InboundService calls to ReplyService and ReplyHub calls."""

    def __init__(self, replies: ReplyService, hub: ReplyHub) -> None:
        self.replies = replies
        self.hub = hub

    async def ListReplies(
        self, request: pb.ListRepliesRequest, context: Context
    ) -> pb.ListRepliesResponse:
        replies, token = await self.replies.page(
            current_app().key, request.page_size, request.page_token
        )
        return pb.ListRepliesResponse(
            replies=[reply_to_proto(r) for r in replies], next_page_token=token
        )

    async def WatchReplies(
        self, request: pb.WatchRepliesRequest, context: Context
    ) -> AsyncIterator[pb.WatchRepliesResponse]:
        watch = await self.hub.open(current_app().key, request.resume_token)
        try:
            # The subscription is live: its start token goes out first.
            yield pb.WatchRepliesResponse(resume_token=watch.start_token())
            async for reply, token in watch.replies():
                yield pb.WatchRepliesResponse(reply=reply_to_proto(reply), resume_token=token)
        finally:
            # Also on cancellation (client gone), which must propagate.
            watch.close()
