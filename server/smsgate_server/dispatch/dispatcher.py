"""The dispatcher: reads each shard's queue, hands messages to the provider and
records the outcome.

At-least-once: a queue entry is acknowledged by the same script that stores
the outcome, and entries left pending by a dead worker are re-claimed with
XAUTOCLAIM after the visibility timeout. Due messages (scheduled sends and
retries) are promoted to the queue by one script per shard and tick, so with
several replicas each is promoted once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from smsgate_server.aio import cancel_and_wait
from smsgate_server.config import Settings
from smsgate_server.dispatch.backoff import retry_delay
from smsgate_server.dispatch.leases import LeasedReaders, ShardGroup, ShardLeases
from smsgate_server.dispatch.receipts import ReceiptQueue
from smsgate_server.dispatch.reconcile import Reconciler
from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.sealed_text import TextCipher, UnreadableText
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import PROVIDER_CALLS, PROVIDER_SECONDS, SEND_OUTCOMES
from smsgate_server.providers.base import (
    OutboundBatch,
    OutcomeClass,
    Provider,
    ReceiptSource,
    Recipient,
    RecipientResult,
    StatusSource,
)
from smsgate_server.store.messages import Claimed, MessageStore, Outcome, SendOutcome
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.queue import DispatchQueue, QueueEntry

__all__ = ["DispatchConfig", "Dispatcher"]

log = logging.getLogger("smsgate.dispatch")

# Consumers (one per process start) idle this long with nothing pending are dropped.
DEAD_CONSUMER_MS = 3_600_000
# Due messages queued (and overdue receipts expired) per script call.
PROMOTE_BATCH = 500
# A blip while storing outcomes is retried with this backoff (seconds).
SETTLE_RETRY_BASE = 0.05
SETTLE_RETRY_MAX = 1.0
_settle_failed = RepeatedLog(
    log, "settle gave up; the entries will be re-claimed", every=5.0, level=logging.ERROR
)
_optout_failed = RepeatedLog(
    log, "cannot add a number the vendor reports opted out", every=5.0, level=logging.WARNING
)
_unreadable = RepeatedLog(
    log,
    "cannot open a sealed message text: every replica must share SMSGATE_SERVER_SECRET",
    every=5.0,
    level=logging.ERROR,
)


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """Knobs of the dispatcher; ``from_settings`` fills them (defaults live in Settings)."""

    concurrency: int
    visibility_timeout: float
    max_attempts: int
    retry_base: float
    retry_max: float
    max_message_age: float
    sweep_interval: float
    # Seconds a SENT message waits for its receipt before its vendor is asked.
    reconcile_after: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchConfig:
        return cls(
            concurrency=settings.dispatch_concurrency,
            visibility_timeout=settings.visibility_timeout_seconds,
            max_attempts=settings.max_attempts,
            retry_base=settings.retry_base_seconds,
            retry_max=settings.retry_max_seconds,
            max_message_age=settings.max_message_age_seconds,
            sweep_interval=settings.sweep_interval_seconds,
            reconcile_after=settings.reconcile_after,
        )

    @property
    def provider_timeout(self) -> float:
        """A provider call must end well before its entry could be re-claimed."""
        return self.visibility_timeout * 0.8


class Dispatcher:
    """Runs the queue readers, the re-claimer, the promoter and the receipt
    writer of one process."""

    def __init__(
        self,
        store: MessageStore,
        queue: DispatchQueue,
        provider: Provider,
        *,
        config: DispatchConfig,
        texts: TextCipher,
        rng: random.Random | None = None,
        optouts: OptOutStore | None = None,
        leases: ShardLeases | None = None,
    ) -> None:
        self.store = store
        # The shards this process reads, promotes and re-claims (all without leases).
        self.leases = leases or ShardLeases.every_shard(store.shards)
        self.readers = LeasedReaders(self.leases, self._read_loop, together=not queue.cluster)
        # Where a vendor's "this number unsubscribed" refusal lands (None: nowhere).
        self.optouts = optouts
        self.queue = queue
        self.provider = provider
        self.config = config
        # Opens sealed texts (verification codes) for the provider, and only for it.
        self.texts = texts
        self.rng = rng or random.Random()
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._slots = asyncio.Semaphore(config.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.receipts = ReceiptQueue(store, provider.name, rng=self.rng)
        # Queue entries this process is sending now: never re-claimed by itself.
        self._held: set[str] = set()
        if isinstance(provider, ReceiptSource):
            provider.set_receipt_sink(self.receipts.receive)
        # Providers that answer status queries get their lost receipts pulled.
        self.reconciler = (
            Reconciler(
                store,
                provider,
                provider.name,
                interval=config.reconcile_after,
                tick=config.sweep_interval,
            )
            if isinstance(provider, StatusSource)
            else None
        )

    async def start(self) -> None:
        await self.queue.ensure_groups()
        await self.leases.renew()
        self._tasks.append(asyncio.create_task(self.leases.run(self._stopping), name="leases"))
        self._tasks.append(asyncio.create_task(self.readers.run(self._stopping), name="readers"))
        self._tasks.append(asyncio.create_task(self._reclaim_loop(), name="reclaim"))
        self._tasks.append(asyncio.create_task(self._promote_loop(), name="promote"))
        self._tasks.append(asyncio.create_task(self.receipts.run(self._stopping), name="receipts"))
        if self.reconciler is not None:
            self._tasks.append(
                asyncio.create_task(self.reconciler.run(self._stopping), name="reconcile")
            )
        log.info("dispatcher started", extra={"consumer": self.consumer})

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading, let in-flight sends settle (up to ``grace``), then cancel."""
        self._stopping.set()
        # Bounded: each loop also ends on the stop flag within about a second.
        await cancel_and_wait(self._tasks, timeout=max(grace, 2.0))
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace)
            await cancel_and_wait(self._inflight, timeout=2.0)
        await self.leases.release()
        # What was cancelled stays pending in the stream; another worker (or
        # this one after a restart) re-claims it.

    # --- reading -------------------------------------------------------

    async def _read_loop(self, group: ShardGroup) -> None:
        """Read the queues of ``group()`` in one blocking call at a time, until
        the group is empty (its leases went elsewhere)."""
        while not self._stopping.is_set() and (shards := group()):
            try:
                # Wait for a free slot, then read as many as are free.
                await self._slots.acquire()
                self._slots.release()
                room = max(1, min(256, self.config.concurrency - len(self._inflight)))
                # Per shard: every shard may answer; at least a few each.
                count = max(16, -(-room // len(shards)))
                for shard, entries in await self.queue.read_many(shards, self.consumer, count):
                    await self._take(shard, entries, reclaimed=False)
            except asyncio.CancelledError:
                raise
            except Unavailable:
                # Logged, with a count, where the store mapped it.
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("queue read failed", extra={"shards": len(shards)})
                await asyncio.sleep(1.0)

    async def _reclaim_loop(self) -> None:
        interval = max(self.config.visibility_timeout / 2, 0.05)
        min_idle = int(self.config.visibility_timeout * 1000)
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            for shard in sorted(self.leases.owned):
                try:
                    start = "0-0"
                    while True:
                        start, entries = await self.queue.reclaim(
                            shard, self.consumer, min_idle_ms=min_idle, start=start
                        )
                        entries = [e for e in entries if e[0] not in self._held]
                        if entries:
                            log.warning(
                                "re-claimed entries of a dead worker",
                                extra={"shard": shard, "count": len(entries)},
                            )
                            await self._take(shard, entries, reclaimed=True)
                        if start == "0-0":
                            break
                    await self.queue.forget_consumers(
                        shard, keep=self.consumer, idle_ms=DEAD_CONSUMER_MS
                    )
                except asyncio.CancelledError:
                    raise
                except Unavailable:
                    break  # the next round tries again
                except Exception:
                    log.exception("re-claim failed", extra={"shard": shard})

    async def _promote_loop(self) -> None:
        while not self._stopping.is_set():
            for shard in sorted(self.leases.owned):
                try:
                    while True:
                        promoted, expired = await self.store.promote(shard, PROMOTE_BATCH)
                        # A full batch of either: more may be due right now.
                        if promoted < PROMOTE_BATCH and expired < PROMOTE_BATCH:
                            break
                except asyncio.CancelledError:
                    raise
                except Unavailable:
                    break  # the next tick tries again
                except Exception:
                    log.exception("promote failed", extra={"shard": shard})
            await asyncio.sleep(self.config.sweep_interval)

    # --- sending -------------------------------------------------------

    async def _take(self, shard: int, entries: Sequence[QueueEntry], *, reclaimed: bool) -> None:
        claimed = await self.store.claim(
            shard, entries, reclaimed=reclaimed, max_attempts=self.config.max_attempts
        )
        self._held.update(c.entry for c in claimed)
        # Messages of one app sharing sender, sign and template go to the provider
        # together (each with its own text and params), up to its call limit.
        groups: dict[tuple[str, ...], list[Claimed]] = defaultdict(list)
        for c in claimed:
            groups[(c.app, c.sender, c.sign, c.template_id, c.vendor_ids_json)].append(c)
        size = max(1, self.provider.capabilities.max_recipients)
        for group in groups.values():
            for i in range(0, len(group), size):
                chunk = group[i : i + size]
                await self._slots.acquire()
                task = asyncio.create_task(self._send(shard, chunk))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _send(self, shard: int, chunk: list[Claimed]) -> None:
        try:
            batch = self._batch(chunk)
        except UnreadableText as exc:
            # Sealed under another server secret: a replica set up differently
            # took it. Retried, so a replica with the right secret may send it.
            _unreadable.occurred()
            unread = RecipientResult(OutcomeClass.RETRYABLE, "", "UNREADABLE_TEXT", str(exc))
            results = [unread] * len(chunk)
        else:
            results = await self._call_provider(batch)
        outcomes = [self._outcome(c, r) for c, r in zip(chunk, results, strict=True)]
        for o in outcomes:
            SEND_OUTCOMES.labels(self.provider.name, o.outcome).inc()
        try:
            # First: once a message shows it failed as unsubscribed, the list has the number.
            await self._opt_out(c for c, r in zip(chunk, results, strict=True) if r.opted_out)
            await self._settle(shard, outcomes)
        finally:
            self._held.difference_update(c.entry for c in chunk)

    def _batch(self, chunk: list[Claimed]) -> OutboundBatch:
        """What the provider needs of a chunk that shares app, sender, sign and template."""
        first = chunk[0]
        vendor_ids = json.loads(first.vendor_ids_json) if first.vendor_ids_json else {}
        return OutboundBatch(
            first.app,
            tuple(self._recipient(c) for c in chunk),
            sign_name=first.sign,
            sender=first.sender,
            template_ids=vendor_ids,
        )

    def _recipient(self, c: Claimed) -> Recipient:
        text, params = c.rendered, c.params_json
        if c.sensitive:
            text = self.texts.open(c.app, c.id, text)
            params = self.texts.open(c.app, c.id, params) if params else ""
        ordered = tuple(json.loads(params).items()) if params else ()
        return Recipient(c.id, c.phone, text, ordered)

    async def _call_provider(self, batch: OutboundBatch) -> list[RecipientResult]:
        """The provider's result per recipient; a call that failed or ran out of
        time is an unknown outcome for each (it may have reached the vendor)."""
        name = self.provider.name
        count = len(batch.recipients)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.provider_timeout):
                results = await self.provider.send_batch(batch)
            if len(results) != count:
                raise RuntimeError("provider returned a wrong number of results")
            PROVIDER_CALLS.labels(name, "ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            PROVIDER_CALLS.labels(name, "error").inc()
            log.warning("provider call failed", extra={"error": repr(exc), "count": count})
            code = "PROVIDER_TIMEOUT" if isinstance(exc, TimeoutError) else "PROVIDER_ERROR"
            results = [RecipientResult(OutcomeClass.UNKNOWN, "", code, repr(exc)[:200])] * count
        PROVIDER_SECONDS.labels(name).observe(time.perf_counter() - started)
        return results

    async def _opt_out(self, refused: Iterable[Claimed]) -> None:
        """Add the numbers a vendor refused as unsubscribed to their app's
        opt-out list. Best effort: the message has failed either way."""
        if self.optouts is None:
            return
        for c in refused:
            try:
                await self.optouts.add(c.app, c.phone)
            except Unavailable as exc:
                _optout_failed.occurred(type(exc).__name__)

    async def _settle(self, shard: int, outcomes: list[SendOutcome]) -> None:
        """Store outcomes, retrying a Redis blip for up to half the visibility
        timeout: giving up means the entries are re-claimed and sent again."""
        deadline = time.monotonic() + self.config.visibility_timeout / 2
        attempt = 0
        while True:
            try:
                await self.store.settle(
                    shard,
                    outcomes,
                    reconcile_after_ms=(
                        self.reconciler.interval_ms if self.reconciler is not None else 0
                    ),
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = retry_delay(
                    attempt, base=SETTLE_RETRY_BASE, cap=SETTLE_RETRY_MAX, rng=self.rng
                )
                if time.monotonic() + delay > deadline:
                    # Unacknowledged: re-claimed after the visibility timeout.
                    # An outage gives up many chunks at once: one line per
                    # interval with a count, and a traceback only for a bug.
                    bug = None if isinstance(exc, Unavailable) else exc
                    _settle_failed.occurred(type(exc).__name__, exc=bug, messages=len(outcomes))
                    return
                await asyncio.sleep(delay)

    def _outcome(self, c: Claimed, r: RecipientResult) -> SendOutcome:
        name = self.provider.name
        if r.outcome is OutcomeClass.ACCEPTED:
            return SendOutcome(c, Outcome.SENT, name, r.vendor_id)
        if r.outcome is OutcomeClass.UNKNOWN:
            # Sending again could deliver it twice: it waits for a receipt instead.
            return SendOutcome(c, Outcome.UNKNOWN, name, "", r.code, r.reason)
        if r.outcome is OutcomeClass.PERMANENT:
            return SendOutcome(c, Outcome.FAIL, name, "", r.code, r.reason)
        now_ms = self.store.now_ms()
        # A scheduled message's life starts at its send time, not at acceptance.
        age = (now_ms - max(c.created_ms, c.send_at_ms)) / 1000
        if c.attempts < self.config.max_attempts and age < self.config.max_message_age:
            delay = retry_delay(
                c.attempts, base=self.config.retry_base, cap=self.config.retry_max, rng=self.rng
            )
            # A throttle that names its window is waited out.
            at_ms = now_ms + int(max(delay, r.retry_after) * 1000)
            return SendOutcome(c, Outcome.RETRY, name, "", r.code, r.reason, at_ms)
        reason = f"{r.reason} (gave up after {c.attempts} attempts)"
        return SendOutcome(c, Outcome.FAIL, name, "", r.code, reason)
