"""Shard leases: the dispatcher processes share the shards instead of each
reading all of them.

Every worker process renews its heartbeat and its leases in Redis
(``store.leases``) every third of the lease time; each holds about
``ceil(shards / live processes)`` shards. A process that joins takes shards as
the others give up what they hold above the new share; a process that dies
stops renewing, and its shards are taken by the others once its leases run
out: the lease time is a third of the visibility timeout, so a dead process's
shards have a new reader (which re-claims its pending entries) well within
the visibility timeout. A process started before the shard count grew leases
only the shards it knows; the others take the rest (``store.leases``).

Leases are about cost, not safety: two processes reading one shard for a
moment (a lease handed over while the old owner's blocking read is still
out) is harmless, since the consumer group gives each entry to one of them
and the scripts that claim, settle and promote are atomic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from smsgate_server.aio import cancel_and_wait
from smsgate_server.domain.errors import Unavailable
from smsgate_server.logs import RepeatedLog
from smsgate_server.store.leases import LeaseStore

__all__ = ["LeasedReaders", "ShardGroup", "ShardLeases", "lease_seconds"]

log = logging.getLogger("smsgate.dispatch")

# The lease time as a share of the visibility timeout (see the module docstring),
# and its floor: a very short visibility timeout (tests use a fraction of a
# second) would have leases renewed every few milliseconds and lost to any
# pause of the event loop.
LEASE_SHARE_OF_VISIBILITY = 1 / 3
MIN_LEASE_SECONDS = 1.0
# Renewals per lease time: a renewal may fail twice before the lease runs out.
RENEWALS_PER_LEASE = 3
# How often the readers are checked against the leases when none changed.
CHECK_SECONDS = 1.0

_renew_failed = RepeatedLog(log, "cannot renew shard leases", every=5.0)


def lease_seconds(visibility_timeout: float) -> float:
    """How long a worker's shard leases last for a visibility timeout."""
    return max(MIN_LEASE_SECONDS, visibility_timeout * LEASE_SHARE_OF_VISIBILITY)


ShardGroup = Callable[[], tuple[int, ...]]
"""The shards one reader reads now; empty once it should stop."""

# The key of the one reader of every leased shard (LeasedReaders, together).
_ALL = -1


class ShardLeases:
    """The shards this process's dispatcher owns now (``owned``), kept by ``run``."""

    def __init__(
        self,
        store: LeaseStore | None,
        *,
        process: str,
        shards: int,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.process = process
        self.shards = shards
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.clock = clock
        # Without a store (one process by construction, tests) it owns every shard.
        self.owned: frozenset[int] = frozenset(range(shards)) if store is None else frozenset()
        self.live = 1
        self.changed = asyncio.Event()
        self._valid_until = 0.0

    @classmethod
    def every_shard(cls, shards: int) -> ShardLeases:
        """Leases of all ``shards``, held without Redis (a lone dispatcher)."""
        return cls(None, process="", shards=shards, lease_seconds=1.0)

    @property
    def renew_seconds(self) -> float:
        return self.lease_ms / 1000 / RENEWALS_PER_LEASE

    async def renew(self) -> None:
        """One renewal; on failure the leases are kept only while they last."""
        if self.store is None:
            return
        # Measured from before the call: Redis starts the lease later than that.
        sent = self.clock()
        try:
            share = await self.store.renew(self.process, shards=self.shards, ttl_ms=self.lease_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Redis away is expected now and then; anything else is a bug, but
            # either way the loop goes on: a renewal loop that died would
            # leave this process reading nothing once its leases ran out.
            _renew_failed.occurred(
                type(exc).__name__, exc=None if isinstance(exc, Unavailable) else exc
            )
            if self.owned and self.clock() >= self._valid_until:
                log.warning("shard leases ran out", extra={"shards": len(self.owned)})
                self._set(frozenset())
            return
        self._valid_until = sent + self.lease_ms / 1000
        self.live = share.live
        if share.shards != self.owned:
            log.info(
                "shard leases changed",
                extra={"shards": len(share.shards), "processes": share.live},
            )
            self._set(share.shards)

    def _set(self, owned: frozenset[int]) -> None:
        self.owned = owned
        self.changed.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Renew until ``stopping`` is set."""
        if self.store is None:
            return
        while not stopping.is_set():
            await self.renew()
            try:
                async with asyncio.timeout(self.renew_seconds):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def release(self) -> None:
        """Give every lease back (a clean stop), so others take them at once."""
        self._set(frozenset())
        if self.store is None:
            return
        try:
            async with asyncio.timeout(2.0):
                await self.store.release(self.process)
        except (Unavailable, TimeoutError):
            pass  # they run out on their own


class LeasedReaders:
    """Keeps a reader task on the leased shards: one over all of them when a
    single blocking read can wait on many streams (one Redis server), else one
    per shard (on a cluster a multi-key read must stay in one slot)."""

    def __init__(
        self,
        leases: ShardLeases,
        read: Callable[[ShardGroup], Coroutine[Any, Any, None]],
        *,
        together: bool,
    ) -> None:
        self.leases = leases
        self.read = read
        self.together = together
        # A reader task per key: a shard, or _ALL for the one reading every shard.
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # The shards each reader asked for last (what its read in flight covers).
        self._asked: dict[int, tuple[int, ...]] = {}

    def _group(self, key: int) -> ShardGroup:
        def group() -> tuple[int, ...]:
            owned = self.leases.owned
            shards = tuple(sorted(owned)) if key == _ALL else (key,) if key in owned else ()
            self._asked[key] = shards
            return shards

        return group

    async def run(self, stopping: asyncio.Event) -> None:
        """Start readers as leases come, until ``stopping``; a reader ends by
        itself once its shards are gone (never cancelled mid-read, which could
        leave entries it was handed unprocessed until they are re-claimed)."""
        try:
            while not stopping.is_set():
                self.leases.changed.clear()
                owned = self.leases.owned
                wanted = ({_ALL} if owned else set()) if self.together else set(owned)
                for key in [k for k, t in self._tasks.items() if t.done()]:
                    del self._tasks[key]
                    self._asked.pop(key, None)
                for key in wanted - self._tasks.keys():
                    self._tasks[key] = asyncio.create_task(
                        self.read(self._group(key)), name=f"read-{key if key != _ALL else 'all'}"
                    )
                try:
                    async with asyncio.timeout(CHECK_SECONDS):
                        await self.leases.changed.wait()
                except TimeoutError:
                    pass
        finally:
            await cancel_and_wait(self._tasks.values(), timeout=2.0)

    @property
    def reading(self) -> int:
        """How many reader tasks run now (each holds one blocking connection)."""
        return sum(1 for t in self._tasks.values() if not t.done())

    @property
    def reading_shards(self) -> frozenset[int]:
        """The shards the reads now in flight cover (a lease given up is
        still read until the read that was waiting on it returns)."""
        return frozenset(
            shard
            for key, task in self._tasks.items()
            if not task.done()
            for shard in self._asked.get(key, ())
        )
