"""LeaseStore: the dispatchers' shard leases and heartbeats in Redis.

One script per call (``lua/leases.lua``) renews the caller's heartbeat, drops
processes whose heartbeat ran out, and settles the caller's share of the
shards: it keeps what it holds up to ``ceil(shards / live processes)``, gives
up the rest, and takes shards whose lease ran out. ``shards`` is the largest
count a live process knows: one started before the count grew leases only
the shards it knows, and a shard nobody took within their shares for a whole
lease goes to a process that knows it, above its share. All of it lives in
one slot (``{leases}``), so the script runs unchanged on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import lease_keys, lease_state_keys
from smsgate_server.store.scripts import LuaScript

__all__ = ["LeaseStore", "Share"]


@dataclass(frozen=True, slots=True)
class Share:
    """What one renewal gave a process: its shards and how many processes live."""

    shards: frozenset[int]
    live: int


class LeaseStore:
    """Acquires, renews and releases one process's shard leases."""

    def __init__(self, redis: RedisClient) -> None:
        source = resources.files("smsgate_server.store") / "lua" / "leases.lua"
        self._script = LuaScript(redis, source.read_text())
        self._keys = [*lease_keys(), *lease_state_keys()]

    @redis_edge
    async def renew(self, process: str, *, shards: int, ttl_ms: int) -> Share:
        """Heartbeat ``process`` and return its share of ``shards``, each leased
        for ``ttl_ms`` from now (Redis's clock)."""
        reply = await self._script(self._keys, [process, ttl_ms, shards, "renew"])
        return Share(frozenset(int(s) for s in reply[1:]), int(reply[0]))

    @redis_edge
    async def release(self, process: str) -> None:
        """Give up every lease of ``process`` and its heartbeat (a clean stop),
        so the others take its shards at their next renewal."""
        await self._script(self._keys, [process, 0, 0, "release"])
