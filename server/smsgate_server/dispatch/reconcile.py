"""Pull reconciliation: receipts get lost, so a SENT message still without one
after ``reconcile_after`` is asked about at its vendor, and again every as long
until its receipt timeout, when the promote script expires it.

What the vendor says is stored by the receipt script, exactly as a receipt:
idempotent, and never moving a message that has ended. The script that picks
messages puts each back for the next interval in the same step, so with many
replicas each message is asked about by one of them per interval (and two
answers for one message would still change it once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from smsgate_server.dispatch.receipt_intake import ReceiptIntake
from smsgate_server.domain.errors import Unavailable
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import RECEIPTS
from smsgate_server.providers.base import StatusQuery, StatusSource
from smsgate_server.providers.receipts import VendorReceipt
from smsgate_server.store.messages import (
    AwaitingReceipt,
    MessageStore,
    Receipt,
    ReceiptResult,
)

__all__ = ["RECONCILE_BATCH", "Reconciler"]

log = logging.getLogger("smsgate.dispatch")

# Messages asked about per shard and tick: bounds a tick's vendor calls.
RECONCILE_BATCH = 100
_failed = RepeatedLog(log, "reconciliation failed", every=5.0, level=logging.WARNING)


class Reconciler:
    """Asks each provider of ``sources`` (by name) about its SENT messages of
    every shard that waited ``interval`` seconds for their receipt."""

    def __init__(
        self,
        store: MessageStore,
        sources: Mapping[str, StatusSource],
        *,
        interval: float,
        tick: float,
        batch: int = RECONCILE_BATCH,
        shards: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        self.store = store
        # The shards to look at each tick (the dispatcher's leased ones; all by default).
        self.shards = shards or (lambda: range(store.shards))
        # One reconciler for every provider: the script that picks due messages
        # puts each back for the next interval, so a reconciler per provider
        # would take (and skip) the others' messages.
        self.sources = dict(sources)
        self.interval_ms = max(1, int(interval * 1000))
        self.tick = tick
        self.batch = batch
        # Reports of messages not asked about go where pushed receipts go,
        # with the same short wait for sends whose outcome is not stored yet.
        self.intake = ReceiptIntake(store)

    async def run(self, stopping: asyncio.Event) -> None:
        """One batch per shard per tick until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                due = await self.store.reconcile_due(list(self.shards()))
            except Exception as exc:
                bug = None if isinstance(exc, Unavailable) else exc
                _failed.occurred(type(exc).__name__, exc=bug)
                due = []  # the next tick tries again
            for shard in due:
                try:
                    await self.reconcile_shard(shard)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Redis away is expected now and then; anything else is a bug.
                    bug = None if isinstance(exc, Unavailable) else exc
                    _failed.occurred(type(exc).__name__, exc=bug, shard=shard)
            try:
                async with asyncio.timeout(self.tick):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def reconcile_shard(self, shard: int) -> int:
        """Ask about one batch of the shard's due messages; how many it ended."""
        due = await self.store.claim_reconcile(shard, self.batch, self.interval_ms)
        by_provider: dict[str, list[AwaitingReceipt]] = defaultdict(list)
        for m in due:
            # Sent by a provider that answers no queries (or one no longer
            # configured): it waits for its receipt or its expiry.
            if m.provider in self.sources:
                by_provider[m.provider].append(m)
        ended = 0
        for name, mine in by_provider.items():
            ended += await self._ask(shard, name, mine)
        if ended:
            log.info("reconciled", extra={"shard": shard, "count": ended})
        return ended

    async def _ask(self, shard: int, name: str, mine: list[AwaitingReceipt]) -> int:
        answer = await self.sources[name].query_status(
            [StatusQuery(m.id, m.phone, m.provider_message_id, m.sent_ms) for m in mine]
        )
        if answer.others:
            await self.intake.store_receipts(
                name,
                [
                    VendorReceipt(vendor_id, s.delivered, s.code, s.reason, s.time_ms)
                    for vendor_id, s in answer.others
                ],
            )
        found = [
            Receipt(m.app, m.id, a.delivered, a.code, a.reason, a.time_ms)
            for m, a in zip(mine, answer.statuses, strict=True)
            if a is not None
        ]
        if not found:
            return 0
        results = await self.store.apply_receipts(shard, found)
        ended = 0
        for r, result in zip(found, results, strict=True):
            if result is ReceiptResult.APPLIED:
                ended += 1
                fate = "reconciled_delivered" if r.delivered else "reconciled_undelivered"
                RECEIPTS.labels(name, fate).inc()
        return ended
