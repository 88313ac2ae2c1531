"""Fixtures: a real redis-server per session, a real smsgate server per test
(gRPC on port 0), an app and a channel to call it with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from smsgate.v1 import sms_service_pb2_grpc
from smsgate_server.config import Settings
from smsgate_server.runtime import Running, start
from smsgate_server.store.embedded_redis import EmbeddedRedis

from tests.processes import servers  # noqa: F401 - the process fixture, for every test module

ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (AOF on) for the whole test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), publish_url=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def server_settings(redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a server under test: port 0, fast simulator, given overrides."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "grpc_address": "127.0.0.1:0",
        "http_address": "127.0.0.1:0",
        "data_dir": data_dir,
        "sim_latency_ms": 0,
        "sim_receipt_delay_ms": 0,
        "sweep_interval_seconds": 0.05,
        "shutdown_grace_seconds": 2,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_server(redis_url: str, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Starts servers with setting overrides; stops them after the test."""
    started: list[Running] = []

    async def factory(**overrides: Any) -> Running:
        running = await start(server_settings(redis_url, tmp_path / "data", **overrides))
        started.append(running)
        return running

    yield factory
    for running in reversed(started):
        await running.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> Running:
    """A server with default test settings."""
    return await make_server()


@pytest.fixture
async def token(server: Running) -> str:
    """Token of a fresh app on ``server``."""
    return (await server.apps.create("test-app")).token


@pytest.fixture
async def channel(server: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture
def sms(channel: grpc.aio.Channel) -> sms_service_pb2_grpc.SmsServiceAsyncStub:
    return sms_service_pb2_grpc.SmsServiceStub(channel)
