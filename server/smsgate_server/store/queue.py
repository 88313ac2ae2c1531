"""DispatchQueue: each shard's stream of messages ready to send, read by the
dispatchers of every process through one consumer group."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import ResponseError
from redis.typing import KeyT, StreamIdT

from smsgate_server.store.connection import READ_BLOCK_MS, RedisConnection
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import GROUP, QueueField, ShardKeys
from smsgate_server.store.scripts import LuaScript

__all__ = ["DispatchQueue", "QueueEntry"]

log = logging.getLogger("smsgate.store")

QueueEntry = tuple[str, str]
"""A queue entry: its stream id and the ``app:id`` of its message."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_MEMBER = QueueField.MEMBER.encode()
# Entry ids per keep script call (Lua's unpack has a limit).
_KEEP_BATCH = 1000


class DispatchQueue:
    """Reads, re-claims and acknowledges nothing itself: entries are
    acknowledged by the script that stores their outcome (``MessageStore.settle``)."""

    def __init__(self, redis: RedisConnection, *, shards: int) -> None:
        self.redis = redis
        self.keys = [ShardKeys(i) for i in range(shards)]
        source = resources.files("smsgate_server.store") / "lua" / "keep.lua"
        self._keep = LuaScript(redis.client, source.read_text())

    @property
    def cluster(self) -> bool:
        """Whether a read must stay on one shard (a multi-key call in one slot)."""
        return self.redis.cluster

    @redis_edge
    async def ensure_groups(self) -> None:
        """Create each shard's consumer group (idempotent), in one pipeline."""
        async with self.redis.client.pipeline(transaction=False) as pipe:
            for keys in self.keys:
                pipe.xgroup_create(keys.queue, GROUP, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    async def read(self, shard: int, consumer: str, count: int) -> list[QueueEntry]:
        """New entries of one shard for ``consumer``, waiting up to ``READ_BLOCK_MS``."""
        return [e for _, entries in await self.read_many([shard], consumer, count) for e in entries]

    @redis_edge
    async def read_many(
        self, shards: Sequence[int], consumer: str, count: int
    ) -> list[tuple[int, list[QueueEntry]]]:
        """New entries for ``consumer`` of each of ``shards`` (up to ``count``
        per shard), waiting up to ``READ_BLOCK_MS`` for some, in one blocking
        call; on a cluster ``shards`` must be one shard (one slot per call)."""
        streams: dict[KeyT, StreamIdT] = {self.keys[shard].queue: ">" for shard in shards}
        try:
            reply: Any = await self.redis.reader.xreadgroup(
                GROUP, consumer, streams, count=count, block=READ_BLOCK_MS
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (flushed, or restarted without its data).
            log.warning("dispatch group missing; creating it", extra={"shards": len(shards)})
            await self.ensure_groups()
            return []
        shard_of = {self.keys[shard].queue: shard for shard in shards}
        return [
            (
                shard_of[_s(stream)],
                [(_s(entry_id), _s(fields[_MEMBER])) for entry_id, fields in items],
            )
            for stream, items in reply or ()
            if items
        ]

    @redis_edge
    async def due_shards(self, shards: Sequence[int], now_ms: int) -> list[int]:
        """Those of ``shards`` with a message due (scheduled, retried) or a
        receipt overdue at ``now_ms``, in one pipeline: an idle shard costs two
        cheap reads per tick instead of the promote script."""
        if not shards:
            return []
        async with self.redis.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                keys = self.keys[shard]
                pipe.zrangebyscore(keys.due, "-inf", now_ms, start=0, num=1)
                pipe.zrangebyscore(keys.receipts, "-inf", now_ms, start=0, num=1)
            found = await pipe.execute()
        return [shard for i, shard in enumerate(shards) if found[2 * i] or found[2 * i + 1]]

    @redis_edge
    async def reclaim(
        self, shard: int, consumer: str, *, min_idle_ms: int, start: str, count: int = 100
    ) -> tuple[str, list[QueueEntry]]:
        """Entries idle for ``min_idle_ms`` (their consumer died), now ``consumer``'s,
        from ``start``: (where to go on, "0-0" at the end; the entries)."""
        reply: Any = await self.redis.client.xautoclaim(
            self.keys[shard].queue, GROUP, consumer, min_idle_ms, start, count=count
        )
        # Redis 6.2 lists deleted entries as nil.
        entries = [
            (_s(e[0]), _s(e[1][_MEMBER])) for e in reply[1] if e and e[1] and _MEMBER in e[1]
        ]
        return _s(reply[0]), entries

    @redis_edge
    async def keep(self, shard: int, consumer: str, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of those of ``entry_ids`` ``consumer`` still
        holds, so no one re-claims them while it works on them; returns how
        many it still held."""
        kept = 0
        for i in range(0, len(entry_ids), _KEEP_BATCH):
            batch = entry_ids[i : i + _KEEP_BATCH]
            kept += int(await self._keep([self.keys[shard].queue], [GROUP, consumer, *batch]))
        return kept

    @redis_edge
    async def forget_consumers(self, shard: int, *, keep: str, idle_ms: int) -> int:
        """Drop consumers (one per process start) idle for ``idle_ms`` with nothing
        pending, except ``keep``; returns how many were dropped."""
        queue = self.keys[shard].queue
        consumers: Any = await self.redis.client.xinfo_consumers(queue, GROUP)
        dropped = 0
        for c in consumers:
            name = _s(c["name"])
            if name != keep and c["pending"] == 0 and c["idle"] > idle_ms:
                await self.redis.client.xgroup_delconsumer(queue, GROUP, name)
                dropped += 1
        return dropped
