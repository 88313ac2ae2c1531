"""UsageService: an app's usage and cost, protobuf <-> domain."""

from __future__ import annotations

from typing import Any

import grpc
from smsgate.v1 import usage_service_pb2 as pb
from smsgate.v1 import usage_service_pb2_grpc as pb_grpc

from smsgate_server.api.guard import current_app
from smsgate_server.domain.prices import format_micros
from smsgate_server.services.usage import UsageService, day_date

__all__ = ["UsageServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class UsageServicer(pb_grpc.UsageServiceServicer):
    """Translates UsageService calls to UsageService (the use case) calls."""

    def __init__(self, usage: UsageService) -> None:
        self.usage = usage

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        usage = await self.usage.get(current_app().key, request.start_date, request.end_date)
        return pb.GetUsageResponse(
            rows=[
                pb.UsageRow(
                    date=day_date(row.day),
                    # Status values are MessageStatus numbers (domain/status.py).
                    status=int(row.key.status),  # type: ignore[arg-type]
                    provider=row.key.provider,
                    region_code=row.key.region,
                    messages=row.messages,
                    segments=row.segments,
                    cost=format_micros(row.cost_micros),
                    currency_code=row.key.currency,
                )
                for row in usage.rows
            ],
            totals=[
                pb.UsageTotal(
                    currency_code=t.currency,
                    messages=t.messages,
                    segments=t.segments,
                    cost=format_micros(t.cost_micros),
                )
                for t in usage.totals
            ],
        )
