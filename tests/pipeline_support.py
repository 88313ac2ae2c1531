"""Helpers for pipeline tests: waiting on statuses, reading the simulator log."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb

from tests.support import bearer
from tests.waiting import wait_until

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


def describe_statuses(statuses: Mapping[str, message_pb2.MessageStatus.ValueType]) -> str:
    """How many messages are in each status, for a wait that gives up."""
    counts = Counter(S.Name(status) for status in statuses.values())
    return ", ".join(f"{count} {name}" for name, count in counts.most_common())


async def wait_for_statuses(
    sms: SmsServiceAsyncStub,
    token: str,
    ids: list[str],
    done: set[message_pb2.MessageStatus.ValueType],
    timeout: float = 10.0,
) -> dict[str, message_pb2.Message]:
    """GetMessage each id until its status is in ``done``; returns the messages."""
    seen: dict[str, message_pb2.Message] = {}

    async def observe() -> dict[str, message_pb2.Message]:
        pending = [i for i in ids if i not in seen or seen[i].status not in done]
        replies = await asyncio.gather(
            *(
                sms.GetMessage(pb.GetMessageRequest(message_id=i), metadata=bearer(token))
                for i in pending
            )
        )
        for reply in replies:
            seen[reply.message.id] = reply.message
        return seen

    return await wait_until(
        observe,
        lambda messages: all(messages[i].status in done for i in ids),
        what=f"{len(ids)} message(s) to reach {sorted(S.Name(s) for s in done)}",
        timeout=timeout,
        describe=lambda messages: describe_statuses({i: m.status for i, m in messages.items()}),
    )


def sent_counts(log: Path) -> Counter[str]:
    """How many times the simulator was handed each message id."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())
