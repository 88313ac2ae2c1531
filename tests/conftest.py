"""Fixtures: a real redis-server per session, a real smsgate server per test
(gRPC on port 0), an app and a channel to call it with.

Tests marked ``cluster`` run twice, on the standalone Redis and on a real
Redis Cluster of 3 masters and 3 replicas (``tests/cluster.py``, started once
per session, only when such a test runs); ``cluster(only=True)``, on the
cluster alone. ``SMSGATE_TEST_CLUSTER=all`` runs
every test that uses ``redis_url`` on both.
"""

from __future__ import annotations

import os
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

from tests.cluster import LocalCluster
from tests.pipeline_support import connect  # noqa: F401 - the vendor tests' client fixture
from tests.processes import servers  # noqa: F401 - the process fixture, for every test module

ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (AOF on) for the whole test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), publish_url=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real Redis Cluster (3 masters, 3 replicas, AOF on) for the session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``cluster`` (all, with SMSGATE_TEST_CLUSTER=all) that use
    Redis run on the standalone Redis and on the cluster; ``cluster(only=True)``
    on the cluster alone."""
    if "redis_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("cluster")
    if marker is not None and marker.kwargs.get("only"):
        metafunc.parametrize("redis_kind", ["cluster"], indirect=True)
    elif marker is not None or os.environ.get("SMSGATE_TEST_CLUSTER") == "all":
        metafunc.parametrize("redis_kind", ["standalone", "cluster"], indirect=True)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """``standalone`` or ``cluster``: which Redis this test runs on."""
    return str(getattr(request, "param", "standalone"))


@pytest.fixture
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> str:
    """The session Redis (or cluster), emptied for this test."""
    if redis_kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        # A test that killed a node leaves it to restart; the next one needs
        # every master with its replica back.
        cluster.wait_healthy()
        cluster.flush()
        return cluster.url
    server: EmbeddedRedis = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


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
        # The sending policy's caps and quiet hours are on by default; tests of
        # other features send one text to one number many times, at any hour.
        # tests/test_policy.py turns them on.
        "policy_same_content_seconds": 0,
        "policy_per_number_day": 0,
        "policy_quiet_hours": "off",
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
