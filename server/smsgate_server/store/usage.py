"""UsageStore: what each app sent and what it cost, per day, from the counts
the message scripts keep (store/lua/lib.lua ``count_usage``).

The counting happens in the script that moves a message, so no crash can count
a move twice or miss one. Each shard counts its own messages, in its own slot:
an app's day is the sum over the shards (``ShardKeys.usage``), and the totals
behind the Prometheus metrics likewise (``ShardKeys.usage_totals``). The
scripts price a message from the shard's config hash, which ``configure``
writes at start from the providers file's price table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from smsgate_server.domain.prices import PriceTable
from smsgate_server.domain.status import Status
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import ShardKeys
from smsgate_server.store.scripts import UsageScripts

__all__ = ["RETENTION_FIELD", "UsageKey", "UsageRow", "UsageStore", "UsageTotal", "config_fields"]

# The config hash's field of the usage retention, in seconds (lib.lua reads it).
RETENTION_FIELD = "r"


@dataclass(frozen=True, slots=True, order=True)
class UsageKey:
    """What a usage row counts: the messages that entered ``status`` through
    ``provider`` ('' for none) to ``region`` (ZZ: no country), priced in
    ``currency`` ('' when unpriced)."""

    status: Status
    provider: str
    region: str
    currency: str


@dataclass(frozen=True, slots=True, order=True)
class UsageRow:
    """One app's count of one day (days since 1970-01-01, UTC) and key."""

    day: int
    key: UsageKey
    messages: int
    segments: int
    cost_micros: int


@dataclass(frozen=True, slots=True, order=True)
class UsageTotal:
    """Every app's count of one key since the data began (the metrics)."""

    key: UsageKey
    messages: int
    segments: int
    cost_micros: int


def config_fields(prices: PriceTable, retention_seconds: int) -> dict[str, str]:
    """The config hash lib.lua prices messages from (ShardKeys.usage_config)."""
    fields = {RETENTION_FIELD: str(retention_seconds)}
    for provider, prices_of in prices.lists.items():
        fields[f"{provider}|$"] = prices_of.currency
        if prices_of.default_micros is not None:
            fields[f"{provider}|*"] = str(prices_of.default_micros)
        for region, micros in prices_of.by_region.items():
            fields[f"{provider}|{region}"] = str(micros)
    return fields


class UsageStore:
    """Writes each shard's price config; reads and sums the shards' counts."""

    def __init__(self, redis: RedisClient, *, shards: int) -> None:
        self.redis = redis
        self.shards = shards
        self.shard_keys = [ShardKeys(s) for s in range(shards)]
        self.scripts = UsageScripts(redis)

    @redis_edge
    async def configure(self, prices: PriceTable, *, retention_seconds: int) -> None:
        """Replace every shard's config with ``prices`` and the retention: the
        messages settled from now on are priced by them."""
        fields = config_fields(prices, retention_seconds)
        args = [x for pair in sorted(fields.items()) for x in pair]
        for keys in self.shard_keys:
            await self.scripts.configure(keys=[keys.usage_config], args=args)

    @redis_edge
    async def days(self, app: str, first: int, last: int) -> list[UsageRow]:
        """The app's rows of days ``first`` to ``last`` (included), summed over
        the shards, ordered by day and key."""
        sums: dict[tuple[int, UsageKey], list[int]] = defaultdict(lambda: [0, 0, 0])
        for keys in self.shard_keys:
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in range(first, last + 1):
                    pipe.hgetall(keys.usage(app, day))
                hashes = await pipe.execute()
            for day, fields in zip(range(first, last + 1), hashes, strict=True):
                for key, measure, value in _parse(fields):
                    sums[(day, key)][measure] += value
        return sorted(UsageRow(day, key, *v) for (day, key), v in sums.items())

    @redis_edge
    async def totals(self) -> list[UsageTotal]:
        """Every app's counts since the data began, summed over the shards."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.shard_keys:
                pipe.hgetall(keys.usage_totals)
            hashes = await pipe.execute()
        sums: dict[UsageKey, list[int]] = defaultdict(lambda: [0, 0, 0])
        for fields in hashes:
            for key, measure, value in _parse(fields):
                sums[key][measure] += value
        return sorted(UsageTotal(key, *v) for key, v in sums.items())


# The measure a field's last part names: its index in a row's counts.
_MEASURES = {"n": 0, "s": 1, "c": 2}


def _parse(fields: dict[bytes, bytes]) -> Iterable[tuple[UsageKey, int, int]]:
    """(key, measure index, value) of each ``<status>|<provider>|<region>|<currency>|<m>``."""
    for name, value in fields.items():
        parts = name.decode().split("|")
        if len(parts) != 5 or parts[4] not in _MEASURES:
            continue
        key = UsageKey(Status(int(parts[0])), parts[1], parts[2], parts[3])
        yield key, _MEASURES[parts[4]], int(value)
