"""Vendor-call slots: how many provider calls one dispatcher runs at once
(``SMSGATE_DISPATCH_CONCURRENCY``).

A chunk holds a slot while its call runs. A reader takes its slots before it
reads and reads only what they can carry, so entries never pile up in this
process waiting for a call: every reader (one per shard on a cluster) draws
on the same slots.
"""

from __future__ import annotations

import asyncio

__all__ = ["Lent", "Slots"]


class Slots:
    """The slots of one dispatcher, counted here rather than read from the
    semaphore that queues their waiters."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._semaphore = asyncio.Semaphore(total)

    async def acquire(self) -> None:
        """Take one slot, waiting for it."""
        await self._semaphore.acquire()
        self.free -= 1

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots."""
        for _ in range(count):
            self.free += 1
            self._semaphore.release()

    async def lend(self, most: int) -> Lent:
        """Wait for one slot, then take up to ``most`` of those free now (ahead
        of no one: a waiter queued first is served first)."""
        await self.acquire()
        taken = 1
        while taken < most and not self._semaphore.locked():
            await self.acquire()
            taken += 1
        return Lent(self, taken)


class Lent:
    """Slots a reader took for one read: its chunks use them first, and what
    is left goes back (``give_back``)."""

    def __init__(self, slots: Slots, count: int) -> None:
        self.slots = slots
        self.count = count
        self.left = count

    async def acquire(self) -> None:
        """A slot for one chunk: one of these, else one more of the pool."""
        if self.left > 0:
            self.left -= 1
        else:
            await self.slots.acquire()

    def give_back(self) -> None:
        self.slots.release(self.left)
        self.left = 0
