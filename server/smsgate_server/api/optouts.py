"""OptOutService: an app's opt-out list, protobuf <-> domain."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import opt_out_service_pb2 as pb
from smsgate.v1 import opt_out_service_pb2_grpc as pb_grpc

from smsgate_server.api.guard import current_app
from smsgate_server.services.optouts import OptOutService

__all__ = ["OptOutServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class OptOutServicer(pb_grpc.OptOutServiceServicer):
    """Translates OptOutService calls to OptOutService (the use case) calls."""

    def __init__(self, optouts: OptOutService) -> None:
        self.optouts = optouts

    async def AddOptOut(
        self, request: pb.AddOptOutRequest, context: Context
    ) -> pb.AddOptOutResponse:
        app = current_app()
        phone, added = await self.optouts.add(app.key, request.phone_number, app.numbers)
        return pb.AddOptOutResponse(phone_number=phone, added=added)

    async def RemoveOptOut(
        self, request: pb.RemoveOptOutRequest, context: Context
    ) -> pb.RemoveOptOutResponse:
        app = current_app()
        phone, removed = await self.optouts.remove(app.key, request.phone_number, app.numbers)
        return pb.RemoveOptOutResponse(phone_number=phone, removed=removed)

    async def CheckOptOut(
        self, request: pb.CheckOptOutRequest, context: Context
    ) -> pb.CheckOptOutResponse:
        app = current_app()
        phone, opted_out = await self.optouts.check(app.key, request.phone_number, app.numbers)
        return pb.CheckOptOutResponse(phone_number=phone, opted_out=opted_out)

    async def ListOptOuts(
        self, request: pb.ListOptOutsRequest, context: Context
    ) -> pb.ListOptOutsResponse:
        phones, token = await self.optouts.page(
            current_app().key, request.page_size, request.page_token
        )
        return pb.ListOptOutsResponse(phone_numbers=phones, next_page_token=token)
