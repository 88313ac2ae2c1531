"""Servicers of capabilities not built yet: every RPC answers UNIMPLEMENTED
naming what is missing, so nothing pretends to work."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import template_service_pb2_grpc

from smsgate_server.domain.errors import NotImplementedYet, Reason

__all__ = ["UnbuiltTemplateServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _unbuilt(capability: str) -> Any:
    async def rpc(self: Any, request: Any, context: Context) -> Any:
        raise NotImplementedYet(f"{capability} is not built yet", reason=Reason.NOT_IMPLEMENTED)

    return rpc


class UnbuiltTemplateServicer(template_service_pb2_grpc.TemplateServiceServicer):
    """TemplateService before templates exist."""

    CreateTemplate = _unbuilt("TemplateService (templates)")
    GetTemplate = _unbuilt("TemplateService (templates)")
    ListTemplates = _unbuilt("TemplateService (templates)")
    UpdateTemplate = _unbuilt("TemplateService (templates)")
    DeleteTemplate = _unbuilt("TemplateService (templates)")
    RenderTemplate = _unbuilt("TemplateService (templates)")
