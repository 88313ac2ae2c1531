"""The HTTP side port: ``/livez``, ``/readyz`` (and ``/healthz``, its older
name), ``/metrics`` (Prometheus), ``/providers`` (breakers and pace,
provider_endpoints.py), the vendors' delivery-receipt callbacks
(receipt_endpoints.py) and the API over HTTP/JSON (api/connect.py).

Runs on uvicorn in the same event loop as the gRPC server.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from smsgate_server.shared_metrics import ENV
from smsgate_server.usage_metrics import USAGE_METRICS

__all__ = ["HttpSidePort", "build_app"]


def build_app(
    ready: Callable[[], Awaitable[bool]],
    receipts: Sequence[BaseRoute] = (),
    api: Sequence[BaseRoute] = (),
    providers: Sequence[BaseRoute] = (),
) -> Starlette:
    """The Starlette app; ``ready`` says whether the server can take calls,
    ``receipts`` are the vendors' callbacks, ``api`` the Connect face,
    ``providers`` the read-only ``/providers``."""

    async def livez(request: Request) -> Response:
        # The process answers: a restart would not help anything else.
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok = await ready()
        return JSONResponse(
            {"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/livez", livez),
            Route("/readyz", readyz),
            # The one endpoint of earlier versions, kept for probes that use it.
            Route("/healthz", readyz),
            Route("/metrics", metrics),
            *providers,
            *receipts,
            *api,
        ]
    )


def _registry() -> CollectorRegistry:
    """This process's metrics; with SMSGATE_PROCESSES > 1, every process's,
    merged from their files (shared_metrics.py)."""
    if ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    # prometheus_client's multiprocess module is not annotated.
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # Read from Redis, not from the processes' files: this process's reading.
    registry.register(USAGE_METRICS)
    return registry


class _Server(uvicorn.Server):
    # smsgate owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpSidePort:
    """uvicorn serving the side-port app on an already-bound socket."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = _Server(self.config)

    async def serve(self, sock: object) -> None:
        await self.server.serve(sockets=[sock])  # type: ignore[list-item]

    def stop(self) -> None:
        self.server.should_exit = True
