"""Delivery receipts: taken from the provider as they come, stored in batches.

One batch costs one look-up of provider ids (for receipts whose vendor did not
echo our reference) and one script per shard. A receipt can outrun the stored
outcome of its own send (the message is still SENDING, or its provider id is
not recorded yet); it is tried again with backoff, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass

from smsgate_server.dispatch.backoff import retry_delay
from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.ids import shard_of_id
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import RECEIPTS
from smsgate_server.store.messages import MessageStore, Receipt, ReceiptResult

__all__ = ["ReceiptQueue"]

log = logging.getLogger("smsgate.dispatch")

# Receipts stored per script call.
BATCH = 500
# Tries before a receipt whose message never leaves SENDING (or is unknown) is dropped;
# with the delays below that is about 15 s.
TRIES = 20
RETRY_BASE = 0.05
RETRY_MAX = 2.0
# Redis away fails every batch, and the retried receipts come back a few at a
# time: one line per interval with the count of failed batches, not one each.
_not_stored = RepeatedLog(log, "receipts not stored yet", every=5.0)


@dataclass(eq=False, slots=True)
class _Pending:
    provider_id: str
    delivered: bool
    code: str
    reason: str
    member: str  # 'app:id', or '' until looked up by provider id
    tries: int = 0


class ReceiptQueue:
    """Receipts of one provider waiting to be stored; ``receive`` is the
    provider's ReceiptSink and ``run`` stores them until ``stopping`` is set."""

    def __init__(self, store: MessageStore, provider: str, *, rng: random.Random) -> None:
        self.store = store
        self.provider = provider
        self.rng = rng
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    def receive(
        self, provider_id: str, delivered: bool, code: str, reason: str, member: str = ""
    ) -> None:
        """Take a receipt; ``member`` (``app:id``) spares the look-up by provider
        id when the vendor echoed our reference."""
        self._queue.put_nowait(_Pending(provider_id, delivered, code, reason, member))

    async def run(self, stopping: asyncio.Event) -> None:
        # It checks the stop flag: a cancellation that lands inside redis-py
        # can come out as a Redis error and be retried. Receipts still queued at
        # the stop are dropped; their messages expire.
        while not stopping.is_set():
            try:
                async with asyncio.timeout(0.5):
                    batch = [await self._queue.get()]
            except TimeoutError:
                continue
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis away: keep them and try again shortly. Anything else
                # is a bug: its traceback goes with the line.
                bug = None if isinstance(exc, Unavailable) else exc
                _not_stored.occurred(type(exc).__name__, exc=bug, receipts=len(batch))
                for item in batch:
                    self._retry(item)

    def _retry(self, item: _Pending) -> None:
        item.tries += 1
        if item.tries > TRIES:
            log.warning("receipt given up", extra={"provider_id": item.provider_id})
            RECEIPTS.labels(self.provider, "dropped").inc()
            return
        RECEIPTS.labels(self.provider, "early").inc()
        delay = retry_delay(item.tries, base=RETRY_BASE, cap=RETRY_MAX, rng=self.rng)
        asyncio.get_running_loop().call_later(delay, self._queue.put_nowait, item)

    async def _store(self, batch: list[_Pending]) -> None:
        unknown = [r for r in batch if not r.member]
        found = await self.store.lookup_provider_ids(
            self.provider, [r.provider_id for r in unknown]
        )
        for item, member in zip(unknown, found, strict=True):
            item.member = member or ""
        by_shard: dict[int, list[_Pending]] = defaultdict(list)
        for item in batch:
            app, _, message_id = item.member.partition(":")
            shard = shard_of_id(message_id, self.store.shards) if app else None
            if shard is None:
                # Its provider id is not recorded yet: the send outcome is late.
                self._retry(item)
                continue
            by_shard[shard].append(item)
        for shard, items in by_shard.items():
            results = await self.store.apply_receipts(
                shard,
                [
                    Receipt(app, message_id, r.delivered, r.code, r.reason)
                    for r in items
                    for app, _, message_id in [r.member.partition(":")]
                ],
            )
            for r, result in zip(items, results, strict=True):
                if result is ReceiptResult.EARLY:
                    self._retry(r)
                elif result is ReceiptResult.IGNORED:
                    RECEIPTS.labels(self.provider, "ignored").inc()
                else:
                    RECEIPTS.labels(
                        self.provider, "delivered" if r.delivered else "undelivered"
                    ).inc()
