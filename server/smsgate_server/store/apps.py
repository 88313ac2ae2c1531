"""AppStore: app records (name, hashed secret, verification policy) in Redis,
and the broadcast that tells every server process an app was revoked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.typing import EncodableT, FieldT

from smsgate_server.domain.apps import (
    App,
    Credentials,
    hash_secret,
    new_credentials,
    new_secret,
    secret_matches,
)
from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.phone import E164_ONLY, NumberPolicy
from smsgate_server.domain.policy import PolicyOverrides
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import keep_cancellation, map_redis_errors, redis_edge
from smsgate_server.store.keys import AppField, app_key, apps_index, revocations_channel
from smsgate_server.store.scripts import AppScripts

__all__ = ["AppListing", "AppStore"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _own_int(value: bytes | str | None) -> int | None:
    """An app's own policy number; None (the server's) when unset or ''."""
    return int(value) if value else None


def _numbers_record(numbers: NumberPolicy) -> dict[FieldT, EncodableT]:
    return {
        AppField.DEFAULT_REGION: numbers.default_region,
        AppField.MOBILE_ONLY: "1" if numbers.mobile_only else "",
    }


@dataclass(frozen=True, slots=True)
class AppListing:
    """What ``apps list`` shows of an app (never its secret's hash)."""

    key: str
    name: str
    created_ms: int
    default_region: str


# Seconds between attempts to subscribe again to revocations while Redis is away.
RESUBSCRIBE_SECONDS = 1.0


class AppStore:
    """Creates, checks and revokes apps."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.scripts = AppScripts(redis)

    @redis_edge
    async def create(
        self,
        name: str,
        *,
        allowed_countries: Iterable[int] = (),
        verify_per_minute: int | None = None,
        accept_per_second: int | None = None,
        max_held_messages: int | None = None,
        numbers: NumberPolicy = E164_ONLY,
    ) -> Credentials:
        """A new app; the returned secret is not stored anywhere in plain.
        ``allowed_countries`` (empty: the server default) and ``verify_per_minute``
        (None: the server default) set its verification policy;
        ``accept_per_second`` and ``max_held_messages`` (None: the server
        defaults) its fair share; ``numbers`` how its recipients are read."""
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
        record |= _numbers_record(numbers)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(app_key(creds.app_key), mapping=record)
            pipe.sadd(apps_index(), creds.app_key)
            await pipe.execute()
        return creds

    @redis_edge
    async def authenticate(self, key: str, secret: str) -> App | None:
        """The app when ``secret`` is its secret, else None."""
        (
            name,
            stored,
            countries,
            per_minute,
            region,
            mobile_only,
            same_content,
            per_number_day,
            daily_cap,
            quiet_hours,
        ) = await self.redis.hmget(
            app_key(key),
            [
                AppField.NAME,
                AppField.SECRET_SHA256,
                AppField.VERIFY_COUNTRIES,
                AppField.VERIFY_PER_MINUTE,
                AppField.DEFAULT_REGION,
                AppField.MOBILE_ONLY,
                AppField.SAME_CONTENT_SECONDS,
                AppField.PER_NUMBER_DAY,
                AppField.DAILY_CAP,
                AppField.QUIET_HOURS,
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
            numbers=NumberPolicy(
                default_region=_text(region) if region else "",
                mobile_only=mobile_only is not None and _text(mobile_only) == "1",
            ),
            policy=PolicyOverrides(
                same_content_seconds=_own_int(same_content),
                per_number_day=_own_int(per_number_day),
                daily_cap=_own_int(daily_cap),
                quiet_hours=_text(quiet_hours) if quiet_hours else None,
            ),
        )

    @redis_edge
    async def set_numbers(self, key: str, numbers: NumberPolicy) -> bool:
        """Change how app ``key`` reads its recipients' numbers; False when there
        is no such app. Every server process drops the app from its auth cache
        (the revocation channel), so the change applies to its next call."""
        fields = [x for pair in _numbers_record(numbers).items() for x in pair]
        changed = bool(await self.scripts.update(keys=[app_key(key)], args=fields))
        if changed:
            await self.redis.publish(revocations_channel(), key)
        return changed

    @redis_edge
    async def own_policy(self, key: str) -> PolicyOverrides | None:
        """App ``key``'s own sending-policy values; None when there is no such app."""
        name, same_content, per_number_day, daily_cap, quiet_hours = await self.redis.hmget(
            app_key(key),
            [
                AppField.NAME,
                AppField.SAME_CONTENT_SECONDS,
                AppField.PER_NUMBER_DAY,
                AppField.DAILY_CAP,
                AppField.QUIET_HOURS,
            ],
        )
        if name is None:
            return None
        return PolicyOverrides(
            same_content_seconds=_own_int(same_content),
            per_number_day=_own_int(per_number_day),
            daily_cap=_own_int(daily_cap),
            quiet_hours=_text(quiet_hours) if quiet_hours else None,
        )

    @redis_edge
    async def set_policy(self, key: str, policy: PolicyOverrides) -> bool:
        """Set app ``key``'s own sending-policy values (None: back to the
        server's); False when there is no such app. Applies at once, as
        ``set_numbers``."""
        record = {
            AppField.SAME_CONTENT_SECONDS: policy.same_content_seconds,
            AppField.PER_NUMBER_DAY: policy.per_number_day,
            AppField.DAILY_CAP: policy.daily_cap,
            AppField.QUIET_HOURS: policy.quiet_hours,
        }
        fields = [x for f, v in record.items() for x in (f, "" if v is None else v)]
        changed = bool(await self.scripts.update(keys=[app_key(key)], args=fields))
        if changed:
            await self.redis.publish(revocations_channel(), key)
        return changed

    @redis_edge
    async def revoke(self, key: str) -> bool:
        """Delete app ``key``, so its token stops working, and publish its key to
        every server process; False when there is no such app."""
        # Not one transaction: the record and the index are in different
        # slots on a cluster. Published last, so a process that hears it and
        # looks the app up again finds it gone.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(app_key(key))
            pipe.srem(apps_index(), key)
            pipe.publish(revocations_channel(), key)
            deleted, _, _ = await pipe.execute()
        return bool(deleted)

    @redis_edge
    async def rotate_secret(self, key: str) -> Credentials | None:
        """Give app ``key`` a new secret (returned, stored only hashed) and
        publish its key, so every server process drops the old one from its
        auth cache; None when there is no such app. The old secret is refused
        from then on: there is no overlap."""
        secret = new_secret()
        changed = await self.scripts.update(
            keys=[app_key(key)], args=[AppField.SECRET_SHA256, hash_secret(secret)]
        )
        if not changed:
            return None
        await self.redis.publish(revocations_channel(), key)
        return Credentials(key, secret)

    async def follow_revocations(
        self, revoked: Callable[[str], None], missed: Callable[[], None]
    ) -> None:
        """Call ``revoked(key)`` for each app any process revokes, until cancelled,
        on a connection of its own. ``missed()`` is called whenever the
        subscription is (re)made: what was published while this process was not
        subscribed (a Redis outage) is unknown."""
        while True:
            try:
                with map_redis_errors(), keep_cancellation():
                    async with self.redis.pubsub() as pubsub:
                        # Checked here too: listen() may wait for a message forever.
                        with keep_cancellation():
                            await pubsub.subscribe(revocations_channel())
                        # redis-py may reconnect and subscribe again by itself;
                        # each subscription is confirmed by a "subscribe" message.
                        async for message in pubsub.listen():
                            if message["type"] == "subscribe":
                                missed()
                            elif message["type"] == "message":
                                revoked(_text(message["data"]))
            except Unavailable:
                # Logged, with a count, by map_redis_errors.
                await asyncio.sleep(RESUBSCRIBE_SECONDS)

    @redis_edge
    async def list_all(self) -> list[AppListing]:
        """Every app, by key."""
        keys = sorted(_text(k) for k in await self.redis.smembers(apps_index()))
        fields = [AppField.NAME, AppField.CREATED, AppField.DEFAULT_REGION]
        # Not one transaction: each app's record has a slot of its own.
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(app_key(key), fields)
            records = await pipe.execute()
        return [
            AppListing(key, _text(name or b""), int(created or 0), _text(region or b""))
            for key, (name, created, region) in zip(keys, records, strict=True)
            # Revoked between the two reads.
            if name is not None
        ]

    @redis_edge
    async def count(self) -> int:
        return int(await self.redis.scard(apps_index()))
