"""The Redis key layout, in one place.

Everything of a message lives in its shard's hash slot (``{sg<N>}``): the
message hash, its history, the shard's dispatch queue, due set, receipt set and
event stream. So every multi-key script touches one slot and runs unchanged on
Redis Cluster. Message ids carry their shard (``domain.ids``).

App records live in their own slot per app (``{app:<key>}``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PREFIX", "ShardKeys", "app_key", "apps_index", "shard_for"]

PREFIX = "sg"


def app_key(app: str) -> str:
    """Hash of one app: name, secret hash, creation time."""
    return f"{PREFIX}:{{app:{app}}}"


def apps_index() -> str:
    """Set of every app key (for admin listing)."""
    return f"{PREFIX}:apps"


def shard_for(value: str, shards: int) -> int:
    """A stable shard for a string (used for request ids so retries meet)."""
    # FNV-1a: stable across processes, unlike hash().
    h = 0x811C9DC5
    for byte in value.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % shards


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys of one shard. ``prefix`` is passed to scripts that build message keys."""

    shard: int

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{sg{self.shard}}}:"

    @property
    def queue(self) -> str:
        """Stream of messages ready to dispatch (consumer group ``dispatch``)."""
        return self.prefix + "q"

    @property
    def due(self) -> str:
        """Sorted set of ``app:id`` scored by when they are due (schedule, retry)."""
        return self.prefix + "due"

    @property
    def receipts(self) -> str:
        """Sorted set of sent ``app:id`` scored by their receipt deadline."""
        return self.prefix + "dlr"

    @property
    def events(self) -> str:
        """Stream of status events of every app in this shard."""
        return self.prefix + "ev"

    def message(self, app: str, message_id: str) -> str:
        return f"{self.prefix}m:{app}:{message_id}"

    def history(self, app: str, message_id: str) -> str:
        return f"{self.prefix}h:{app}:{message_id}"

    def index(self, app: str) -> str:
        """Sorted set of the app's message ids in this shard, scored by creation ms."""
        return f"{self.prefix}idx:{app}"

    def batch(self, app: str, batch_id: str) -> str:
        """List of a batch's message ids, in request order."""
        return f"{self.prefix}b:{app}:{batch_id}"

    def idempotency(self, app: str, request_id: str) -> str:
        return f"{self.prefix}idem:{app}:{request_id}"

    def provider_id(self, provider: str, provider_message_id: str) -> str:
        """Maps a provider's message id back to ``app:id`` for delivery receipts."""
        return f"{self.prefix}pm:{provider}:{provider_message_id}"
