"""Replicas as real processes: two api and two worker ``smsgate-server``
processes (``SMSGATE_ROLE``) on the test Redis Cluster pass the cross-replica
tests of ``test_replicas.py`` (a watch on one api sees messages sent through
the other, scheduled messages promoted and sent once by two workers, a code
issued on one api verifies on the other), each process with its own event
loop, Redis clients and shard leases; and a worker killed with sends in
flight has its shards and sends taken over by the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.store.apps import AppStore
from smsgate_server.store.connection import connect
from smsgate_server.store.keys import GROUP, ShardKeys, lease_keys

from tests.cluster import LocalCluster
from tests.pipeline_support import S
from tests.processes import Servers
from tests.support import bearer
from tests.test_replicas import (
    SECRET,
    Replicas,
    test_a_code_issued_on_one_api_replica_verifies_on_the_other,
    test_a_watch_on_one_api_replica_sees_messages_sent_through_the_other,
    test_scheduled_messages_are_promoted_and_sent_once_by_two_workers,
)
from tests.waiting import wait_until_blocking

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


def test_a_killed_workers_shards_and_sends_are_taken_over(
    redis_url: str, redis_cluster: LocalCluster, servers: Servers, tmp_path: Path
) -> None:
    """SIGKILL a worker with sends in flight: the other takes its shards once
    its leases run out and re-claims what it held, so every message ends its
    dispatch (within the visibility timeout, plus the send itself): delivered,
    or, handed to the simulator by the victim, an unknown outcome never sent
    again (SENT, SEND_CUT_OFF)."""
    common = {
        "REDIS_URL": redis_url,
        "SERVER_SECRET": SECRET,
        "SHARDS": "8",
        "VISIBILITY_TIMEOUT_SECONDS": "3",
        # Long enough to kill a worker mid-send, short of the provider timeout.
        "SIM_LATENCY_MS": "1500",
    }
    api = servers.spawn(tmp_path / "api", ROLE="api", **common)
    survivor = servers.spawn(tmp_path / "w1", ROLE="worker", **common)
    victim = servers.spawn(tmp_path / "w2", ROLE="worker", **common)
    for server in servers.started:
        server.wait_serving()
    _, owners = lease_keys()

    def lease_pids() -> list[int]:
        with redis_cluster.master_of(owners).client() as client:
            return sorted(_owner_pids(client.hgetall(owners)).values())

    wait_until_blocking(
        lease_pids,
        lambda pids: len(pids) == 8 and set(pids) == {survivor.process.pid, victim.process.pid},
        what="both workers to hold leases",
    )
    token = _app_token(redis_url)
    sms = api.sms()
    ids = [
        sms.SendSms(
            pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="kill"),
            metadata=bearer(token),
        ).message.id
        for i in range(40)
    ]
    wait_until_blocking(
        lambda: _pending_of(redis_cluster, victim.process.pid),
        lambda pending: pending > 0,
        what="the victim to hold sends in flight",
    )

    victim.process.kill()
    victim.process.wait()

    def outcomes() -> list[tuple[int, str]]:
        messages = [
            sms.GetMessage(pb.GetMessageRequest(message_id=i), metadata=bearer(token)).message
            for i in ids
        ]
        return [(m.status, m.error.code) for m in messages]

    cut_off = (S.MESSAGE_STATUS_SENT, "SEND_CUT_OFF")
    final = wait_until_blocking(
        outcomes,
        lambda found: all(o in {(S.MESSAGE_STATUS_DELIVERED, ""), cut_off} for o in found),
        what="every message DELIVERED, or SENT with an unknown outcome",
        timeout=30,
    )
    assert cut_off in final, "the victim's in-flight sends were not re-claimed"
    assert set(lease_pids()) == {survivor.process.pid}


def _owner_pids(owners: dict[bytes, bytes]) -> dict[int, int]:
    """Shard -> pid of the process holding its lease ("host-pid-hex expiry")."""
    return {int(s): int(v.decode().split(" ")[0].rsplit("-", 2)[1]) for s, v in owners.items()}


def _pending_of(cluster: LocalCluster, pid: int) -> int:
    """Queue entries the consumers of process ``pid`` hold unacknowledged."""
    held = 0
    for shard in range(8):
        queue = ShardKeys(shard).queue
        with cluster.master_of(queue).client() as client:
            for consumer in client.xinfo_consumers(queue, GROUP):
                if f"-{pid}-" in consumer["name"].decode():
                    held += int(consumer["pending"])
    return held


def _app_token(redis_url: str) -> str:
    async def create() -> str:
        connection = await connect(redis_url, pool_size=2)
        try:
            return (await AppStore(connection.client).create("takeover")).token
        finally:
            await connection.aclose()

    return asyncio.run(create())
