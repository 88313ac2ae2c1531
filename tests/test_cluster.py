"""smsgate on a real Redis Cluster (tests/cluster.py): the URL, scripts that a
node lost, pipelines across shards, keys that share slots, a slot moved under
a running server, and accepts that wait for a replica."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
import redis
from pydantic import ValidationError
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate.v1 import template_service_pb2 as template_pb
from smsgate.v1 import template_service_pb2_grpc as template_grpc
from smsgate.v1 import verification_service_pb2 as verify_pb
from smsgate.v1 import verification_service_pb2_grpc as verify_grpc
from smsgate_server.config import Settings
from smsgate_server.domain.ids import new_message_id
from smsgate_server.domain.message import NewMessage
from smsgate_server.redis_urls import parse_cluster_url
from smsgate_server.runtime import StartError
from smsgate_server.store.connection import RedisConnection, connect, redact_url
from smsgate_server.store.keys import ShardKeys
from smsgate_server.store.messages import Accepted, MessageStore
from smsgate_server.store.quota import QuotaStore

from tests.cluster import LocalCluster
from tests.conftest import ServerFactory
from tests.pipeline_support import wait_for_statuses
from tests.support import bearer, details_of

if TYPE_CHECKING:  # the async stub types exist only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.template_service_pb2_grpc import TemplateServiceAsyncStub
    from smsgate.v1.verification_service_pb2_grpc import VerificationServiceAsyncStub

S = message_pb2.MessageStatus


def store_of(connection: RedisConnection, *, wait_replicas: int = 0) -> MessageStore:
    return MessageStore(
        connection.client, shards=4, event_retention_seconds=3600,
        message_retention_seconds=3600, idempotency_ttl_seconds=3600,
        receipt_timeout_seconds=3600, schedule_max_days=35, max_message_age_seconds=3600,
        wait_replicas=wait_replicas,
    )  # fmt: skip


def new_message(shard: int) -> NewMessage:
    now = int(time.time() * 1000)
    return NewMessage(
        id=new_message_id(now, shard), phone="+14155550123", rendered="x", segments=1,
        send_at_ms=now, text="x",
    )  # fmt: skip


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=8)
    yield connection
    await connection.aclose()


def masters(redis_url: str) -> list[redis.Redis]:
    """A client of each master (of the one server when not a cluster)."""
    if not redis_url.startswith("redis+cluster://"):
        return [redis.Redis.from_url(redis_url)]
    nodes = [redis.Redis(host=h, port=p) for h, p in parse_cluster_url(redis_url).nodes]
    found = [n for n in nodes if n.info("replication")["role"] == "master"]
    for n in nodes:
        if n not in found:
            n.close()
    return found


# --- the test cluster and the URL ----------------------------------------


def test_the_test_cluster_has_three_masters_each_with_a_replica_in_sync(
    redis_cluster: LocalCluster,
) -> None:
    assert redis_cluster.state() == ""
    primaries = [n for n in redis_cluster.nodes if n.info("replication")["role"] == "master"]
    assert len(primaries) == 3
    for master in primaries:
        assert len(redis_cluster.replicas_of(master)) == 1
        assert master.info("persistence")["aof_enabled"] == 1


def test_a_cluster_url_names_its_seed_nodes() -> None:
    parsed = parse_cluster_url("rediss+cluster://:s3cret@10.0.0.1:7000,[::1]:7001")
    assert parsed.nodes == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (parsed.password, parsed.tls) == ("s3cret", True)
    assert Settings(redis_url="redis+cluster://a:7000").wait_replicas == 1
    assert Settings(redis_url="redis://a:6379/0").wait_replicas == 0
    assert Settings(redis_url="redis+cluster://a:7000", redis_wait_replicas=0).wait_replicas == 0


def test_the_default_shard_count_follows_the_kind_of_redis() -> None:
    # Many shards spread slots over a cluster's masters; on one server they
    # only make vendor calls smaller (bench/RESULTS.md).
    assert Settings(redis_url="redis+cluster://a:7000").shards == 64
    assert Settings(redis_url="redis://a:6379/0").shards == 16
    assert Settings().shards == 16
    assert Settings(redis_url="redis+cluster://a:7000", shards=8).shards == 8


def test_a_cluster_urls_password_is_not_shown() -> None:
    url = "redis+cluster://user:s3cret@10.0.0.1:7000,10.0.0.2:7000"
    assert redact_url(url) == "redis+cluster://user:***@10.0.0.1:7000,10.0.0.2:7000"


@pytest.mark.parametrize(
    "url", ["redis+cluster://", "redis+cluster://a", "redis+cluster://a:7000/3", "http://a:1"]
)
def test_a_bad_redis_url_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=url)
    assert "redis_url" in str(caught.value)


# --- the store on both --------------------------------------------------------


@pytest.mark.cluster
async def test_messages_of_every_shard_are_read_in_one_pipeline(
    connection: RedisConnection,
) -> None:
    store = store_of(connection)
    sent = [new_message(shard) for shard in range(4)]
    for shard, message in enumerate(sent):
        assert (await store.accept("ak", shard, [message])).kind is Accepted.NEW
    found = await store.get_many("ak", [(shard, m.id) for shard, m in enumerate(sent)])
    assert [m.id if m else None for m in found] == [m.id for m in sent]


@pytest.mark.cluster
async def test_a_node_that_lost_its_scripts_runs_them_again(
    connection: RedisConnection, redis_url: str
) -> None:
    """After a restart or a failover a node has no scripts: EVALSHA falls back to EVAL."""
    plain, confirmed = store_of(connection), store_of(connection, wait_replicas=1)
    for client in masters(redis_url):
        client.script_flush()
        client.close()
    assert (await plain.accept("ak", 0, [new_message(0)])).kind is Accepted.NEW
    for client in masters(redis_url):
        client.script_flush()
        client.close()
    if connection.cluster:  # a replica to confirm exists on the cluster only
        assert (await confirmed.accept("ak", 1, [new_message(1)])).kind is Accepted.NEW


# --- whole flows on the cluster ---------------------------------------------------


@pytest.mark.cluster(only=True)
async def test_every_key_a_server_writes_carries_a_hash_tag(
    redis_cluster: LocalCluster, make_server: ServerFactory
) -> None:
    """Scripts are checked for one slot by redis-py (declared keys) and by Redis
    (keys not on the node); this catches the rest: a key without a tag."""
    server = await make_server()
    token = (await server.apps.create("tags")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        reply = await sms.BatchSend(
            pb.BatchSendRequest(
                recipients=[pb.BatchRecipient(phone_number=f"+1415555{i:04d}") for i in range(20)],
                text="hi",
                request_id="b-1",
            ),
            metadata=bearer(token),
        )
        ids = [r.message_id for r in reply.results]
        await wait_for_statuses(sms, token, ids, {S.MESSAGE_STATUS_DELIVERED})
        codes: VerificationServiceAsyncStub = verify_grpc.VerificationServiceStub(channel)
        code = await codes.GenerateCode(
            verify_pb.GenerateCodeRequest(
                phone_number="+14155550199", scope="login", delivery=verify_pb.CODE_DELIVERY_CALLER
            ),
            metadata=bearer(token),
        )
        verified = await codes.VerifyCode(
            verify_pb.VerifyCodeRequest(verification_id=code.verification_id, code=code.code),
            metadata=bearer(token),
        )
        assert verified.result == verify_pb.VerificationResult.VERIFICATION_RESULT_VERIFIED
        templates: TemplateServiceAsyncStub = template_grpc.TemplateServiceStub(channel)
        await templates.CreateTemplate(
            template_pb.CreateTemplateRequest(
                template=template_pb.Template(
                    id="hello", kind=template_pb.TEMPLATE_KIND_NOTIFICATION, body="Hello {name}"
                )
            ),
            metadata=bearer(token),
        )
    untagged = set()
    for node in redis_cluster.nodes:
        with node.client() as client:
            if client.info("replication")["role"] == "master":
                untagged |= {k.decode() for k in client.scan_iter() if b"{" not in k}
    # The index of every app, read alone (SCARD, SADD beside the app's hash).
    assert untagged <= {"sg:apps"}


async def send(sms: SmsServiceAsyncStub, token: str, text: str, request_id: str = "") -> str:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text=text, request_id=request_id),
        metadata=bearer(token),
    )
    return reply.message.id


@pytest.mark.cluster(only=True)
async def test_a_slot_moved_under_a_running_server_is_followed_not_surfaced(
    redis_cluster: LocalCluster, make_server: ServerFactory
) -> None:
    server = await make_server()
    token = (await server.apps.create("moved")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        before = [await send(sms, token, f"before {i}") for i in range(8)]
        await wait_for_statuses(sms, token, before, {S.MESSAGE_STATUS_DELIVERED})
        # Shard 0's slot (queue, events, messages) moves to another master
        # while the dispatcher blocks reading its queue there.
        key = ShardKeys(0).queue
        with redis_cluster.master_of(key).client() as client:
            slot = int(client.cluster("keyslot", key))
        owner = redis_cluster.master_of(key)
        target = next(n for n in redis_cluster.nodes if n is not owner and n.alive and n in [
            m for m in redis_cluster.nodes if m.info("replication")["role"] == "master"
        ])  # fmt: skip
        redis_cluster.move_slot(slot, target)
        assert redis_cluster.master_of(key) is target
        after = [await send(sms, token, f"after {i}") for i in range(8)]
        messages = await wait_for_statuses(sms, token, before + after, {S.MESSAGE_STATUS_DELIVERED})
    assert len(messages) == 16


@pytest.mark.cluster(only=True)
async def test_an_accept_no_replica_confirms_is_unavailable_and_its_retry_is_safe(
    redis_cluster: LocalCluster, make_server: ServerFactory
) -> None:
    server = await make_server(redis_wait_timeout_ms=300)
    token = (await server.apps.create("wait")).token
    replicas = [n for n in redis_cluster.nodes if n.info("replication")["role"] == "slave"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        with redis_cluster.paused(replicas), pytest.raises(grpc.aio.AioRpcError) as caught:
            await send(sms, token, "once", request_id="r-1")
        assert details_of(caught.value).code == grpc.StatusCode.UNAVAILABLE
        first = await send(sms, token, "once", request_id="r-1")
        again = await send(sms, token, "once", request_id="r-1")
        assert first == again
        await wait_for_statuses(sms, token, [first], {S.MESSAGE_STATUS_DELIVERED})
        listed = await sms.ListMessages(pb.ListMessagesRequest(), metadata=bearer(token))
    assert [m.id for m in listed.messages] == [first]


@pytest.mark.cluster(only=True)
async def test_issuing_and_using_a_code_wait_for_a_replica(
    redis_cluster: LocalCluster, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A code's issue and its use are confirmed by a replica before the answer
    (or logged when none confirms in time); a wrong guess is not waited for."""
    server = await make_server(redis_wait_timeout_ms=200)
    token = (await server.apps.create("codes")).token
    replicas = [n for n in redis_cluster.nodes if n.info("replication")["role"] == "slave"]

    def unconfirmed() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not on a replica yet" in r.getMessage()]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        codes: VerificationServiceAsyncStub = verify_grpc.VerificationServiceStub(channel)
        confirmed = await codes.GenerateCode(
            verify_pb.GenerateCodeRequest(
                phone_number="+14155550100", scope="login", delivery=verify_pb.CODE_DELIVERY_CALLER
            ),
            metadata=bearer(token),
        )
        assert unconfirmed() == []
        with redis_cluster.paused(replicas):
            issued = await codes.GenerateCode(
                verify_pb.GenerateCodeRequest(
                    phone_number="+14155550123",
                    scope="login",
                    delivery=verify_pb.CODE_DELIVERY_CALLER,
                ),
                metadata=bearer(token),
            )
            assert len(unconfirmed()) == 1
            wrong = await codes.VerifyCode(
                verify_pb.VerifyCodeRequest(
                    verification_id=issued.verification_id,
                    code="0" if issued.code != "0" * len(issued.code) else "1",
                ),
                metadata=bearer(token),
            )
            assert wrong.result != verify_pb.VerificationResult.VERIFICATION_RESULT_VERIFIED
            assert len(unconfirmed()) == 1
            used = await codes.VerifyCode(
                verify_pb.VerifyCodeRequest(
                    verification_id=issued.verification_id, code=issued.code
                ),
                metadata=bearer(token),
            )
            assert used.result == verify_pb.VerificationResult.VERIFICATION_RESULT_VERIFIED
            assert len(unconfirmed()) == 2
    assert confirmed.code


@pytest.mark.cluster
async def test_a_server_whose_accepts_cannot_be_confirmed_says_so_at_start(
    make_server: ServerFactory, redis_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The session's single Redis has no replica; every cluster master has one."""
    server = await make_server(redis_wait_replicas=1, redis_wait_timeout_ms=100)
    warned = [
        r.getMessage() for r in caplog.records if "SMSGATE_REDIS_WAIT_REPLICAS" in r.getMessage()
    ]
    token = (await server.apps.create("confirm")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        sms: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(channel)
        if redis_kind == "cluster":
            assert warned == []
            await send(sms, token, "confirmed")
        else:
            assert len(warned) == 1 and "the Redis server" in warned[0]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await send(sms, token, "unconfirmed")
            assert details_of(caught.value).code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.cluster(only=True)
async def test_a_replica_that_persists_nothing_stops_the_start(
    redis_cluster: LocalCluster, make_server: ServerFactory
) -> None:
    """Every node is checked, not one: a replica may be promoted any time."""
    replica = next(n for n in redis_cluster.nodes if n.info("replication")["role"] == "slave")
    with replica.client() as client:
        client.config_set("appendonly", "no")
    try:
        with pytest.raises(StartError, match="persists nothing"):
            await make_server()
    finally:
        with replica.client() as client:
            client.config_set("appendonly", "yes")


@pytest.mark.cluster(only=True)
async def test_the_memory_watermark_reads_the_fullest_master(
    redis_cluster: LocalCluster, connection: RedisConnection
) -> None:
    master = next(n for n in redis_cluster.nodes if n.info("replication")["role"] == "master")
    with master.client() as client:
        client.config_set("maxmemory", 500_000_000)
    try:
        memory = await QuotaStore(
            connection.client, shards=4, message_retention_seconds=60
        ).memory()
    finally:
        with master.client() as client:
            client.config_set("maxmemory", 0)
    assert memory.maxmemory == 500_000_000
