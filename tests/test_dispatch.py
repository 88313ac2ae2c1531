"""Dispatch: retries, permanent failures, receipts, expiry, cancel races."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.config import Settings
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.runtime import Running
from smsgate_server.services.sending import SendCommand, SendingService, SendLimits
from smsgate_server.store.messages import Outcome, SendOutcome
from smsgate_server.store.queue import DispatchQueue

from tests.conftest import ServerFactory
from tests.pipeline_support import (
    TERMINAL,
    S,
    describe_statuses,
    sent_counts,
    wait_for_statuses,
)
from tests.support import bearer
from tests.waiting import wait_until

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub


SendOne = Callable[..., Awaitable[tuple["SmsServiceAsyncStub", str, str]]]


async def receipts_counted(result: str) -> float:
    """This process's count of simulator receipts with ``result`` (metrics)."""
    labels = {"provider": "simulator", "result": result}
    return REGISTRY.get_sample_value("smsgate_receipts_total", labels) or 0.0


@pytest.fixture
async def send_one() -> AsyncIterator[SendOne]:
    """Sends a message through a server; returns (stub, token, message id).
    The channels it opens are closed after the test."""
    channels: list[grpc.aio.Channel] = []

    async def send(server: Running, text: str = "x") -> tuple[SmsServiceAsyncStub, str, str]:
        token = (await server.apps.create("a")).token
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        channels.append(channel)
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        reply = await stub.SendSms(
            pb.SendSmsRequest(phone_number="+14155550123", text=text), metadata=bearer(token)
        )
        return stub, token, reply.message.id

    yield send
    for channel in channels:
        await channel.close()


@pytest.mark.cluster
async def test_retryable_errors_are_retried_then_fail_with_the_providers_code(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    server = await make_server(
        sim_failure_rate=1.0, max_attempts=3, retry_base_seconds=0.01, retry_max_seconds=0.05
    )
    stub, token, message_id = await send_one(server)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]

    assert message.status == S.MESSAGE_STATUS_FAILED
    assert message.attempts == 3
    assert message.error.code == "SIM_THROTTLED"
    assert "gave up after 3 attempts" in message.error.reason
    statuses = [h.status for h in message.history]
    assert statuses == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_FAILED,
    ]


async def test_permanent_errors_fail_at_once(make_server: ServerFactory, send_one: SendOne) -> None:
    server = await make_server(sim_permanent_failure_rate=1.0)
    stub, token, message_id = await send_one(server)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert message.status == S.MESSAGE_STATUS_FAILED
    assert message.attempts == 1
    assert (message.error.code, message.error.retryable) == ("SIM_REJECTED", False)


@pytest.mark.cluster
async def test_undelivered_receipt_ends_the_message_undelivered(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    server = await make_server(sim_undelivered_rate=1.0)
    stub, token, message_id = await send_one(server)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert message.status == S.MESSAGE_STATUS_UNDELIVERED
    assert message.error.code == "SIM_UNREACHABLE"


async def test_missing_receipt_expires_the_message(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    server = await make_server(sim_receipt_delay_ms=60_000, receipt_timeout_seconds=0.3)
    stub, token, message_id = await send_one(server)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert message.status == S.MESSAGE_STATUS_EXPIRED


async def test_late_and_repeated_receipts_do_not_move_a_terminal_message(
    server: Running, send_one: SendOne
) -> None:
    stub, token, message_id = await send_one(server)
    before = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert before.status == S.MESSAGE_STATUS_DELIVERED
    assert server.dispatcher is not None
    ignored = await receipts_counted("ignored")

    # The simulator's receipt sink, as a vendor's late and repeated receipts.
    server.dispatcher.receipts.receive(before.provider_message_id, False, "LATE", "late")
    server.dispatcher.receipts.receive(before.provider_message_id, True, "", "")
    await wait_until(
        lambda: receipts_counted("ignored"), lambda n: n == ignored + 2, what="2 receipts ignored"
    )

    after = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert after.status == S.MESSAGE_STATUS_DELIVERED
    assert list(after.history) == list(before.history)


async def test_cancel_racing_dispatch_ends_in_exactly_one_outcome(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "sim.log"
    server = await make_server(sim_log=log)
    token = (await server.apps.create("a")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)

        async def send_and_cancel(i: int) -> tuple[str, bool]:
            reply = await stub.SendSms(
                pb.SendSmsRequest(phone_number=f"+1415555{i:04d}", text="race"),
                metadata=bearer(token),
            )
            try:
                await stub.CancelMessage(
                    pb.CancelMessageRequest(message_id=reply.message.id), metadata=bearer(token)
                )
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
                return reply.message.id, False
            return reply.message.id, True

        outcomes = dict(await asyncio.gather(*(send_and_cancel(i) for i in range(200))))
        final = await wait_for_statuses(stub, token, list(outcomes), TERMINAL)
    await asyncio.sleep(0.3)  # let any stray dispatch reach the simulator
    sent = sent_counts(log)
    for message_id, canceled in outcomes.items():
        if canceled:
            assert final[message_id].status == S.MESSAGE_STATUS_CANCELED
            assert sent[message_id] == 0
        else:
            assert final[message_id].status == S.MESSAGE_STATUS_DELIVERED
            assert sent[message_id] == 1


async def test_metrics_count_rpcs_provider_outcomes_and_receipts(
    server: Running, send_one: SendOne
) -> None:
    stub, token, message_id = await send_one(server)
    await wait_for_statuses(stub, token, [message_id], TERMINAL)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetMessage(pb.GetMessageRequest(message_id="0" * 26), metadata=bearer(token))
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{server.http_port}/metrics")).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("smsgate_")
    }
    assert samples['smsgate_send_outcomes_total{outcome="sent",provider="simulator"}'] >= 1
    assert samples['smsgate_receipts_total{provider="simulator",result="delivered"}'] >= 1
    assert samples['smsgate_rpcs_total{code="OK",method="SendSms"}'] >= 1
    assert samples['smsgate_rpcs_total{code="NOT_FOUND",method="GetMessage"}'] >= 1


async def test_a_provider_call_past_its_timeout_is_sent_once_with_an_unknown_outcome(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    # Provider timeout is 0.8 x the visibility timeout: 0.4 s < 1 s latency. The
    # vendor may have the message: sending it again could deliver it twice.
    server = await make_server(
        sim_latency_ms=1000, visibility_timeout_seconds=0.5, max_attempts=2,
        retry_base_seconds=0.01, retry_max_seconds=0.02,
    )  # fmt: skip
    stub, token, message_id = await send_one(server)
    message = (await wait_for_statuses(stub, token, [message_id], {S.MESSAGE_STATUS_SENT}))[
        message_id
    ]
    assert message.error.code == "PROVIDER_TIMEOUT"
    assert message.attempts == 1
    assert [h.status for h in message.history] == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_SENT,
    ]


async def test_a_worker_never_reclaims_what_it_is_still_sending(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # Sixteen messages queued on one shard before the worker starts, each from
    # its own sender: its first read takes them all (a call's worth), and as
    # sixteen calls (one per sender) through one slot, 150 ms each, the later
    # ones are held well past the 1 s visibility timeout, across re-claim
    # rounds (every 0.5 s). A slower machine only holds them longer.
    api = await make_server(role="api", shards=1)
    token = (await api.apps.create("a")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        ids = [
            (
                await stub.SendSms(
                    pb.SendSmsRequest(
                        phone_number=f"+1415555{i:04d}", text=f"t{i}", sender_id=f"Acme{i}"
                    ),
                    metadata=bearer(token),
                )
            ).message.id
            for i in range(16)
        ]
        log = tmp_path / "sim.log"
        await make_server(
            role="worker", shards=1, sim_latency_ms=150, visibility_timeout_seconds=1.0,
            dispatch_concurrency=1, sim_log=log,
        )  # fmt: skip
        # Sent, each ends DELIVERED. A call past the provider timeout (0.8 s,
        # only on a machine stalled that long) ends SENT, an unknown outcome
        # that waits for its receipt: done here too, and never a re-claim.
        final = await wait_until(
            lambda: get_messages(stub, token, ids),
            lambda messages: all(m.status in TERMINAL or timed_out(m) for m in messages.values()),
            what="16 messages DELIVERED (or SENT past the provider timeout)",
            timeout=30,
            describe=lambda messages: describe_statuses({i: m.status for i, m in messages.items()}),
        )
    # Claimed once each: a re-claim would have counted a second attempt (or,
    # once handed to the simulator, settled it SEND_CUT_OFF) and sent it again.
    assert [m.attempts for m in final.values()] == [1] * 16
    delivered = {i for i, m in final.items() if m.status == S.MESSAGE_STATUS_DELIVERED}
    assert delivered | {i for i, m in final.items() if timed_out(m)} == set(ids)
    # Handed to the provider once each (a call cut off by the timeout never
    # reached the simulator's log).
    assert sent_counts(log) == Counter(dict.fromkeys(delivered, 1))


def timed_out(message: message_pb2.Message) -> bool:
    """Whether ``message`` ended SENT because its provider call ran out of time."""
    return (message.status, message.error.code) == (S.MESSAGE_STATUS_SENT, "PROVIDER_TIMEOUT")


async def get_messages(
    stub: SmsServiceAsyncStub, token: str, ids: list[str]
) -> dict[str, message_pb2.Message]:
    """Each of ``ids`` as GetMessage returns it now."""
    replies = await asyncio.gather(
        *(stub.GetMessage(pb.GetMessageRequest(message_id=i), metadata=bearer(token)) for i in ids)
    )
    return {r.message.id: r.message for r in replies}


async def test_a_reclaimed_message_out_of_attempts_fails(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    api = await make_server(role="api")
    stub, token, message_id = await send_one(api)
    # A worker that died mid-send: it took the entry and moved the message on.
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "dead-worker", 10)
    assert await api.store.claim(
        shard, entries, reclaimed=False, max_attempts=api.settings.max_attempts
    )

    await make_server(role="worker", max_attempts=1, visibility_timeout_seconds=0.3)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert message.status == S.MESSAGE_STATUS_FAILED
    assert message.error.code == "NO_OUTCOME"


async def test_a_reclaimed_message_handed_to_its_provider_is_never_sent_again(
    make_server: ServerFactory, send_one: SendOne, tmp_path: Path
) -> None:
    api = await make_server(role="api")
    stub, token, message_id = await send_one(api)
    # A worker that died during its vendor call: the provider may have it.
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "dead-worker", 10)
    claimed = await api.store.claim(
        shard, entries, reclaimed=False, max_attempts=api.settings.max_attempts
    )
    assert await api.store.hand_over(shard, "simulator", claimed) == [True]

    log = tmp_path / "worker-sim.log"
    await make_server(
        role="worker", sim_log=log, visibility_timeout_seconds=0.3, receipt_timeout_seconds=0.5
    )
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert (message.status, message.error.code) == (S.MESSAGE_STATUS_EXPIRED, "OUTCOME_UNKNOWN")
    assert sent_counts(log)[message_id] == 0
    assert message.attempts == 1
    assert [h.status for h in message.history] == [
        S.MESSAGE_STATUS_QUEUED,
        S.MESSAGE_STATUS_SENDING,
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_EXPIRED,
    ]
    assert message.history[2].detail == "simulator outcome unknown"


async def test_a_reclaimed_message_never_handed_to_a_provider_is_sent(
    make_server: ServerFactory, send_one: SendOne, tmp_path: Path
) -> None:
    api = await make_server(role="api")
    stub, token, message_id = await send_one(api)
    # A worker that died after claiming, before its chunk's vendor call.
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "dead-worker", 10)
    await api.store.claim(shard, entries, reclaimed=False, max_attempts=api.settings.max_attempts)

    log = tmp_path / "worker-sim.log"
    await make_server(role="worker", sim_log=log, visibility_timeout_seconds=0.3)
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert (message.status, message.attempts) == (S.MESSAGE_STATUS_DELIVERED, 2)
    assert sent_counts(log)[message_id] == 1


async def test_a_message_its_claim_handed_to_the_provider_is_never_sent_again(
    make_server: ServerFactory, send_one: SendOne, tmp_path: Path
) -> None:
    api = await make_server(role="api")
    stub, token, message_id = await send_one(api)
    # The claim itself records the provider (no routes, nothing between the
    # claim and the call); the worker died during its vendor call.
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "dead-worker", 10)
    (claimed,) = await api.store.claim(
        shard,
        entries,
        reclaimed=False,
        max_attempts=api.settings.max_attempts,
        hand_to="simulator",
    )
    assert claimed.in_flight == ""  # a fresh claim: this worker's to send

    log = tmp_path / "worker-sim.log"
    await make_server(
        role="worker", sim_log=log, visibility_timeout_seconds=0.3, receipt_timeout_seconds=0.5
    )
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert (message.status, message.error.code) == (S.MESSAGE_STATUS_EXPIRED, "OUTCOME_UNKNOWN")
    assert sent_counts(log)[message_id] == 0
    assert message.attempts == 1


async def test_a_hand_over_after_a_reclaim_is_refused(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    api = await make_server(role="api")
    _, _, message_id = await send_one(api)
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "slow-worker", 10)
    late = await api.store.claim(shard, entries, reclaimed=False, max_attempts=5)
    # Another worker re-claimed it meanwhile (one attempt more): the slow one
    # may not send it any more.
    again = await api.store.claim(shard, entries, reclaimed=True, max_attempts=5)
    assert await api.store.hand_over(shard, "simulator", late) == [False]
    assert await api.store.hand_over(shard, "simulator", again) == [True]


async def test_a_receipt_that_outruns_its_send_outcome_waits_for_it(
    make_server: ServerFactory, send_one: SendOne
) -> None:
    api = await make_server(role="api")
    stub, token, message_id = await send_one(api)
    app = token.split(".", 1)[0]
    shard = int(message_id[12:14], 16)
    queue = DispatchQueue(api.redis, shards=api.settings.shards)
    await queue.ensure_groups()
    entries = await queue.read(shard, "w1", 10)
    (claimed,) = await api.store.claim(
        shard, entries, reclaimed=False, max_attempts=api.settings.max_attempts
    )

    worker = await make_server(role="worker")
    assert worker.dispatcher is not None
    early = await receipts_counted("early")
    worker.dispatcher.receipts.receive("pid-1", True, "", "", f"{app}:{message_id}")
    await wait_until(
        lambda: receipts_counted("early"), lambda n: n > early, what="the receipt held back"
    )
    # Held back, not applied: the message is still SENDING.
    await wait_for_statuses(stub, token, [message_id], {S.MESSAGE_STATUS_SENDING})

    await api.store.settle(shard, [SendOutcome(claimed, Outcome.SENT, "simulator", "pid-1")])
    message = (await wait_for_statuses(stub, token, [message_id], TERMINAL))[message_id]
    assert message.status == S.MESSAGE_STATUS_DELIVERED


async def test_a_message_past_its_use_is_expired_not_sent(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # Accepted while no worker runs (an outage), e.g. a verification code's SMS.
    api = await make_server(role="api")
    token = (await api.apps.create("a")).token
    app = token.split(".", 1)[0]
    sending = SendingService(
        api.store,
        SendLimits.from_settings(Settings()),
        TokenSealer(b"k" * 32),
        texts=TextCipher(b"k" * 32),
    )
    soon = api.store.now_ms() + 300
    message = await sending.send(
        app, SendCommand(phone="+14155550123", text="code 123456", expire_at_ms=soon)
    )
    await asyncio.sleep(0.5)

    log = tmp_path / "worker-sim.log"
    await make_server(role="worker", sim_log=log)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        final = (await wait_for_statuses(stub, token, [message.id], TERMINAL))[message.id]
    assert final.status == S.MESSAGE_STATUS_EXPIRED
    assert sent_counts(log)[message.id] == 0
