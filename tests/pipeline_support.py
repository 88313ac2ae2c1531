"""Helpers for pipeline tests: waiting on statuses, reading the simulator log."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb

from tests.support import bearer

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

S = message_pb2.MessageStatus
TERMINAL = {
    S.MESSAGE_STATUS_DELIVERED,
    S.MESSAGE_STATUS_UNDELIVERED,
    S.MESSAGE_STATUS_FAILED,
    S.MESSAGE_STATUS_CANCELED,
    S.MESSAGE_STATUS_EXPIRED,
}


async def wait_until(
    sms: SmsServiceAsyncStub,
    token: str,
    ids: list[str],
    done: set[message_pb2.MessageStatus.ValueType],
    timeout: float = 10.0,
) -> dict[str, message_pb2.Message]:
    """GetMessage each id until its status is in ``done``; returns the last seen."""
    deadline = time.monotonic() + timeout
    seen: dict[str, message_pb2.Message] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        replies = await asyncio.gather(
            *(
                sms.GetMessage(pb.GetMessageRequest(message_id=i), metadata=bearer(token))
                for i in pending
            )
        )
        for reply in replies:
            seen[reply.message.id] = reply.message
        pending = [i for i in pending if seen[i].status not in done]
        if pending:
            await asyncio.sleep(0.05)
    return seen


def sent_counts(log: Path) -> Counter[str]:
    """How many times the simulator was handed each message id."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())
