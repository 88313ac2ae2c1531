"""SignStore: the sign names each app has registered, and its default one.

They live in the app's template slot (``store.keys.TemplateKeys``): a hash of
names with their registration time and a string with the default. Each change
is one script, so the default is always a registered name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import TemplateKeys
from smsgate_server.store.scripts import SignScripts

__all__ = ["MAX_SIGN_NAMES", "SignStore", "SignWrite", "StoredSign"]

# Vendors approve a handful of signs per account; 100 bounds the listing and
# the hash without paging.
MAX_SIGN_NAMES = 100


class SignWrite(enum.StrEnum):
    """What a sign-name script did."""

    OK = "ok"
    EXISTS = "exists"  # create: already registered
    FULL = "full"  # create: the app has MAX_SIGN_NAMES
    GONE = "gone"  # set default, delete: not registered


@dataclass(frozen=True, slots=True)
class StoredSign:
    """A registered sign name."""

    name: str
    create_time_ms: int
    is_default: bool


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SignStore:
    """Registers, lists and unregisters the sign names of each app."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.scripts = SignScripts(redis)

    @redis_edge
    async def create(self, app: str, name: str, *, now_ms: int, make_default: bool) -> SignWrite:
        k = TemplateKeys(app)
        reply = await self.scripts.create(
            keys=[k.signs, k.default_sign],
            args=[name, now_ms, "1" if make_default else "", MAX_SIGN_NAMES],
        )
        return SignWrite(_s(reply))

    @redis_edge
    async def set_default(self, app: str, name: str) -> SignWrite:
        """Make ``name`` the default ('' clears it)."""
        k = TemplateKeys(app)
        return SignWrite(
            _s(await self.scripts.set_default(keys=[k.signs, k.default_sign], args=[name]))
        )

    @redis_edge
    async def delete(self, app: str, name: str) -> SignWrite:
        k = TemplateKeys(app)
        return SignWrite(_s(await self.scripts.delete(keys=[k.signs, k.default_sign], args=[name])))

    @redis_edge
    async def all(self, app: str) -> list[StoredSign]:
        """Every sign name of the app, by name."""
        k = TemplateKeys(app)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.signs)
            pipe.get(k.default_sign)
            signs, default = await pipe.execute()
        default_name = _s(default) if default is not None else ""
        return sorted(
            (StoredSign(_s(n), int(_s(t)), _s(n) == default_name) for n, t in signs.items()),
            key=lambda s: s.name,
        )

    @redis_edge
    async def lookup(self, app: str, name: str) -> tuple[bool, str]:
        """Whether ``name`` is registered (``""`` is not), and the app's default
        sign (``""`` when none), in one round trip."""
        k = TemplateKeys(app)
        if not name:
            default = await self.redis.get(k.default_sign)
            return False, _s(default) if default is not None else ""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(k.signs, name)
            pipe.get(k.default_sign)
            registered, default = await pipe.execute()
        return bool(registered), _s(default) if default is not None else ""
