"""The message state machine."""

from __future__ import annotations

import enum

__all__ = ["ALLOWED_FROM", "TERMINAL", "Status", "can_move"]


class Status(enum.IntEnum):
    """Message status; values match ``smsgate.v1.MessageStatus`` and Redis."""

    SCHEDULED = 1
    QUEUED = 2
    SENDING = 3
    SENT = 4
    DELIVERED = 5
    UNDELIVERED = 6
    FAILED = 7
    CANCELED = 8
    EXPIRED = 9

    @property
    def terminal(self) -> bool:
        """True for a status a message never leaves."""
        return self in TERMINAL


TERMINAL = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.CANCELED, Status.EXPIRED}
)

# For each status, the statuses a message may enter it from. SENDING -> SENDING
# is a re-claim after a worker died mid-send; SENDING -> QUEUED is a retry.
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset(),
    Status.QUEUED: frozenset({Status.SCHEDULED, Status.SENDING}),
    Status.SENDING: frozenset({Status.QUEUED, Status.SENDING}),
    Status.SENT: frozenset({Status.SENDING}),
    Status.DELIVERED: frozenset({Status.SENT}),
    Status.UNDELIVERED: frozenset({Status.SENT}),
    Status.FAILED: frozenset({Status.QUEUED, Status.SENDING}),
    Status.CANCELED: frozenset({Status.SCHEDULED, Status.QUEUED}),
    Status.EXPIRED: frozenset({Status.SENT, Status.QUEUED, Status.SCHEDULED}),
}


def can_move(current: Status, new: Status) -> bool:
    """Whether a message in ``current`` may enter ``new``."""
    return current in ALLOWED_FROM[new]
