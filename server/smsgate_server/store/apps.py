"""AppStore: app records (name, hashed secret) in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from smsgate_server.domain.apps import Credentials, hash_secret, new_credentials, secret_matches
from smsgate_server.store.keys import app_key, apps_index

__all__ = ["App", "AppStore"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class App:
    """An authenticated app."""

    key: str
    name: str


class AppStore:
    """Creates apps and checks their credentials."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, name: str) -> Credentials:
        """A new app; the returned secret is not stored anywhere in plain."""
        creds = new_credentials()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                app_key(creds.app_key),
                mapping={
                    "name": name,
                    "secret_sha256": hash_secret(creds.app_secret),
                    "created_ms": int(time.time() * 1000),
                },
            )
            pipe.sadd(apps_index(), creds.app_key)
            await pipe.execute()
        return creds

    async def authenticate(self, key: str, secret: str) -> App | None:
        """The app when ``secret`` is its secret, else None."""
        name, stored = await self.redis.hmget(app_key(key), ["name", "secret_sha256"])
        if stored is None or not secret_matches(secret, _text(stored)):
            return None
        return App(key=key, name=_text(name) if name else "")

    async def count(self) -> int:
        return int(await self.redis.scard(apps_index()))
