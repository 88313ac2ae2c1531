"""Replicas as real processes: two api and two worker ``smsgate-server``
processes (``SMSGATE_ROLE``) on the test Redis Cluster pass the cross-replica
tests of ``test_replicas.py`` (a watch on one api sees messages sent through
the other, scheduled messages promoted and sent once by two workers, a code
issued on one api verifies on the other), each process with its own event
loop, Redis clients and shard leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from smsgate_server.store.apps import AppStore
from smsgate_server.store.connection import connect

from tests.processes import Servers
from tests.test_replicas import (
    SECRET,
    Replicas,
    test_a_code_issued_on_one_api_replica_verifies_on_the_other,
    test_a_watch_on_one_api_replica_sees_messages_sent_through_the_other,
    test_scheduled_messages_are_promoted_and_sent_once_by_two_workers,
)

pytestmark = pytest.mark.cluster(only=True)

__all__ = [
    "test_a_code_issued_on_one_api_replica_verifies_on_the_other",
    "test_a_watch_on_one_api_replica_sees_messages_sent_through_the_other",
    "test_scheduled_messages_are_promoted_and_sent_once_by_two_workers",
]


@pytest.fixture
async def replicas(redis_url: str, servers: Servers, tmp_path: Path) -> AsyncIterator[Replicas]:
    """Two api and two worker processes on the cluster, started together."""
    common = {"REDIS_URL": redis_url, "SERVER_SECRET": SECRET, "SHARDS": "16"}
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    started = [servers.spawn(tmp_path / f"api-{i}", ROLE="api", **common) for i in range(2)]
    for i, log in enumerate(logs):
        servers.spawn(tmp_path / f"worker-{i}", ROLE="worker", SIM_LOG=str(log), **common)
    for server in servers.started:
        server.wait_serving()
    connection = await connect(redis_url, pool_size=2)
    try:
        token = (await AppStore(connection.client).create("replicas")).token
    finally:
        await connection.aclose()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") for api in started]
    yield Replicas(channels, token, logs)
    for channel in channels:
        await channel.close()
