"""ReplyStore: the replies (mobile-originated SMS) each app received.

One capped stream per app (``store.keys.replies_key``): an entry's id says when
it came, and a page goes on below the last id it returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import replies_key

__all__ = ["MAX_REPLIES", "ReplyStore", "StoredReply"]

# Replies kept per app (approximately: the stream is trimmed with ``~``).
MAX_REPLIES = 10_000


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply as stored: its entry id, sender, text, provider, time and
    whether it opted its sender out."""

    id: str
    phone: str
    text: str
    provider: str
    time_ms: int
    opted_out: bool


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ReplyStore:
    """Appends and pages through the replies of each app."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    @redis_edge
    async def add(self, app: str, *, phone: str, text: str, provider: str, opted_out: bool) -> None:
        """Append one reply, dropping the oldest past MAX_REPLIES."""
        fields: dict[Any, Any] = {
            "p": phone,
            "t": text,
            "v": provider,
            "o": "1" if opted_out else "",
        }
        await self.redis.xadd(replies_key(app), fields, maxlen=MAX_REPLIES, approximate=True)

    @redis_edge
    async def page(self, app: str, before: str, limit: int) -> tuple[list[StoredReply], str]:
        """Up to ``limit`` replies older than entry ``before`` ('' from the newest),
        newest first, and the id to go on below ('' at the end)."""
        top = f"({before}" if before else "+"
        raw = cast(
            list[tuple[Any, dict[Any, Any]]],
            await self.redis.xrevrange(replies_key(app), top, "-", count=limit + 1),
        )
        replies = []
        for entry_id, fields in raw[:limit]:
            f = {_s(k): _s(v) for k, v in fields.items()}
            rid = _s(entry_id)
            replies.append(
                StoredReply(
                    id=rid,
                    phone=f.get("p", ""),
                    text=f.get("t", ""),
                    provider=f.get("v", ""),
                    time_ms=int(rid.partition("-")[0]),
                    opted_out=f.get("o") == "1",
                )
            )
        return replies, replies[-1].id if len(raw) > limit else ""
