"""Nothing accepted is lost: real server processes killed with SIGKILL, a Redis
restarted mid-dispatch, two servers sharing one Redis."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import grpc
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.domain.status import Status
from smsgate_server.store.embedded_redis import EmbeddedRedis

from tests.pipeline_support import TERMINAL, S, describe_statuses, sent_counts
from tests.processes import Servers
from tests.support import bearer
from tests.waiting import wait_until_blocking

# A slow simulator, one message per provider call, so a kill lands mid-dispatch.
SLOW = {
    "sim_latency_ms": "100",
    "sim_max_batch": "1",
    "dispatch_concurrency": "64",
    "visibility_timeout_seconds": "2",
    "sweep_interval_seconds": "0.05",
    # The simulator's receipts live in its process and die with it (a real
    # vendor would keep calling back): messages left SENT by a kill expire.
    "receipt_timeout_seconds": "5",
}


def create_token(servers: Servers, data_dir: Path, redis_url: str) -> str:
    done = servers.run(data_dir, "apps", "create", "durability", "--json", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


def send_batch(stub: SmsServiceStub, token: str, n: int, **kw: object) -> list[str]:
    reply = stub.BatchSend(
        pb.BatchSendRequest(
            recipients=[pb.BatchRecipient(phone_number=f"+1415555{i:04d}") for i in range(n)],
            text="durable",
            **kw,  # type: ignore[arg-type]
        ),
        metadata=bearer(token),
        timeout=30,
    )
    assert reply.accepted_count == n
    return [r.message_id for r in reply.results]


def statuses(redis_url: str) -> Counter[Status]:
    """Status of every message in Redis, counted."""
    client = redis.Redis.from_url(redis_url)
    counts: Counter[Status] = Counter()
    for key in client.scan_iter(match="sg:{sg*}:m:*", count=1000):
        counts[Status(int(client.hget(key, "st") or 0))] += 1
    client.close()
    return counts


def wait_terminal(
    stub: SmsServiceStub, token: str, ids: list[str], timeout: float
) -> dict[str, message_pb2.MessageStatus.ValueType]:
    """Poll until every id is terminal; returns id -> status."""
    final: dict[str, message_pb2.MessageStatus.ValueType] = {}

    def observe() -> dict[str, message_pb2.MessageStatus.ValueType]:
        for message_id in [i for i in ids if final.get(i) not in TERMINAL]:
            final[message_id] = stub.GetMessage(
                pb.GetMessageRequest(message_id=message_id), metadata=bearer(token), timeout=10
            ).message.status
        return final

    return wait_until_blocking(
        observe,
        lambda seen: all(seen[i] in TERMINAL for i in ids),
        what=f"{len(ids)} messages to end",
        timeout=timeout,
        interval=0.2,
        describe=describe_statuses,
    )


def wait_for_lines(log: Path, n: int, timeout: float = 20) -> None:
    wait_until_blocking(
        lambda: sum(sent_counts(log).values()),
        lambda lines: lines >= n,
        what=f"the simulator to be handed {n} messages",
        timeout=timeout,
        interval=0.02,
    )


def test_kill_9_mid_dispatch_loses_nothing(
    servers: Servers, tmp_path: Path, redis_url: str
) -> None:
    log = tmp_path / "sim.log"
    settings = {**SLOW, "redis_url": redis_url, "sim_log": str(log)}
    first = servers.start(tmp_path / "a", **settings)
    token = create_token(servers, tmp_path / "a", redis_url)
    with grpc.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        ids = send_batch(SmsServiceStub(channel), token, 2000)
    wait_for_lines(log, 200)

    first.signal(signal.SIGKILL)
    first.wait_exit()
    in_flight = statuses(redis_url)[Status.SENDING]
    assert 0 < sum(sent_counts(log).values()) < 2000, "the kill did not land mid-dispatch"

    second = servers.start(tmp_path / "b", **settings)
    with grpc.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
        final = wait_terminal(SmsServiceStub(channel), token, ids, timeout=90)

    outcomes = Counter(final.values())
    assert set(outcomes) <= {S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED}
    assert sum(outcomes.values()) == 2000
    sent = sent_counts(log)
    # A message whose provider call was in flight at the kill is never sent
    # again (the provider may have it): it ends EXPIRED (OUTCOME_UNKNOWN), as
    # does one sent whose receipt died with the process. Every other one is
    # sent once (one only claimed at the kill, by the second server).
    never_sent = set(ids) - set(sent)
    assert len(never_sent) <= in_flight
    assert all(final[i] == S.MESSAGE_STATUS_EXPIRED for i in never_sent)
    assert set(sent.values()) == {1}, "a message was sent twice"


def test_redis_restart_mid_dispatch_loses_nothing(servers: Servers, tmp_path: Path) -> None:
    store = EmbeddedRedis(tmp_path / "redis", publish_url=False)
    url = store.start()
    try:
        log = tmp_path / "sim.log"
        server = servers.start(tmp_path / "a", **SLOW, redis_url=url, sim_log=str(log))
        token = create_token(servers, tmp_path / "a", url)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = SmsServiceStub(channel)
            ids = send_batch(stub, token, 1000)
            wait_for_lines(log, 100)

            assert store.process is not None
            store.process.kill()  # SIGKILL: no chance to flush anything more
            store.process.wait()
            time.sleep(1.0)
            store = EmbeddedRedis(tmp_path / "redis", port=store.port, publish_url=False)
            store.start()

            final = wait_terminal(stub, token, ids, timeout=90)
        outcomes = Counter(final.values())
        assert set(outcomes) <= {S.MESSAGE_STATUS_DELIVERED, S.MESSAGE_STATUS_EXPIRED}
        assert sum(outcomes.values()) == 1000
        assert set(sent_counts(log)) == set(ids)
    finally:
        store.stop()


def test_two_servers_on_one_redis_dispatch_and_promote_each_message_once(
    servers: Servers, tmp_path: Path, redis_url: str
) -> None:
    logs = [tmp_path / "sim-a.log", tmp_path / "sim-b.log"]
    fast = {"redis_url": redis_url, "sim_latency_ms": "5", "sweep_interval_seconds": "0.05"}
    a = servers.start(tmp_path / "a", **fast, sim_log=str(logs[0]))
    servers.start(tmp_path / "b", **fast, sim_log=str(logs[1]))
    token = create_token(servers, tmp_path / "a", redis_url)
    soon = Timestamp()
    soon.FromMilliseconds(int((time.time() + 1.5) * 1000))
    with grpc.insecure_channel(f"127.0.0.1:{a.grpc_port}") as channel:
        stub = SmsServiceStub(channel)
        now_ids = send_batch(stub, token, 500)
        later_ids = send_batch(stub, token, 300, send_time=soon)
        final = wait_terminal(stub, token, now_ids + later_ids, timeout=60)

    assert Counter(final.values()) == {S.MESSAGE_STATUS_DELIVERED: 800}
    sent = sent_counts(logs[0]) + sent_counts(logs[1])
    assert set(sent) == set(now_ids + later_ids)
    assert set(sent.values()) == {1}, "a message was dispatched twice"
