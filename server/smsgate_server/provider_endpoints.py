"""``/providers`` on the HTTP side port: each provider account's breaker and
pace, read from Redis, so any replica shows what all of them share.

Read only, and without a token like ``/metrics``: it shows states, counts,
times, error codes and rates, never a credential, a number or a message.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsgate_server.dispatch.guard import RedisProviderGate
from smsgate_server.domain.errors import Unavailable

__all__ = ["provider_routes"]


def provider_routes(gate: RedisProviderGate, names: Sequence[str]) -> list[Route]:
    """The ``/providers`` route over the accounts ``names``, in that order."""

    async def providers(request: Request) -> Response:
        try:
            statuses = await gate.status(names)
        except Unavailable:
            return JSONResponse({"error": "redis unavailable"}, status_code=503)
        return JSONResponse({"providers": [s.as_json() for s in statuses]})

    return [Route("/providers", providers)]
