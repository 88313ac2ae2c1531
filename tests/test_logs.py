"""RepeatedLog: a failure that repeats is one line per interval with a count."""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from smsgate_server.dispatch.receipts import ReceiptQueue
from smsgate_server.logs import RepeatedLog
from smsgate_server.store.messages import MessageStore

from tests.waiting import wait_until


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def counts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    return [(r.getMessage(), getattr(r, "count", 0)) for r in caplog.records]


def test_repeats_within_an_interval_are_one_line_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    repeated = RepeatedLog(logging.getLogger("test.repeated"), "it failed", every=5, clock=clock)
    with caplog.at_level(logging.WARNING, "test.repeated"):
        for _ in range(100):
            repeated.occurred()
        clock.now = 5.0
        repeated.occurred()
    # The first line stands for the first occurrence; the next for the 100 since.
    assert counts(caplog) == [("it failed", 1), ("it failed", 100)]


def test_each_kind_has_its_own_interval(caplog: pytest.LogCaptureFixture) -> None:
    repeated = RepeatedLog(logging.getLogger("test.kinds"), "bad body", every=5, clock=Clock())
    with caplog.at_level(logging.WARNING, "test.kinds"):
        for _ in range(3):
            repeated.occurred("SendSms", method="SendSms")
            repeated.occurred("GetMessage", method="GetMessage")
    assert [getattr(r, "method", "") for r in caplog.records] == ["SendSms", "GetMessage"]


def test_only_the_first_line_of_an_interval_carries_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repeated = RepeatedLog(logging.getLogger("test.exc"), "bug", every=5, clock=Clock())
    with caplog.at_level(logging.WARNING, "test.exc"):
        for _ in range(3):
            try:
                raise KeyError("x")
            except KeyError as exc:
                repeated.occurred("KeyError", exc=exc)
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None


def test_an_expected_failure_is_a_warning_and_a_bug_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The fault suite counts error lines: a Redis outage it causes must add none.
    repeated = RepeatedLog(logging.getLogger("test.level"), "failed", every=5, clock=Clock())
    with caplog.at_level(logging.WARNING, "test.level"):
        repeated.occurred("Unavailable")
        repeated.occurred("KeyError", exc=KeyError("x"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]


async def test_receipts_kept_through_a_redis_outage_log_one_line_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on the port: every batch fails at once, and its receipts
    # come back for another try a few at a time, each retry a batch of its own.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # No retries inside redis-py: each batch fails at once.
    client = aioredis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    store = MessageStore(
        client, shards=1, event_retention_seconds=60, message_retention_seconds=60,
        idempotency_ttl_seconds=60, receipt_timeout_seconds=60, schedule_max_days=1,
        max_message_age_seconds=60,
    )  # fmt: skip
    queue = ReceiptQueue(store, "outage-test", rng=random.Random(1))
    for i in range(20):
        queue.receive(f"vendor-{i}", True, "", "")
    tried = REGISTRY.get_sample_value
    labels = {"provider": "outage-test", "result": "early"}
    stopping = asyncio.Event()
    with caplog.at_level(logging.WARNING, "smsgate.dispatch"):
        running = asyncio.create_task(queue.run(stopping))
        # Sixty failed tries: the first batch, then the retries, a few at a time.
        await wait_until(
            lambda: asyncio.sleep(0, tried("smsgate_receipts_total", labels) or 0.0),
            lambda early: early >= 60,
            what="sixty failed tries of the receipts",
        )
        stopping.set()
        await running
    await client.aclose()

    lines = [r for r in caplog.records if r.getMessage() == "receipts not stored yet"]
    assert [getattr(r, "count", 0) for r in lines] == [1]
