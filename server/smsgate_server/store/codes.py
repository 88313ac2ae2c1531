"""CodeStore: verification codes (as keyed hashes), resend cooldowns, per-number
send logs and per-app rate windows in Redis.

Every read-modify-write is one Lua script over the keys of one phone number
(``store.keys.CodeKeys``), so it is atomic and runs unchanged on Redis Cluster.
Plain codes never reach this module.

With replicas (``wait_replicas``), issuing a code and consuming one wait for a
replica's acknowledgement (``WAIT``) before they answer: a failover right
after would otherwise lose a code the caller was given (it then fails to
verify) or bring back one just consumed (it could verify a second time). A
replica that does not confirm in time is logged and the answer stands: the
code is stored on the master either way, and failing the call would not
help, since a new code is refused by the cooldown and a verified code is
gone.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.typing import EncodableT

from smsgate_server.logs import RepeatedLog
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.grouping import GroupedScripts
from smsgate_server.store.keys import CodeKeys, verify_rate_key
from smsgate_server.store.scripts import CodeScripts, LuaScript

__all__ = ["CodeCheck", "CodeStore", "IssueKind", "IssueOutcome", "NewCode", "VerifyOutcome"]

WINDOW_MS = 60_000

log = logging.getLogger("smsgate.store")
_unconfirmed = RepeatedLog(
    log, "a verification code change is not on a replica yet: a failover could undo it", every=5.0
)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class NewCode:
    """A code to store: where, its hash, and the policy it is issued under."""

    keys: CodeKeys
    scope: str
    nonce: str
    code_hash: str
    attempts: int
    validity_ms: int
    cooldown_ms: int
    per_hour: int
    per_day: int


class IssueKind(enum.StrEnum):
    """What became of a code to issue (the replies of code_issue.lua)."""

    OK = "ok"  # stored; the code it replaces is dead
    COOLDOWN = "cooldown"  # refused: the last code of this scope is too recent
    CAPS = "caps"  # refused: the number's hourly or daily cap is reached


class CodeCheck(enum.StrEnum):
    """What a presented code turned out to be (the replies of code_verify.lua)."""

    VERIFIED = "verified"  # right, and now consumed
    INCORRECT = "incorrect"  # wrong; attempts remain
    GONE = "gone"  # expired, consumed, replaced or never there
    DEAD = "dead"  # no attempts left


@dataclass(frozen=True, slots=True)
class IssueOutcome:
    """``kind``, with ``cooldown_ms`` to wait for COOLDOWN, or for CAPS ``hour_ms`` /
    ``day_ms`` until that cap allows another code (0 when it is not reached)."""

    kind: IssueKind
    cooldown_ms: int = 0
    hour_ms: int = 0
    day_ms: int = 0


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """What the presented code was, with the attempts left."""

    kind: CodeCheck
    attempts_left: int


class CodeStore:
    """Stores code hashes and applies the resend policy, atomically per phone number."""

    def __init__(
        self, redis: RedisClient, *, wait_replicas: int = 0, wait_timeout_ms: int = 1000
    ) -> None:
        self.redis = redis
        self.scripts = CodeScripts(redis)
        # Code calls of other callers made in the same loop moment share one
        # pipeline (store/grouping.py): at 32 concurrent callers redis-py's
        # per-command work was most of a code's cost. Not with a replica wait:
        # WAIT must follow each call's own writes on its own connection.
        self.grouped = GroupedScripts(redis)
        # Replicas that should have a code's issue or use before the answer
        # (Settings.redis_wait_replicas; see the module docstring).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    async def _confirmed(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[EncodableT],
        *,
        change: str,
    ) -> Any:
        """Run ``script``; when its reply says it changed something (its first
        value is ``change``), wait for the replicas first."""
        if not self.wait_replicas:
            return await self.grouped(script, keys, args)
        reply, acked = await script.call_confirmed(
            keys, args, replicas=self.wait_replicas, timeout_ms=self.wait_timeout_ms
        )
        if _s(reply[0]) == change and acked < self.wait_replicas:
            _unconfirmed.occurred(change)
        return reply

    @redis_edge
    async def issue(self, new: NewCode, now_ms: int) -> IssueOutcome:
        """Store ``new`` as the live code of its scope, replacing the previous one,
        unless the cooldown or a per-number cap forbids it."""
        k = new.keys
        reply = await self._confirmed(
            self.scripts.issue,
            [k.code(new.scope), k.cooldown(new.scope), k.sends, k.by_id(new.nonce)],
            [
                k.prefix,
                now_ms,
                new.nonce,
                new.code_hash,
                new.attempts,
                new.validity_ms,
                new.cooldown_ms,
                new.per_hour,
                new.per_day,
                new.scope,
            ],
            change=IssueKind.OK,
        )
        kind = IssueKind(_s(reply[0]))
        if kind is IssueKind.COOLDOWN:
            return IssueOutcome(kind, cooldown_ms=int(reply[1]))
        if kind is IssueKind.CAPS:
            return IssueOutcome(kind, hour_ms=int(reply[1]), day_ms=int(reply[2]))
        return IssueOutcome(kind)

    @redis_edge
    async def verify_by_id(
        self, keys: CodeKeys, nonce: str, code_hash: str, now_ms: int, *, scope: str = ""
    ) -> VerifyOutcome:
        """Check ``code_hash`` against the code with ``nonce``; ``scope``, when
        given, must be that code's scope."""
        return await self._verify(keys.by_id(nonce), "id", keys, code_hash, now_ms, nonce, scope)

    @redis_edge
    async def verify_by_scope(
        self, keys: CodeKeys, scope: str, code_hash: str, now_ms: int
    ) -> VerifyOutcome:
        """Check ``code_hash`` against the live code of ``scope``."""
        return await self._verify(keys.code(scope), "scope", keys, code_hash, now_ms, "", "")

    async def _verify(
        self,
        key: str,
        mode: str,
        keys: CodeKeys,
        code_hash: str,
        now_ms: int,
        nonce: str,
        scope: str,
    ) -> VerifyOutcome:
        reply = await self._confirmed(
            self.scripts.verify,
            [key],
            [mode, keys.prefix, code_hash, now_ms, nonce, scope],
            change=CodeCheck.VERIFIED,
        )
        return VerifyOutcome(CodeCheck(_s(reply[0])), int(reply[1]))

    @redis_edge
    async def take_app_slot(self, app: str, limit: int, now_ms: int) -> int:
        """Count one code against the app's per-minute limit: 0 when counted,
        else the ms until the current minute ends.

        A round trip of its own, before ``issue``: the counter is in the app's
        slot and the code in the phone's, so no one script (Redis Cluster) can
        do both, and ``issue`` cannot be sent alongside it because a code issued
        and then refused here would already have replaced the live code,
        started the cooldown and counted against the number's caps."""
        window = now_ms // WINDOW_MS
        taken = await self.grouped(
            self.scripts.rate_window, [verify_rate_key(app, window)], ["take", limit, 2 * WINDOW_MS]
        )
        return 0 if int(taken) else (window + 1) * WINDOW_MS - now_ms

    @redis_edge
    async def give_back_app_slot(self, app: str, now_ms: int) -> None:
        """Undo ``take_app_slot`` for a code that was then refused."""
        window = now_ms // WINDOW_MS
        await self.scripts.rate_window(
            keys=[verify_rate_key(app, window)], args=["give", 0, 2 * WINDOW_MS]
        )
