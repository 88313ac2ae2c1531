"""How the dispatcher logs a call that stop() cut off and whose unknown outcome
could not be stored: Redis away is a warning, anything else a bug, logged at
ERROR with its traceback (logs.RepeatedLog). Real Redis, a dispatcher in this
process, the simulator slow enough that stop() cancels its call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from smsgate_server.config import Settings
from smsgate_server.dispatch.dispatcher import DispatchConfig, Dispatcher
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.status import Status
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.services.composing import Composer
from smsgate_server.services.policy import PolicySettings, SendingPolicy
from smsgate_server.services.sending import SendCommand, SendingService, SendLimits
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.policy import PolicyStore
from smsgate_server.store.queue import DispatchQueue
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore

from tests.waiting import wait_until


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = await connect(redis_url, pool_size=8)
    yield connection
    await connection.aclose()


async def test_a_cut_off_call_whose_outcome_fails_to_store_for_a_bug_is_an_error(
    redis: RedisConnection, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        policy_same_content_seconds=0, policy_per_number_day=0, policy_quiet_hours="off"
    )
    store = MessageStore(
        redis.client, shards=1, event_retention_seconds=3600, message_retention_seconds=86_400,
        idempotency_ttl_seconds=3600, receipt_timeout_seconds=3600, schedule_max_days=35,
        max_message_age_seconds=86_400,
    )  # fmt: skip
    await SignStore(redis.client).create("app", "Acme", now_ms=0, make_default=True)
    sending = SendingService(
        store, SendLimits.from_settings(settings), TokenSealer(b"k" * 32),
        texts=TextCipher(b"k" * 32),
        composer=Composer(
            TemplateStore(redis.client, idempotency_ttl_seconds=3600), SignStore(redis.client)
        ),
        policy=SendingPolicy(
            PolicyStore(redis.client), PolicySettings.from_settings(settings), b"s" * 32
        ),
    )  # fmt: skip
    message = (await sending.send("app", SendCommand(phone="+14155552671", text="Hi"))).id
    dispatcher = Dispatcher(
        store,
        DispatchQueue(redis, shards=1),
        SimulatorProvider(latency_ms=30_000, receipt_delay_ms=0),
        config=DispatchConfig.from_settings(settings),
        texts=TextCipher(b"k" * 32),
    )
    await dispatcher.start()
    stopped = False
    try:
        await wait_until(
            lambda: sending.get("app", message),
            lambda m: m.status is Status.SENDING,
            what="the message at the simulator",
            describe=lambda m: m.status.name,
        )
        # A fault no outage makes: the message's hash is a string now, so
        # storing the cut-off call's outcome fails inside the script (WRONGTYPE).
        (key,) = [k async for k in redis.client.scan_iter(match=f"*m:app:{message}")]
        await redis.client.delete(key)
        await redis.client.set(key, "not a hash")
        with caplog.at_level(logging.WARNING, "smsgate.dispatch"):
            await dispatcher.stop(grace=0.2)
            stopped = True
    finally:
        if not stopped:
            await dispatcher.stop(grace=0.2)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("settle gave up")]
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None and "WRONGTYPE" in str(line.exc_info[1])
