"""The message state machine: the one table of allowed transitions.

The Lua scripts get these statuses and this table from ``store.scripts``, and
refuse any transition it does not allow.
"""

from __future__ import annotations

import enum

__all__ = ["ALLOWED_FROM", "INITIAL", "TERMINAL", "Status", "can_enter"]


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

# A message is accepted either to wait for its send time or to be sent now.
INITIAL = frozenset({Status.SCHEDULED, Status.QUEUED})

# For each status, the statuses a message may enter it from.
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset(),
    # Due (SCHEDULED), or a retry after a provider error (SENDING).
    Status.QUEUED: frozenset({Status.SCHEDULED, Status.SENDING}),
    # SENDING -> SENDING is a re-claim after a worker died mid-send.
    Status.SENDING: frozenset({Status.QUEUED, Status.SENDING}),
    Status.SENT: frozenset({Status.SENDING}),
    Status.DELIVERED: frozenset({Status.SENT}),
    Status.UNDELIVERED: frozenset({Status.SENT}),
    # The provider refused it, gave up retrying, or its attempts ran out.
    Status.FAILED: frozenset({Status.SENDING}),
    Status.CANCELED: frozenset({Status.SCHEDULED, Status.QUEUED}),
    # No receipt came (SENT), or it outlived its use before sending (QUEUED).
    Status.EXPIRED: frozenset({Status.SENT, Status.QUEUED}),
}


def can_enter(new: Status, current: Status | None) -> bool:
    """Whether a message in ``current`` (None: being accepted) may enter ``new``."""
    if current is None:
        return new in INITIAL
    return current in ALLOWED_FROM[new]
