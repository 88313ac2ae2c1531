"""A master of the Redis Cluster dies (SIGKILL) while smsgate accepts
thousands of messages, its replica takes over, and the old master comes back
as the new one's replica: every message answered OK reaches a terminal state,
and none is sent twice beyond those in flight at the kill.

Accepting waits for a replica (WAIT, ``SMSGATE_REDIS_WAIT_REPLICAS``, 1 on a
cluster by default), so what was answered OK is on the replica that becomes
master; while that master has no replica, its shards answer UNAVAILABLE and
clients retry with their request_id. The test runs a cluster of its own: it
kills one of its masters.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate_server.domain.status import TERMINAL
from smsgate_server.runtime import Running, start
from smsgate_server.store.keys import GROUP, ShardKeys

from tests.cluster import ClusterNode, LocalCluster
from tests.conftest import server_settings
from tests.pipeline_support import sent_counts
from tests.support import bearer
from tests.waiting import wait_until

# A scheduled send: the message stays put in Redis, nothing dispatches it.
LATER = Timestamp(seconds=int(time.time()) + 3600)

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

pytestmark = pytest.mark.slow

MESSAGES = 3000
CLIENTS = 32
SHARDS = 4
# A call that fails (UNAVAILABLE while the master is gone) is retried with its
# request_id for at most this long.
RETRY_SECONDS = 30.0
# How long the killed master stays down after its replica took over.
RESTART_AFTER_SECONDS = 1.5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own (it loses a master)."""
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def server(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(
        server_settings(
            cluster.url,
            tmp_path / "data",
            shards=SHARDS,
            sim_log=tmp_path / "sent.log",
            # Provider calls take a while, so some are in flight at the kill.
            sim_latency_ms=50,
            # Entries a lost settle left pending are re-claimed soon (and not
            # before the test has counted them).
            visibility_timeout_seconds=5,
            # The accept rate is not what this test is about.
            app_accept_per_second=1_000_000,
        )
    )
    yield running
    await running.stop()


def masters(cluster: LocalCluster) -> list[ClusterNode]:
    return [n for n in cluster.nodes if n.alive and n.info("replication")["role"] == "master"]


def pending_on(node: ClusterNode) -> int:
    """Queue entries of this master's shards claimed by a worker and not yet settled."""
    total = 0
    with node.client() as client:
        for shard in range(SHARDS):
            queue = ShardKeys(shard).queue
            slot = int(client.cluster("keyslot", queue))
            if LocalCluster.serves(client, node.port, slot) and client.exists(queue):
                total += int(client.xpending(queue, GROUP)["pending"])
    return total


async def test_a_master_killed_mid_accept_loses_no_accepted_message(
    cluster: LocalCluster, server: Running, tmp_path: Path
) -> None:
    token = (await server.apps.create("failover")).token
    victim = cluster.master_of(ShardKeys(0).queue)
    (heir,) = cluster.replicas_of(victim)
    victim_shards = {s for s in range(SHARDS) if cluster.master_of(ShardKeys(s).queue) is victim}
    answered: dict[str, str] = {}  # request id -> message id, for each call answered OK
    unavailable = Counter[str]()
    requests = iter(range(MESSAGES))
    killed = asyncio.Event()

    async def client(sms: SmsServiceAsyncStub) -> None:
        for n in requests:
            request = pb.SendSmsRequest(
                phone_number=f"+1415555{n % 10_000:04d}", text=f"failover {n}", request_id=f"r-{n}"
            )
            deadline = time.monotonic() + RETRY_SECONDS
            while True:
                try:
                    reply = await sms.SendSms(request, metadata=bearer(token), timeout=15)
                except grpc.aio.AioRpcError as err:
                    # Only UNAVAILABLE is expected: the master is gone, or a
                    # replica did not confirm in time. Retry with the same id.
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                    unavailable[err.details() or ""] += 1
                    assert time.monotonic() < deadline, (
                        f"r-{n} unavailable for {RETRY_SECONDS}s: {unavailable.most_common(3)}; "
                        f"cluster: {cluster.state() or 'healthy'}; replicas of the new master: "
                        f"{[n.address for n in cluster.replicas_of(heir)]}"
                    )
                    await asyncio.sleep(0.1)
                    continue
                answered[request.request_id] = reply.message.id
                break

    async def kill_midway() -> tuple[int, float]:
        await wait_until(
            lambda: asyncio.sleep(0, len(answered)),
            lambda n: n >= MESSAGES // 3,
            what="a third of the messages answered",
            timeout=60,
        )
        # In flight: claimed by a worker and not settled, as the master knows
        # it just before it dies and as its replica knows it on taking over.
        # Only these may reach the provider a second time.
        before = pending_on(victim)
        cluster.kill(victim)
        started = time.monotonic()
        # The replica takes over at once, without waiting for the cluster to
        # notice the master's death (cluster-node-timeout).
        with heir.client() as client:
            client.execute_command("CLUSTER", "FAILOVER", "FORCE")
        await wait_until(
            lambda: asyncio.to_thread(lambda: heir.info("replication")["role"]),
            lambda role: role == "master",
            what="the replica to become master",
        )
        after = await asyncio.to_thread(pending_on, heir)
        took = time.monotonic() - started
        # The new master has no replica, so no accept on its shards is
        # confirmed (UNAVAILABLE, retried) until the old master, restarted as
        # an orchestrator would, rejoins as its replica.
        await asyncio.sleep(RESTART_AFTER_SECONDS)
        # In this thread: a node dies with the thread that started it.
        cluster.restart(victim)
        await asyncio.to_thread(cluster.wait_healthy)
        assert cluster.replicas_of(heir) == [victim]
        killed.set()
        return before + after, took

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        began = time.monotonic()
        kill = asyncio.create_task(kill_midway())
        await asyncio.gather(*(client(sms) for _ in range(CLIENTS)))
        in_flight, failover_seconds = await kill
        accepted_seconds = time.monotonic() - began
    assert killed.is_set() and len(answered) == MESSAGES

    refs = [(int(mid[12:14], 16), mid) for mid in answered.values()]

    # get_many reads by app: the app key is the token's first part.
    app = token.split(".", 1)[0]

    async def ended() -> Counter[str]:
        found = []
        for i in range(0, len(refs), 500):
            found += await server.store.get_many(app, refs[i : i + 500])
        return Counter(
            "missing" if m is None else m.status.name if m.status in TERMINAL else "running"
            for m in found
        )

    outcome = await wait_until(
        ended,
        lambda c: c["DELIVERED"] == MESSAGES,
        what="every accepted message to be delivered",
        timeout=60,
    )
    assert outcome == Counter(DELIVERED=MESSAGES)
    sent = sent_counts(tmp_path / "sent.log")
    twice = {mid: n for mid, n in sent.items() if n > 1}
    print(
        f"\n{MESSAGES} accepted in {accepted_seconds:.1f}s by {CLIENTS} clients; master killed "
        f"after {MESSAGES // 3}, replica serving in {failover_seconds:.2f}s; "
        f"{sum(unavailable.values())} UNAVAILABLE answers retried; "
        f"{in_flight} in flight at the failover, {len(twice)} sent twice; "
        f"UNAVAILABLE: {dict(unavailable.most_common(3))}"
    )
    # Its shards refused accepts while the new master had no replica.
    assert sum(unavailable.values()) > 0
    assert len(twice) <= in_flight
    assert {int(mid[12:14], 16) for mid in twice} <= victim_shards


async def test_without_wait_an_accept_answered_ok_is_lost_with_its_master(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Why accepting waits: replication is asynchronous, so a master can answer
    OK for a write its replica never got, and a failover then loses it. With
    WAIT the same accept answers UNAVAILABLE instead (tests/test_cluster.py)."""
    running = await start(
        server_settings(cluster.url, tmp_path / "data", shards=1, redis_wait_replicas=0)
    )
    try:
        token = (await running.apps.create("no-wait")).token
        victim = cluster.master_of(ShardKeys(0).queue)
        (heir,) = cluster.replicas_of(victim)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
            with cluster.paused([heir]):
                # The replica cannot read, and its link is cut: what the master
                # takes from now on stays on the master.
                with victim.client() as client:
                    client.client_kill_filter(_type="replica")
                reply = await sms.SendSms(
                    pb.SendSmsRequest(phone_number="+14155550123", text="lost", send_time=LATER),
                    metadata=bearer(token),
                )
                cluster.kill(victim)
            with heir.client() as client:
                client.execute_command("CLUSTER", "FAILOVER", "FORCE")
            await wait_until(
                lambda: asyncio.to_thread(lambda: heir.info("replication")["role"]),
                lambda role: role == "master",
                what="the replica to become master",
            )
            with heir.client() as client:
                assert client.keys("*" + reply.message.id) == []
    finally:
        await running.stop()
