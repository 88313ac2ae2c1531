"""The Redis key layout, in one place.

Everything of a message lives in its shard's hash slot (``{sg<N>}``): the
message hash, its history, the shard's dispatch queue, due set, receipt set and
event stream. So every multi-key script touches one slot and runs unchanged on
Redis Cluster. Message ids carry their shard (``domain.ids``).

App records live in their own slot per app (``{app:<key>}``).

Verification codes of one phone number of one app share a slot
(``{v:<app>:<phone tag>}``): the code of each scope, its id index, resend
cooldowns and the send log the per-number caps count. The phone tag is a keyed
hash (``domain.codes``), so no phone number appears in a key name. The app's
per-minute verification counter has a slot of its own (``{vr:<app>}``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GROUP",
    "PREFIX",
    "CodeKeys",
    "ShardKeys",
    "app_key",
    "apps_index",
    "verify_rate_key",
]

PREFIX = "sg"
# The consumer group of every shard's queue stream, shared by all dispatchers.
GROUP = "dispatch"


def app_key(app: str) -> str:
    """Hash of one app: name, secret hash, creation time."""
    return f"{PREFIX}:{{app:{app}}}"


def apps_index() -> str:
    """Set of every app key (for admin listing)."""
    return f"{PREFIX}:apps"


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
        """The app's message ids in this shard, all scored 0 so they sort by id,
        which starts with the creation time (``ZREVRANGEBYLEX`` pages newest first)."""
        return f"{self.prefix}idx:{app}"

    def batch(self, app: str, batch_id: str) -> str:
        """List of a batch's message ids, in request order."""
        return f"{self.prefix}b:{app}:{batch_id}"

    def idempotency(self, app: str, request_id: str) -> str:
        return f"{self.prefix}idem:{app}:{request_id}"

    def provider_id(self, provider: str, provider_message_id: str) -> str:
        """Maps a provider's message id back to ``app:id`` for delivery receipts."""
        return f"{self.prefix}pm:{provider}:{provider_message_id}"


def verify_rate_key(app: str, window: int) -> str:
    """Counter of the app's verification codes issued in minute ``window``."""
    return f"{PREFIX}:{{vr:{app}}}:{window}"


@dataclass(frozen=True, slots=True)
class CodeKeys:
    """Keys of the verification codes of one phone number (its tag) of one app.
    ``prefix`` is passed to scripts that build keys from stored values."""

    app: str
    tag: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{v:{self.app}:{self.tag}}}:"

    def code(self, scope: str) -> str:
        """Hash of the live code of ``scope``: nonce, code hash, attempts left, expiry."""
        return f"{self.prefix}c:{scope}"

    def by_id(self, nonce: str) -> str:
        """The scope of the code with this nonce (verification by id)."""
        return f"{self.prefix}i:{nonce}"

    def cooldown(self, scope: str) -> str:
        """When a new code of ``scope`` may be issued (ms)."""
        return f"{self.prefix}cd:{scope}"

    @property
    def sends(self) -> str:
        """Sorted set of the codes issued in the last day, scored by ms (the caps)."""
        return f"{self.prefix}n"
