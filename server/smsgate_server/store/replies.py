"""ReplyStore: the replies (mobile-originated SMS) each app received.

One capped stream per app (``store.keys.replies_key``): an entry's id says when
it came, a page goes on below the last id it returned, and a WatchReplies
resume token names the last id it streamed. Each reply also names its app in a
capped feed stream (``store.keys.replies_feed_key``), the one stream every
server blocks on to learn which apps' streams have news: an app's own stream
lives in the app's slot, and one blocking read per watched app would hold a
connection each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from smsgate_server.domain.events import stream_id_key
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import replies_feed_key, replies_key

__all__ = ["FEED_LENGTH", "MAX_REPLIES", "ReplyStore", "StoredReply"]

# Replies kept per app (approximately: the stream is trimmed with ``~``).
MAX_REPLIES = 10_000
# Feed entries kept (approximately): more than a reader takes per read, so a
# reader that fell behind past the trim sees a full batch (services/reply_watch.py).
FEED_LENGTH = 10_000


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
    """Appends, pages through and streams the replies of each app. ``reader``
    (for ``wait_feed``) is a client whose socket timeout exceeds the block time
    of XREAD (redis/redis-py#3138)."""

    def __init__(self, redis: RedisClient, reader: RedisClient | None = None) -> None:
        self.redis = redis
        self.reader = reader or redis

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
        # After the reply: a reader told of it finds it. Should this write fail
        # the reply is still stored, and streamed with the app's next one.
        await self.redis.xadd(replies_feed_key(), {"a": app}, maxlen=FEED_LENGTH, approximate=True)

    @redis_edge
    async def page(self, app: str, before: str, limit: int) -> tuple[list[StoredReply], str]:
        """Up to ``limit`` replies older than entry ``before`` ('' from the newest),
        newest first, and the id to go on below ('' at the end)."""
        top = f"({before}" if before else "+"
        raw = cast(
            list[tuple[Any, dict[Any, Any]]],
            await self.redis.xrevrange(replies_key(app), top, "-", count=limit + 1),
        )
        replies = [_reply(entry_id, fields) for entry_id, fields in raw[:limit]]
        return replies, replies[-1].id if len(raw) > limit else ""

    @redis_edge
    async def after(self, app: str, after_id: str, count: int) -> list[StoredReply]:
        """Up to ``count`` of the app's replies after entry ``after_id``, oldest first."""
        raw = cast(
            list[tuple[Any, dict[Any, Any]]],
            await self.redis.xrange(replies_key(app), f"({after_id}", "+", count=count),
        )
        return [_reply(entry_id, fields) for entry_id, fields in raw]

    @redis_edge
    async def last_id(self, app: str) -> str:
        """A position just before the app's next reply: the newest reply's id,
        or for none an id just before Redis's clock (every new id is later)."""
        raw: Any = await self.redis.xrevrange(replies_key(app), count=1)
        return _s(raw[0][0]) if raw else await self._now_id()

    @redis_edge
    async def trimmed_after(self, app: str, position: str) -> bool:
        """Whether replies after ``position`` may have been dropped by the cap:
        it is older than the oldest kept reply of a stream the cap has trimmed
        (trimming leaves at least MAX_REPLIES; Redis 6.2 keeps no record of it)."""
        key = replies_key(app)
        raw: Any = await self.redis.xrange(key, count=1)
        if not raw or stream_id_key(position) >= stream_id_key(_s(raw[0][0])):
            return False
        return int(await self.redis.xlen(key)) >= MAX_REPLIES

    @redis_edge
    async def feed_last_id(self) -> str:
        """A position just before the feed's next entry."""
        raw: Any = await self.redis.xrevrange(replies_feed_key(), count=1)
        return _s(raw[0][0]) if raw else await self._now_id()

    @redis_edge
    async def wait_feed(self, after_id: str, *, block_ms: int, count: int) -> list[tuple[str, str]]:
        """(entry id, app) of the feed's entries after ``after_id``, blocking up
        to ``block_ms`` for one."""
        raw: Any = await self.reader.xread(
            {replies_feed_key(): after_id}, count=count, block=block_ms
        )
        return [
            (_s(entry_id), _s(fields.get(b"a", fields.get("a", b""))))
            for _, entries in raw or ()
            for entry_id, fields in entries
        ]

    async def _now_id(self) -> str:
        seconds, micros = await self.redis.time()
        return f"{int(seconds) * 1000 + int(micros) // 1000 - 1}-0"


def _reply(entry_id: Any, fields: dict[Any, Any]) -> StoredReply:
    f = {_s(k): _s(v) for k, v in fields.items()}
    rid = _s(entry_id)
    return StoredReply(
        id=rid,
        phone=f.get("p", ""),
        text=f.get("t", ""),
        provider=f.get("v", ""),
        time_ms=int(rid.partition("-")[0]),
        opted_out=f.get("o") == "1",
    )
