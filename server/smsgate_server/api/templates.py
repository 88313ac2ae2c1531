"""TemplateService: templates and previews, protobuf <-> domain."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import template_service_pb2 as pb
from smsgate.v1 import template_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import timestamp_from_ms
from smsgate_server.api.guard import current_app
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.templates import Template
from smsgate_server.services.templates import (
    Preview,
    RenderCommand,
    TemplateDraft,
    TemplateService,
)

__all__ = ["TemplateServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def template_to_proto(t: Template) -> pb.Template:
    """The API view of one version of a template."""
    return pb.Template(
        id=t.id,
        display_name=t.display_name,
        kind=t.kind.value,  # type: ignore[arg-type]
        body=t.body,
        variables=t.variables,
        provider_template_ids=t.provider_template_ids,
        create_time=timestamp_from_ms(t.create_time_ms),
        update_time=timestamp_from_ms(t.update_time_ms),
        etag=t.etag,
        version=t.version,
        sign_name=t.sign_name,
    )


def _draft(request: Any) -> TemplateDraft:
    if not request.HasField("template"):
        raise InvalidArgument.field("template", "is required")
    t = request.template
    return TemplateDraft(
        id=t.id,
        display_name=t.display_name,
        kind=t.kind,
        body=t.body,
        sign_name=t.sign_name,
        provider_template_ids=dict(t.provider_template_ids),
        etag=t.etag,
    )


def _preview_to_proto(p: Preview) -> pb.RenderTemplateResponse:
    metrics = p.split.metrics
    return pb.RenderTemplateResponse(
        text=p.text,
        encoding=metrics.encoding.value,  # type: ignore[arg-type]
        characters=metrics.characters,
        segments=metrics.segments,
        segment_texts=p.split.parts,
        sender_id=p.sender_id,
        template_version=p.template_version,
    )


class TemplateServicer(pb_grpc.TemplateServiceServicer):
    """Translates TemplateService calls to TemplateService (the use case) calls."""

    def __init__(self, templates: TemplateService) -> None:
        self.templates = templates

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: Context
    ) -> pb.CreateTemplateResponse:
        template = await self.templates.create(
            current_app().key, _draft(request), request_id=request.request_id
        )
        return pb.CreateTemplateResponse(template=template_to_proto(template))

    async def GetTemplate(
        self, request: pb.GetTemplateRequest, context: Context
    ) -> pb.GetTemplateResponse:
        template = await self.templates.get(current_app().key, request.template_id, request.version)
        return pb.GetTemplateResponse(template=template_to_proto(template))

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        templates, token = await self.templates.page(
            current_app().key, request.page_size, request.page_token
        )
        return pb.ListTemplatesResponse(
            templates=[template_to_proto(t) for t in templates], next_page_token=token
        )

    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: Context
    ) -> pb.UpdateTemplateResponse:
        template = await self.templates.update(
            current_app().key, _draft(request), list(request.update_mask.paths)
        )
        return pb.UpdateTemplateResponse(template=template_to_proto(template))

    async def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: Context
    ) -> pb.DeleteTemplateResponse:
        await self.templates.delete(current_app().key, request.template_id, etag=request.etag)
        return pb.DeleteTemplateResponse()

    async def RenderTemplate(
        self, request: pb.RenderTemplateRequest, context: Context
    ) -> pb.RenderTemplateResponse:
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidArgument.field("template_id", "is required (or an inline body)")
        preview = await self.templates.render(
            current_app().key,
            RenderCommand(
                template_id=request.template_id,
                version=request.template_version,
                body=request.body if source == "body" else None,
                kind=request.kind,
                params=dict(request.params),
                sign_name=request.sign_name,
                phone=request.phone_number,
                region=request.region_code,
            ),
        )
        return _preview_to_proto(preview)
