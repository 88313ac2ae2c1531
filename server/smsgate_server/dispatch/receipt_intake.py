"""Vendor receipts posted to the HTTP side port, stored before the vendor hears OK.

A vendor re-posts a report until it gets its OK, so the OK waits until every
receipt of the request is stored or known to be useless: then a crash in
between costs one re-post, never a receipt. Any replica stores any receipt:
the message is found in Redis by the vendor's id for it, whichever replica
sent it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from smsgate_server.dispatch.backoff import retry_delay
from smsgate_server.domain.ids import shard_of_id
from smsgate_server.metrics import RECEIPTS
from smsgate_server.providers.receipts import VendorReceipt
from smsgate_server.store.messages import MessageStore, Receipt, ReceiptResult

__all__ = ["HOLD_SECONDS", "Fate", "IntakeResult", "ReceiptIntake"]

# How long one request waits for sends whose outcome is not stored yet: a
# vendor can report before our write of its answer lands. Well inside the
# vendors' callback timeouts (Tencent and Twilio give about 15 s).
HOLD_SECONDS = 3.0
RETRY_BASE = 0.02
RETRY_MAX = 0.5
# Receipts per script call (a Tencent push carries up to a few hundred).
BATCH = 500


class Fate(StrEnum):
    """What became of one receipt (also the metric's ``result`` label)."""

    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    # The message had ended already (a repeat, or after it expired).
    IGNORED = "ignored"
    # No message has this vendor id: not ours, or long gone.
    UNKNOWN = "unknown"
    # The message is still being sent: the vendor must post it again.
    EARLY = "early"


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """How many receipts of a request met each fate; ``retry_later`` when
    some could not be stored yet, so the vendor must not get its OK."""

    fates: dict[Fate, int]

    @property
    def retry_later(self) -> bool:
        return self.fates.get(Fate.EARLY, 0) > 0


@dataclass(eq=False, slots=True)
class _Pending:
    receipt: VendorReceipt
    member: str = ""  # 'app:id' once found
    started: bool = False  # found SENDING: its send outcome is on its way


class ReceiptIntake:
    """Stores the receipts of one vendor request (``store``), retrying, for up
    to ``hold`` seconds, those that arrived before their send outcome."""

    def __init__(
        self,
        store: MessageStore,
        *,
        hold: float = HOLD_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.hold = hold
        self.rng = rng or random.Random()

    async def store_receipts(
        self, provider: str, receipts: Sequence[VendorReceipt]
    ) -> IntakeResult:
        """Apply ``receipts`` of ``provider`` (its name in the providers file);
        Redis errors propagate (the vendor then posts again)."""
        fates: dict[Fate, int] = defaultdict(int)
        pending = [_Pending(r) for r in receipts]
        deadline = time.monotonic() + self.hold
        attempt = 0
        while pending:
            for start in range(0, len(pending), BATCH):
                await self._try(provider, pending[start : start + BATCH], fates)
            pending = [p for p in pending if p.member == "" or p.started]
            attempt += 1
            delay = retry_delay(attempt, base=RETRY_BASE, cap=RETRY_MAX, rng=self.rng)
            if not pending or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
        for p in pending:
            fates[Fate.EARLY if p.started else Fate.UNKNOWN] += 1
        for fate, count in fates.items():
            RECEIPTS.labels(provider, fate.value).inc(count)
        return IntakeResult(dict(fates))

    async def _try(self, provider: str, batch: list[_Pending], fates: dict[Fate, int]) -> None:
        """One pass: look up the vendor ids not found yet, apply what can be.
        What is done leaves ``batch`` with ``member`` set and ``started`` off."""
        unknown = [p for p in batch if not p.member]
        found = await self.store.lookup_provider_ids(
            provider, [p.receipt.vendor_id for p in unknown]
        )
        for p, member in zip(unknown, found, strict=True):
            p.member = member or ""
        by_shard: dict[int, list[tuple[_Pending, Receipt]]] = defaultdict(list)
        for p in batch:
            app, _, message_id = p.member.partition(":")
            shard = shard_of_id(message_id, self.store.shards) if app else None
            if shard is None:
                continue
            r = p.receipt
            by_shard[shard].append(
                (p, Receipt(app, message_id, r.delivered, r.code, r.reason, r.time_ms))
            )
        for shard, items in by_shard.items():
            results = await self.store.apply_receipts(shard, [receipt for _, receipt in items])
            for (p, _), result in zip(items, results, strict=True):
                p.started = result is ReceiptResult.EARLY
                if result is ReceiptResult.IGNORED:
                    fates[Fate.IGNORED] += 1
                elif result is ReceiptResult.APPLIED:
                    fates[Fate.DELIVERED if p.receipt.delivered else Fate.UNDELIVERED] += 1
