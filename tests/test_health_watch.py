"""Health Watch through the request guard: grpc_health's aio Watch is a
coroutine that writes with ``context.write``, not an async generator, and the
guard's wrapper of open methods must serve it as it is."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def test_a_valid_health_watch_streams_serving(channel: grpc.aio.Channel) -> None:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()
