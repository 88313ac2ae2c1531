"""AppStore: app records (name, hashed secret, verification policy) in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from smsgate_server.domain.apps import (
    App,
    Credentials,
    hash_secret,
    new_credentials,
    secret_matches,
)
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import AppField, app_key, apps_index

__all__ = ["AppStore"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AppStore:
    """Creates apps and checks their credentials."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @redis_edge
    async def create(
        self,
        name: str,
        *,
        allowed_countries: Iterable[int] = (),
        verify_per_minute: int | None = None,
        accept_per_second: int | None = None,
        max_held_messages: int | None = None,
    ) -> Credentials:
        """A new app; the returned secret is not stored anywhere in plain.
        ``allowed_countries`` (empty: the server default) and ``verify_per_minute``
        (None: the server default) set its verification policy;
        ``accept_per_second`` and ``max_held_messages`` (None: the server
        defaults) its fair share."""
        creds = new_credentials()
        record: dict[FieldT, EncodableT] = {
            AppField.NAME: name,
            AppField.SECRET_SHA256: hash_secret(creds.app_secret),
            AppField.CREATED: int(time.time() * 1000),
        }
        countries = sorted(set(allowed_countries))
        if countries:
            record[AppField.VERIFY_COUNTRIES] = ",".join(map(str, countries))
        if verify_per_minute is not None:
            record[AppField.VERIFY_PER_MINUTE] = verify_per_minute
        if accept_per_second is not None:
            record[AppField.ACCEPT_PER_SECOND] = accept_per_second
        if max_held_messages is not None:
            record[AppField.MAX_HELD_MESSAGES] = max_held_messages
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(app_key(creds.app_key), mapping=record)
            pipe.sadd(apps_index(), creds.app_key)
            await pipe.execute()
        return creds

    @redis_edge
    async def authenticate(self, key: str, secret: str) -> App | None:
        """The app when ``secret`` is its secret, else None."""
        name, stored, countries, per_minute = await self.redis.hmget(
            app_key(key),
            [
                AppField.NAME,
                AppField.SECRET_SHA256,
                AppField.VERIFY_COUNTRIES,
                AppField.VERIFY_PER_MINUTE,
            ],
        )
        if stored is None or not secret_matches(secret, _text(stored)):
            return None
        return App(
            key=key,
            name=_text(name) if name else "",
            allowed_countries=(
                frozenset(int(c) for c in _text(countries).split(",")) if countries else None
            ),
            verify_per_minute=int(per_minute) if per_minute is not None else None,
        )

    @redis_edge
    async def count(self) -> int:
        return int(await self.redis.scard(apps_index()))
