"""EventStore: reads the shards' status event streams."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.typing import KeyT, StreamIdT

from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.events import StatusEvent
from smsgate_server.domain.status import Status
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import EventField, ShardKeys

__all__ = ["EventStore"]

log = logging.getLogger("smsgate.events")


# An id made by domain/ids.py: its first 12 hex digits are its creation ms,
# the next 2 its shard (lib.lua's packed_event() tests the same shape).
_MADE_ID = re.compile(r"[0-9a-f]{26}")
_BATCH_TAIL = 12
_PACKED = EventField.PACKED.encode()
# The field of a shard's app-number map that changes with every number given
# (lib.lua's app_number()).
_GENERATION = b"@"
# Reads of one shard in a row that may find its numbering changing before
# ``after`` gives up (each change is an app numbered, or the map lost).
_READ_TRIES = 5


# A packed event split at its first seven separators (see packed_event()).
_Parts = list[bytes]


def _parts(f: dict[bytes, bytes]) -> _Parts | None:
    packed = f.get(_PACKED)
    return None if packed is None else packed.split(b"|", 7)


def _packed_event(shard: int, stream_id: str, parts: _Parts, app: str) -> StatusEvent:
    status, time, _, mid, batch, ecode_len, ereason_len, texts = parts
    message_id = mid.decode()
    time_ms = int(time)
    if _MADE_ID.fullmatch(message_id):
        # Packed relative to the id (see packed_event()).
        time_ms += int(message_id[:12], 16)
        if len(batch) == _BATCH_TAIL:
            batch = mid[:14] + batch
    e_end = int(ecode_len)
    r_end = e_end + int(ereason_len)
    return StatusEvent(
        shard=shard,
        stream_id=stream_id,
        app=app,
        message_id=message_id,
        batch_id=batch.decode(),
        status=Status(int(status)),
        time_ms=time_ms,
        detail=texts[r_end:].decode(),
        error_code=texts[:e_end].decode(),
        error_reason=texts[e_end:r_end].decode(),
    )


def _fields_event(shard: int, stream_id: str, f: dict[bytes, bytes]) -> StatusEvent:
    """An event written before the packed value, a field per value."""

    def g(name: EventField) -> str:
        value = f.get(name.encode())
        return value.decode() if value is not None else ""

    F = EventField

    return StatusEvent(
        shard=shard,
        stream_id=stream_id,
        app=g(F.APP),
        message_id=g(F.MESSAGE),
        batch_id=g(F.BATCH),
        status=Status(int(g(F.STATUS))),
        time_ms=int(g(F.TIME) or 0),
        detail=g(F.DETAIL),
        error_code=g(F.ERROR_CODE),
        error_reason=g(F.ERROR_REASON),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventStore:
    """Reads events. ``reader`` is a client whose socket timeout exceeds the
    block time of XREAD (redis/redis-py#3138)."""

    def __init__(self, redis: RedisClient, reader: RedisClient, shards: int) -> None:
        self.redis = redis
        self.reader = reader
        self.keys = [ShardKeys(i) for i in range(shards)]
        # Per shard, the app of each number events name (lib.lua's
        # app_number()), learned under the map's generation beside it: a number
        # keeps its app only while the map keeps its generation (Redis may lose
        # the map and number apps again), so a new generation empties the
        # shard's cache. Bounded by the apps that ever sent in the shard.
        self._apps: list[dict[bytes, str]] = [{} for _ in range(shards)]
        self._generations: list[bytes | None] = [None] * shards
        self._unknown_apps = 0

    def _forget_apps(self) -> None:
        """Drop every number learned: after a failed read the connection may
        lead to another server (a restart, a failover) whose numbering differs;
        the generation would tell, and re-learning costs one read."""
        self._apps = [{} for _ in self.keys]
        self._generations = [None] * len(self.keys)

    def _numbering(self, shard: int, generation: bytes) -> dict[bytes, str]:
        """The shard's learned numbers, emptied first when they were learned
        under another generation of its map."""
        if self._generations[shard] != generation:
            self._generations[shard] = generation
            self._apps[shard] = {}
        return self._apps[shard]

    async def _events(
        self,
        rows: list[tuple[int, bytes | str, dict[bytes, bytes]]],
        generations: Mapping[int, bytes],
    ) -> tuple[list[StatusEvent], set[int]]:
        """Events of raw stream entries (shard, entry id, fields) read while each
        shard's map had the generation in ``generations``, asking Redis once
        for the app numbers not learned yet; and the shards whose map changed
        since the read, whose events are left out (read them again)."""
        split = [
            (shard, _text(entry_id), fields, _parts(fields)) for shard, entry_id, fields in rows
        ]
        numbering = {shard: self._numbering(shard, g) for shard, g in generations.items()}
        missing: dict[int, set[bytes]] = {}
        for shard, _, _, parts in split:
            if parts is not None and parts[2].isdigit() and parts[2] not in numbering[shard]:
                missing.setdefault(shard, set()).add(parts[2])
        changed = await self._learn_apps(missing, generations, numbering) if missing else set()
        out = []
        for shard, stream_id, fields, parts in split:
            if shard in changed:
                continue
            if parts is None:
                out.append(_fields_event(shard, stream_id, fields))
                continue
            app = parts[2]
            if app.isdigit():
                # A number its map does not hold (the map lost, or deleted by
                # hand) names no app, and is never guessed: no subscriber gets
                # the event, and readers still move past it.
                name = numbering[shard].get(app, "")
                if not name:
                    self._unknown_apps += 1
                    if self._unknown_apps in (1, 10, 100) or self._unknown_apps % 1000 == 0:
                        log.warning(
                            "events of an unknown app number skipped",
                            extra={"count": self._unknown_apps, "shard": shard},
                        )
            else:
                name = app.decode()  # packed before app numbers
            out.append(_packed_event(shard, stream_id, parts, name))
        return out, changed

    async def _learn_apps(
        self,
        missing: dict[int, set[bytes]],
        generations: Mapping[int, bytes],
        numbering: Mapping[int, dict[bytes, str]],
    ) -> set[int]:
        """Read the apps of ``missing`` numbers from their shards' maps into
        ``numbering``, each with the map's generation in the same command; the
        shards whose generation is no longer the one their events were read
        under (nothing learned from them). Into the dicts given, not the
        current ones: another read may have moved a shard to another
        generation meanwhile."""
        async with self.redis.pipeline(transaction=False) as pipe:
            asked = [(shard, sorted(numbers)) for shard, numbers in missing.items()]
            for shard, numbers in asked:
                fields = [_GENERATION] + [b"#" + n for n in numbers]
                pipe.hmget(self.keys[shard].app_numbers, fields)
            replies: list[Any] = await pipe.execute()
        changed: set[int] = set()
        for (shard, numbers), (generation, *apps) in zip(asked, replies, strict=True):
            if (generation or b"") != generations[shard]:
                changed.add(shard)
                continue
            for number, app in zip(numbers, apps, strict=True):
                if app is not None:
                    numbering[shard][number] = _text(app)
        return changed

    @redis_edge
    async def last_ids(self) -> list[str]:
        """Per shard, a position just before its next event: the newest event's
        id, or for an empty stream an id just before Redis's clock (every new
        event id is later; "0-0" would look like a token from the distant
        past). One pipeline for every shard."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.keys:
                pipe.xrevrange(keys.events, count=1)
            newest: list[Any] = await pipe.execute()
        if all(newest):
            return [_text(raw[0][0]) for raw in newest]
        seconds, micros = await self.redis.time()
        before_now = f"{int(seconds) * 1000 + int(micros) // 1000 - 1}-0"
        return [_text(raw[0][0]) if raw else before_now for raw in newest]

    @redis_edge
    async def first_ids(self) -> list[str | None]:
        """Per shard, the id of the oldest event still kept (None when empty),
        in one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.keys:
                pipe.xrange(keys.events, count=1)
            oldest: list[Any] = await pipe.execute()
        return [_text(raw[0][0]) if raw else None for raw in oldest]

    @redis_edge
    async def after(self, shard: int, after_id: str, count: int = 1000) -> list[StatusEvent]:
        """Events of a shard strictly after ``after_id``, oldest first."""
        keys = self.keys[shard]
        for _ in range(_READ_TRIES):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hget(keys.app_numbers, _GENERATION)
                    pipe.xrange(keys.events, f"({after_id}", "+", count=count)
                    pipe.hget(keys.app_numbers, _GENERATION)
                    before, raw, generation = await pipe.execute()
            except Exception:
                self._forget_apps()
                raise
            if before != generation:
                continue  # numbers given (or lost) while reading: read again
            events, changed = await self._events(
                [(shard, entry_id, fields) for entry_id, fields in raw],
                {shard: generation or b""},
            )
            if not changed:
                return events
        raise Unavailable("the app numbers of the events kept changing; retry")

    @property
    def together(self) -> bool:
        """Whether one blocking read may wait on every shard's stream (one
        Redis server; on a cluster a multi-key read must stay in one slot)."""
        return not isinstance(self.reader, RedisCluster)

    @redis_edge
    async def wait_after_many(
        self, positions: Mapping[int, str], *, block_ms: int, count: int = 1000
    ) -> list[StatusEvent]:
        """Events after each shard's position (up to ``count`` per shard),
        waiting up to ``block_ms`` for some, in one blocking call; on a cluster
        ``positions`` must name one shard."""
        streams: dict[KeyT, StreamIdT] = {
            self.keys[shard].events: after for shard, after in positions.items()
        }
        maps = [self.keys[shard].app_numbers for shard in positions]
        # The maps' generations before and after the read, on its connection:
        # equal, nothing was numbered (or lost) while it waited, and the events
        # name apps as the map does now.
        try:
            async with self.reader.pipeline(transaction=False) as pipe:
                for key in maps:
                    pipe.hget(key, _GENERATION)
                pipe.xread(streams, count=count, block=block_ms)
                for key in maps:
                    pipe.hget(key, _GENERATION)
                replies: list[Any] = await pipe.execute()
        except Exception:
            self._forget_apps()
            raise
        before, raw, after = replies[: len(maps)], replies[len(maps)], replies[len(maps) + 1 :]
        # A shard whose map changed meanwhile gives nothing this time: its
        # position stays, and the next read returns its events again.
        generations = {
            shard: generation or b""
            for shard, was, generation in zip(positions, before, after, strict=True)
            if was == generation
        }
        shard_of = {self.keys[shard].events: shard for shard in generations}
        events, _ = await self._events(
            [
                (shard_of[key], entry_id, fields)
                for stream, entries in raw or ()
                if (key := _text(stream)) in shard_of
                for entry_id, fields in entries
            ],
            generations,
        )
        return events
