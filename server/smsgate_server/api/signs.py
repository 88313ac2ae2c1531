"""SignService: an app's sign names, protobuf <-> domain."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import sign_service_pb2 as pb
from smsgate.v1 import sign_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import timestamp_from_ms
from smsgate_server.api.guard import current_app
from smsgate_server.services.signs import SignService
from smsgate_server.store.signs import StoredSign

__all__ = ["SignServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _sign_to_proto(s: StoredSign) -> pb.SignName:
    return pb.SignName(
        name=s.name, is_default=s.is_default, create_time=timestamp_from_ms(s.create_time_ms)
    )


class SignServicer(pb_grpc.SignServiceServicer):
    """Translates SignService calls to SignService (the use case) calls."""

    def __init__(self, signs: SignService) -> None:
        self.signs = signs

    async def CreateSignName(
        self, request: pb.CreateSignNameRequest, context: Context
    ) -> pb.CreateSignNameResponse:
        sign = await self.signs.create(
            current_app().key,
            request.sign_name.name,
            make_default=request.sign_name.is_default,
        )
        return pb.CreateSignNameResponse(sign_name=_sign_to_proto(sign))

    async def ListSignNames(
        self, request: pb.ListSignNamesRequest, context: Context
    ) -> pb.ListSignNamesResponse:
        signs = await self.signs.list(current_app().key)
        return pb.ListSignNamesResponse(sign_names=[_sign_to_proto(s) for s in signs])

    async def SetDefaultSignName(
        self, request: pb.SetDefaultSignNameRequest, context: Context
    ) -> pb.SetDefaultSignNameResponse:
        name = await self.signs.set_default(current_app().key, request.name)
        return pb.SetDefaultSignNameResponse(name=name)

    async def DeleteSignName(
        self, request: pb.DeleteSignNameRequest, context: Context
    ) -> pb.DeleteSignNameResponse:
        await self.signs.delete(current_app().key, request.name)
        return pb.DeleteSignNameResponse()
