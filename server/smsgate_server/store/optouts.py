"""OptOutStore: the numbers that asked an app to send them no more marketing.

One sorted set per app (``store.keys.optouts_key``), every score 0, so members
sort by number and a page goes on after the last number it returned. Each
change is one command (``ZADD NX``, ``ZREM``): nothing to read first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import optouts_key

__all__ = ["OptOutStore"]


class OptOutStore:
    """Adds, removes, checks and lists the opted-out numbers of each app."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    @redis_edge
    async def add(self, app: str, phone: str) -> bool:
        """Opt ``phone`` out; False when it already was."""
        return bool(await self.redis.zadd(optouts_key(app), {phone: 0}, nx=True))

    @redis_edge
    async def remove(self, app: str, phone: str) -> bool:
        """Opt ``phone`` back in; False when it was not opted out."""
        return bool(await self.redis.zrem(optouts_key(app), phone))

    @redis_edge
    async def opted_out(self, app: str, phones: Sequence[str]) -> set[str]:
        """Which of ``phones`` are opted out."""
        if not phones:
            return set()
        scores = await self.redis.zmscore(optouts_key(app), list(phones))
        return {phone for phone, score in zip(phones, scores, strict=True) if score is not None}

    @redis_edge
    async def opted_out_of(self, recipients: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(app, phone)`` pairs are opted out, for any number of apps in
        one round trip (each app's list is in its own slot: a pipeline, not a
        script)."""
        by_app: dict[str, list[str]] = {}
        for app, phone in recipients:
            by_app.setdefault(app, []).append(phone)
        if not by_app:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for app, phones in by_app.items():
                pipe.zmscore(optouts_key(app), phones)
            replies = await pipe.execute()
        return {
            (app, phone)
            for (app, phones), scores in zip(by_app.items(), replies, strict=True)
            for phone, score in zip(phones, scores, strict=True)
            if score is not None
        }

    @redis_edge
    async def page(self, app: str, after: str, limit: int) -> tuple[list[str], str]:
        """Up to ``limit`` numbers after ``after`` ('' from the start), in number
        order, and the number to go on after ('' at the end)."""
        start = f"({after}" if after else "-"
        raw = await self.redis.zrangebylex(optouts_key(app), start, "+", start=0, num=limit + 1)
        phones = [p.decode() if isinstance(p, bytes) else str(p) for p in raw]
        more = len(phones) > limit
        phones = phones[:limit]
        return phones, phones[-1] if more else ""
