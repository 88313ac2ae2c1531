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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from smsgate_server.aio import cancel_and_wait
from smsgate_server.config import Settings
from smsgate_server.dispatch.backoff import retry_delay
from smsgate_server.dispatch.gate import OpenGate, ProviderGate
from smsgate_server.dispatch.leases import LeasedReaders, ShardGroup, ShardLeases
from smsgate_server.dispatch.receipts import ReceiptQueue
from smsgate_server.dispatch.reconcile import Reconciler
from smsgate_server.dispatch.routing import RouteChoice, Router
from smsgate_server.dispatch.slots import Lent, Slots
from smsgate_server.domain.errors import Reason, Unavailable
from smsgate_server.domain.policy import OPTED_OUT
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
from smsgate_server.providers.providers_file import Route
from smsgate_server.providers.refusals import about_recipient
from smsgate_server.store.messages import Claimed, MessageStore, Outcome, SendOutcome
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.queue import DispatchQueue, QueueEntry

__all__ = ["DispatchConfig", "Dispatcher"]

log = logging.getLogger("smsgate.dispatch")

# Consumers (one per process start) idle this long with nothing pending are dropped.
DEAD_CONSUMER_MS = 3_600_000
# Due messages queued (and overdue receipts expired) per script call.
PROMOTE_BATCH = 500
# The most queue entries one read claims (what its slots carry, at most).
READ_MAX = 1000
# The most entries one read of many shards (one Redis) asks for, a part of it
# of each shard: a vendor call carries messages of one shard, so a larger part
# makes larger calls (about 60 messages per call for 5,000 over 64 shards,
# against 15 with a part of READ_MAX); what the slots cannot carry waits in
# the reader, unclaimed and kept fresh.
READ_AHEAD = 4000
# A pace wait up to this long (seconds) is slept through, holding the slot; a
# longer one puts the chunk back in the due set: a backlog waits in Redis, not
# in this process.
PACE_SLEEP_MAX = 0.5
# What ends a message no provider is left for (smsgate's own codes, beside the
# vendors' in Message.error.code).
NO_ROUTE = "NO_ROUTE"
ALL_PROVIDERS_REFUSED = "ALL_PROVIDERS_REFUSED"
PROVIDERS_UNAVAILABLE = "PROVIDERS_UNAVAILABLE"
# A message whose vendor call was cut off: its worker stopped or died during
# it, or could not store the answer (then its re-claim finds the provider).
SEND_CUT_OFF = "SEND_CUT_OFF"
# A marketing message whose number's opt-out could not be read before its call.
OPT_OUT_UNCHECKED = "OPT_OUT_UNCHECKED"
# A blip while storing outcomes is retried with this backoff (seconds).
SETTLE_RETRY_BASE = 0.05
SETTLE_RETRY_MAX = 1.0
# Redis away is a warning (it is expected, and recovered from); a bug, logged
# with its exception, is an error (logs.RepeatedLog).
_settle_failed = RepeatedLog(log, "settle gave up; the entries will be re-claimed", every=5.0)
_hand_over_failed = RepeatedLog(
    log, "cannot record the provider of a chunk; not sent for now", every=5.0
)
_keep_failed = RepeatedLog(
    log, "cannot keep held entries from being re-claimed", every=5.0, level=logging.WARNING
)
_promote_check_failed = RepeatedLog(log, "cannot read which shards have messages due", every=5.0)
_optout_failed = RepeatedLog(
    log, "cannot add a number the vendor reports opted out", every=5.0, level=logging.WARNING
)
_optout_check_failed = RepeatedLog(
    log, "cannot read opt-outs before sending marketing; retried", every=5.0, level=logging.WARNING
)
_gate_failed = RepeatedLog(
    log, "provider gate unanswered; calls go ahead unguarded", every=5.0, level=logging.WARNING
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
        providers: Mapping[str, Provider] | None = None,
        routes: Sequence[Route] = (),
        gate: ProviderGate | None = None,
    ) -> None:
        self.store = store
        # The shards this process reads, promotes and re-claims (all without leases).
        self.leases = leases or ShardLeases.every_shard(store.shards)
        self.readers = LeasedReaders(self.leases, self._read_loop, together=not queue.cluster)
        # Where a vendor's "this number unsubscribed" refusal lands (None: nowhere).
        self.optouts = optouts
        self.queue = queue
        # The default provider (SMSGATE_PROVIDER), and by name every provider
        # the routes may choose.
        self.provider = provider
        self.providers: dict[str, Provider] = {provider.name: provider, **(providers or {})}
        # Breakers and pacing of the provider accounts (OpenGate: none).
        self.gate: ProviderGate = gate or OpenGate()
        # Per provider, when this process's last chunk turned away by its pace
        # is due back, plus that chunk's wait (ms): where the next one queues.
        self._pace_horizon: dict[str, int] = {}
        self.config = config
        # Opens sealed texts (verification codes) for the provider, and only for it.
        self.texts = texts
        self.rng = rng or random.Random()
        self.router = Router(
            routes,
            {name: p.capabilities for name, p in self.providers.items()},
            default=provider.name,
        )
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._slots = Slots(config.concurrency)
        # Entries read per slot taken: what one call of the default provider carries.
        self._per_call = max(1, provider.capabilities.max_recipients)
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # Receipts a provider reports itself (the simulator), one queue per
        # provider: a receipt names the provider's id, unique per provider only.
        self.receipt_queues = {
            name: ReceiptQueue(store, name, rng=self.rng)
            for name, p in self.providers.items()
            if isinstance(p, ReceiptSource) or p is provider
        }
        self.receipts = self.receipt_queues[provider.name]
        for name, p in self.providers.items():
            if isinstance(p, ReceiptSource):
                p.set_receipt_sink(self.receipt_queues[name].receive)
        # Queue entries this process is sending now: never re-claimed by itself.
        self._held: set[str] = set()
        # Entries read or re-claimed and not settled yet, by (shard, entry id),
        # with when their idle time was last reset (_keep_loop); those not
        # claimed yet (so not in _held).
        self._in_hand: dict[tuple[int, str], float] = {}
        self._unclaimed: set[tuple[int, str]] = set()
        # Providers that answer status queries get their lost receipts pulled.
        sources = {n: p for n, p in self.providers.items() if isinstance(p, StatusSource)}
        self.reconciler = (
            Reconciler(
                store,
                sources,
                interval=config.reconcile_after,
                tick=config.sweep_interval,
                shards=lambda: sorted(self.leases.owned),
            )
            if sources
            else None
        )

    async def start(self) -> None:
        await self.queue.ensure_groups()
        await self.leases.renew()
        self._tasks.append(asyncio.create_task(self.leases.run(self._stopping), name="leases"))
        self._tasks.append(asyncio.create_task(self.readers.run(self._stopping), name="readers"))
        self._tasks.append(asyncio.create_task(self._reclaim_loop(), name="reclaim"))
        self._tasks.append(asyncio.create_task(self._keep_loop(), name="keep"))
        self._tasks.append(asyncio.create_task(self._promote_loop(), name="promote"))
        for name, receipts in self.receipt_queues.items():
            self._tasks.append(
                asyncio.create_task(receipts.run(self._stopping), name=f"receipts-{name}")
            )
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
        # A cancelled vendor call was settled as an unknown outcome (shielded);
        # what was cancelled before its call stays pending in the stream, and
        # another worker (or this one after a restart) re-claims it.

    # --- reading -------------------------------------------------------

    async def _read_loop(self, group: ShardGroup) -> None:
        """Read the queues of ``group()`` in one blocking call at a time, until
        the group is empty (its leases went elsewhere).

        Slots first, then claim only what they carry (a call's worth of
        entries per slot), so nothing claimed waits long for a call; every
        reader draws on the same slots. A reader whose last read found
        nothing takes one slot (others may need them while it waits on an
        empty queue), one that found some its part of those free. A read of
        many shards asks each for a part of ``READ_AHEAD``; what it got beyond
        the slots waits here unclaimed, kept fresh, and is claimed first as
        slots come free."""
        unclaimed: list[tuple[int, QueueEntry]] = []
        found = True
        try:
            while not self._stopping.is_set() and (unclaimed or group()):
                lent: Lent | None = None
                shards: tuple[int, ...] = ()
                try:
                    part = -(-self._slots.free // max(1, self.readers.reading))
                    part = part if found or unclaimed else 1
                    lent = await self._slots.lend(max(1, min(part, READ_MAX // self._per_call)))
                    budget = min(READ_MAX, lent.count * self._per_call)
                    if not unclaimed:
                        if not (shards := group()):
                            continue
                        unclaimed = await self._read(shards, budget)
                        found = bool(unclaimed)
                    taken, unclaimed = unclaimed[:budget], unclaimed[budget:]
                    by_shard: dict[int, list[QueueEntry]] = defaultdict(list)
                    for shard, entry in taken:
                        by_shard[shard].append(entry)
                    try:
                        for shard, entries in by_shard.items():
                            await self._take(shard, entries, reclaimed=False, slots=lent)
                    finally:
                        # Claimed ones are kept fresh as held; the others are re-claimed.
                        self._unclaimed.difference_update((s, e) for s, (e, _) in taken)
                except asyncio.CancelledError:
                    raise
                except Unavailable:
                    # Logged, with a count, where the store mapped it.
                    await asyncio.sleep(1.0)
                except Exception:
                    log.exception("queue read failed", extra={"shards": len(shards)})
                    await asyncio.sleep(1.0)
                finally:
                    if lent is not None:
                        lent.give_back()
        finally:
            self._unclaimed.difference_update((s, e) for s, (e, _) in unclaimed)

    async def _read(self, shards: tuple[int, ...], budget: int) -> list[tuple[int, QueueEntry]]:
        """New entries of ``shards``: up to ``budget`` of one shard, a part of
        ``READ_AHEAD`` of each of many (at least one each), kept fresh from now."""
        count = max(1, min(budget, READ_AHEAD // len(shards)))
        read = [
            (shard, entry)
            for shard, entries in await self.queue.read_many(shards, self.consumer, count)
            for entry in entries
        ]
        self._hold((shard, entry) for shard, (entry, _) in read)
        return read

    def _hold(self, keys: Iterable[tuple[int, str]]) -> None:
        """Keep these entries (shard, id), not claimed yet, from being re-claimed."""
        now = time.monotonic()
        for key in keys:
            self._in_hand[key] = now
            self._unclaimed.add(key)

    async def _take_reclaimed(self, shard: int, entries: Sequence[QueueEntry]) -> None:
        """``_take`` of re-claimed entries, kept from being re-claimed again
        until they are settled (``_keep_loop``)."""
        keys = [(shard, entry) for entry, _ in entries]
        self._hold(keys)
        try:
            await self._take(shard, entries, reclaimed=True)
        finally:
            self._unclaimed.difference_update(keys)

    async def _keep_loop(self) -> None:
        """Reset the idle time of the entries this process holds (read, waiting
        for a slot, being sent or settled) every quarter of the visibility
        timeout, so none is re-claimed from a live worker, however long it
        waits; a dead worker's run out and are re-claimed."""
        interval = max(self.config.visibility_timeout / 4, 0.05)
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            now = time.monotonic()
            due: dict[int, list[str]] = defaultdict(list)
            for key, since in list(self._in_hand.items()):
                shard, entry = key
                if key not in self._unclaimed and entry not in self._held:
                    del self._in_hand[key]
                elif now - since >= interval:
                    due[shard].append(entry)
                    self._in_hand[key] = now
            for shard, entry_ids in due.items():
                try:
                    await self.queue.keep(shard, self.consumer, entry_ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    bug = None if isinstance(exc, Unavailable) else exc
                    _keep_failed.occurred(type(exc).__name__, exc=bug)

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
                            await self._take_reclaimed(shard, entries)
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
            try:
                due = await self.queue.due_shards(sorted(self.leases.owned), self.store.now_ms())
            except Exception as exc:
                # Redis away is expected now and then; anything else is a bug.
                _promote_check_failed.occurred(
                    type(exc).__name__, exc=None if isinstance(exc, Unavailable) else exc
                )
                due = []  # the next tick tries again
            for shard in due:
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

    async def _take(
        self,
        shard: int,
        entries: Sequence[QueueEntry],
        *,
        reclaimed: bool,
        slots: Lent | None = None,
    ) -> None:
        hand_to = "" if reclaimed else await self._hand_at_claim(len(entries), slots)
        claimed = await self.store.claim(
            shard,
            entries,
            reclaimed=reclaimed,
            max_attempts=self.config.max_attempts,
            hand_to=hand_to,
        )
        self._held.update(c.entry for c in claimed)
        if any(c.marketing for c in claimed):
            claimed = await self._drop_opted_out(shard, claimed)
        # Handed to a provider by a worker that stored no outcome: that provider
        # may have it, so it is settled as an unknown outcome, never routed again.
        for name in {c.in_flight for c in claimed if c.in_flight}:
            cut_off = [self._cut_off(name, c) for c in claimed if c.in_flight == name]
            task = asyncio.create_task(self._settle_unsent(shard, cut_off))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        routed = [(c, self._route(c)) for c in claimed if not c.in_flight]
        usable = await self._usable({n for _, choice in routed for n in choice.candidates})
        # Messages of one app sharing sender, sign and template go to their
        # chosen provider together (each with its own text and params), up to
        # its call limit; those no provider can take now are settled at once.
        groups: dict[tuple[str, ...], list[tuple[Claimed, RouteChoice]]] = defaultdict(list)
        unsent: list[SendOutcome] = []
        for c, choice in routed:
            chosen = next((n for n in choice.candidates if n in usable), None)
            if chosen is None:
                unsent.append(self._unroutable(c, choice))
            else:
                group = (chosen, c.app, c.sender, c.sign, c.template_id, c.vendor_ids_json)
                groups[group].append((c, choice))
        if unsent:
            task = asyncio.create_task(self._settle_unsent(shard, unsent))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        for (name, *_), members in groups.items():
            size = max(1, self.providers[name].capabilities.max_recipients)
            for i in range(0, len(members), size):
                chunk = members[i : i + size]
                await (slots or self._slots).acquire()
                task = asyncio.create_task(self._send(shard, name, chunk, handed=name == hand_to))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    async def _drop_opted_out(self, shard: int, claimed: list[Claimed]) -> list[Claimed]:
        """``claimed`` less its marketing messages whose number opted out since
        they were accepted (while held for quiet hours, scheduled or retried):
        those end FAILED, never sent. One round trip; a lookup that fails
        checks them again later (``_unchecked``), as the list is what an opt-out
        must be able to trust."""
        marketing = [c for c in claimed if c.marketing and not c.in_flight]
        if self.optouts is None or not marketing:
            return claimed
        try:
            listed = await self.optouts.opted_out_of((c.app, c.phone) for c in marketing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _optout_check_failed.occurred(
                type(exc).__name__, exc=None if isinstance(exc, Unavailable) else exc
            )
            ended = [self._unchecked(c) for c in marketing]
        else:
            ended = [
                SendOutcome(c, Outcome.FAIL, "", "", Reason.RECIPIENT_OPTED_OUT.value, OPTED_OUT)
                for c in marketing
                if (c.app, c.phone) in listed
            ]
        if not ended:
            return claimed
        task = asyncio.create_task(self._settle_unsent(shard, ended))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        gone = {o.claimed.entry for o in ended}
        return [c for c in claimed if c.entry not in gone]

    async def _hand_at_claim(self, entries: int, slots: Lent | None) -> str:
        """The provider the claim itself may record as having the messages
        (saving ``hand_over``'s round trip per call), or ''. Only when nothing
        can stand between the claim and the call, so a worker killed in
        between leaves no more messages "in flight" than with ``hand_over``:
        no routes (each message goes to the default provider), its breaker
        lets calls through, it has no pace to wait for, and the read's slots
        carry every chunk its entries can make (none waits for a slot)."""
        name = self.provider.name
        if self.router.routed or slots is None or entries > slots.left:
            return ""
        if not self.gate.unpaced(name) or name not in await self._usable({name}):
            return ""
        return name

    def _route(self, c: Claimed) -> RouteChoice:
        if not self.router.routed:
            return self.router.route(c.app, c.phone, key=c.id, template=False, vendor_ids={})
        vendor_ids = json.loads(c.vendor_ids_json) if c.vendor_ids_json else {}
        return self.router.route(
            c.app,
            c.phone,
            key=c.id,
            template=bool(c.template_id),
            vendor_ids=vendor_ids,
            refused=c.refused_by().keys(),
        )

    async def _usable(self, names: set[str]) -> set[str]:
        """Those of ``names`` whose breaker lets calls through; all of them when
        the gate cannot answer (a breaker is a guard, not a reason to stall)."""
        if not names:
            return names
        try:
            return set(await self.gate.usable(sorted(names)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _gate_failed.occurred(type(exc).__name__)
            return names

    def _unroutable(self, c: Claimed, choice: RouteChoice) -> SendOutcome:
        """The outcome of a message no provider can take now: no route or every
        provider refused it (it fails), or every breaker open (it waits)."""
        route = choice.label
        refused = c.refused_by()
        if not choice.candidates and refused:
            reason = "every provider of its route refused it: " + ", ".join(
                f"{name} {code}" for name, code in refused.items()
            )
            return SendOutcome(c, Outcome.FAIL, "", "", ALL_PROVIDERS_REFUSED, reason, route=route)
        if not choice.candidates:
            return SendOutcome(c, Outcome.FAIL, "", "", NO_ROUTE, choice.why_none(), route=route)
        # Every breaker of its route is open: as if each provider had failed
        # the call, it is retried with backoff and counts an attempt, so a long
        # outage ends it (as a vendor failing every call would) instead of
        # routing it again every few seconds.
        unavailable = RecipientResult(
            OutcomeClass.RETRYABLE,
            code=PROVIDERS_UNAVAILABLE,
            reason=f"breaker open for {', '.join(choice.candidates)}",
        )
        return self._retry("", c, unavailable, route)

    def _unchecked(self, c: Claimed) -> SendOutcome:
        """The outcome of a marketing message whose opt-out could not be read:
        never tried, it waits with its attempt given back (like a call the pace
        deferred), so an outage of the opt-outs' Redis alone cannot use up its
        attempts; checked again after a wait as long as its age at most, until
        it is too old to send (then it fails, as a retry would)."""
        reason = "cannot read the opt-outs"
        age = self._age(c)
        if age >= self.config.max_message_age:
            reason += f" (gave up after {int(age)} s)"
            return SendOutcome(c, Outcome.FAIL, "", "", OPT_OUT_UNCHECKED, reason)
        # Full jitter over [0, its age], within the retry bounds: a long outage
        # re-checks each message a few times, not every second.
        longest = min(self.config.retry_max, max(self.config.retry_base, age))
        delay = retry_delay(1, base=longest, cap=longest, rng=self.rng)
        at_ms = self.store.now_ms() + int(delay * 1000)
        return SendOutcome(c, Outcome.DEFER, "", "", OPT_OUT_UNCHECKED, reason, at_ms)

    def _cut_off(self, name: str, c: Claimed, route: str = "") -> SendOutcome:
        """The outcome of a message whose call to ``name`` may have gone out but
        whose answer was never stored: unknown."""
        reason = f"no answer stored for its call to {name} (its worker stopped or lost Redis)"
        return SendOutcome(c, Outcome.UNKNOWN, name, "", SEND_CUT_OFF, reason, route=route)

    def _reconcile_after_ms(self, name: str) -> int:
        """When to ask ``name`` about a message it took without a receipt (0: never)."""
        if self.reconciler is not None and name in self.reconciler.sources:
            return self.reconciler.interval_ms
        return 0

    async def _settle_unsent(self, shard: int, outcomes: list[SendOutcome]) -> None:
        """Settle outcomes found without a call (by no provider, or one whose
        call was cut off: all with ``outcomes[0].provider``)."""
        try:
            name = outcomes[0].provider
            for o in outcomes:
                SEND_OUTCOMES.labels(name or "none", o.outcome).inc()
            await self._settle(shard, outcomes, reconcile_after_ms=self._reconcile_after_ms(name))
        finally:
            self._held.difference_update(o.claimed.entry for o in outcomes)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _send(
        self,
        shard: int,
        name: str,
        chunk: list[tuple[Claimed, RouteChoice]],
        *,
        handed: bool = False,
    ) -> None:
        """Call ``name`` for the chunk and settle the outcomes; ``handed``: the
        claim recorded ``name`` on its messages already (``_hand_at_claim``)."""
        claimed = [c for c, _ in chunk]
        entries = [c.entry for c in claimed]
        provider = self.providers[name]
        try:
            try:
                batch = self._batch(claimed)
            except UnreadableText as exc:
                # Sealed under another server secret: a replica set up differently
                # took it. Retried, so a replica with the right secret may send it.
                _unreadable.occurred()
                unread = RecipientResult(OutcomeClass.RETRYABLE, "", "UNREADABLE_TEXT", str(exc))
                results = [unread] * len(chunk)
            else:
                wait = await self._pace(name, len(chunk))
                if wait > 0:
                    at_ms = self._paced_until(name, wait)
                    SEND_OUTCOMES.labels(name, Outcome.DEFER).inc(len(claimed))
                    await self._settle(
                        shard,
                        [SendOutcome(c, Outcome.DEFER, name, retry_at_ms=at_ms) for c in claimed],
                        reconcile_after_ms=0,
                    )
                    return
                mine = chunk if handed else await self._hand_over(shard, name, chunk)
                if len(mine) < len(chunk):
                    if not mine:
                        return
                    chunk, claimed = mine, [c for c, _ in mine]
                    batch = self._batch(claimed)
                try:
                    results = await self._call_provider(provider, batch)
                except asyncio.CancelledError:
                    await self._settle_cut_off(shard, name, chunk)
                    raise
                await self._record(name, results)
            outcomes = [
                self._outcome(name, c, choice, r)
                for (c, choice), r in zip(chunk, results, strict=True)
            ]
            for o in outcomes:
                SEND_OUTCOMES.labels(name, o.outcome).inc()
            # First: once a message shows it failed as unsubscribed, the list has the number.
            await self._opt_out(c for c, r in zip(claimed, results, strict=True) if r.opted_out)
            await self._settle(shard, outcomes, reconcile_after_ms=self._reconcile_after_ms(name))
        finally:
            self._held.difference_update(entries)

    async def _hand_over(
        self, shard: int, name: str, chunk: list[tuple[Claimed, RouteChoice]]
    ) -> list[tuple[Claimed, RouteChoice]]:
        """Record ``name`` on the chunk's messages before its call (one round
        trip per chunk): those still this worker's to send. Unrecorded, none
        is sent: their entries are re-claimed and routed again later."""
        try:
            mine = await self.store.hand_over(shard, name, [c for c, _ in chunk])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _hand_over_failed.occurred(
                type(exc).__name__, exc=None if isinstance(exc, Unavailable) else exc
            )
            return []
        return [member for member, ok in zip(chunk, mine, strict=True) if ok]

    async def _settle_cut_off(
        self, shard: int, name: str, chunk: list[tuple[Claimed, RouteChoice]]
    ) -> None:
        """stop() cancelled a call that may have reached ``name``: store it as
        an unknown outcome now, shielded from the cancellation (if this fails,
        the re-claim finds the in-flight provider and does the same)."""
        outcomes = [
            self._cut_off(name, c, f"{choice.label}: {name}" if choice.label else "")
            for c, choice in chunk
        ]
        for o in outcomes:
            SEND_OUTCOMES.labels(name, o.outcome).inc()
        try:
            await asyncio.shield(
                self.store.settle(
                    shard, outcomes, reconcile_after_ms=self._reconcile_after_ms(name)
                )
            )
        except Exception as exc:
            bug = None if isinstance(exc, Unavailable) else exc
            _settle_failed.occurred(type(exc).__name__, exc=bug, messages=len(outcomes))

    async def _pace(self, name: str, messages: int) -> float:
        """0.0 once the pace of ``name`` has room for one call of ``messages``
        (short waits slept through), else the seconds to wait in the due set."""
        slept = 0.0
        while True:
            try:
                wait = await self.gate.pace(name, messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _gate_failed.occurred(type(exc).__name__)
                return 0.0
            if wait <= 0:
                return 0.0
            if wait > PACE_SLEEP_MAX or slept + wait > 2 * PACE_SLEEP_MAX:
                return wait
            await asyncio.sleep(wait)
            slept += wait

    def _paced_until(self, name: str, wait: float) -> int:
        """When a chunk the pace of ``name`` had no room for comes back (ms).

        The gate says when this chunk's tokens would be there, not counting the
        other chunks it turned away meanwhile; spacing this process's deferred
        chunks by their waits brings each back about when its turn comes,
        rather than all at once to be turned away again."""
        now_ms = self.store.now_ms()
        wait_ms = int(wait * 1000)
        at_ms = max(now_ms + wait_ms, self._pace_horizon.get(name, 0))
        self._pace_horizon[name] = at_ms + wait_ms
        return at_ms

    async def _record(self, name: str, results: list[RecipientResult]) -> None:
        try:
            await self.gate.record(name, results)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _gate_failed.occurred(type(exc).__name__)

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

    async def _call_provider(
        self, provider: Provider, batch: OutboundBatch
    ) -> list[RecipientResult]:
        """The provider's result per recipient; a call that failed or ran out of
        time is an unknown outcome for each (it may have reached the vendor)."""
        name = provider.name
        count = len(batch.recipients)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.provider_timeout):
                results = await provider.send_batch(batch)
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

    async def _settle(
        self, shard: int, outcomes: list[SendOutcome], *, reconcile_after_ms: int
    ) -> None:
        """Store outcomes, retrying a Redis blip for up to half the visibility
        timeout: giving up means the entries are re-claimed and sent again."""
        deadline = time.monotonic() + self.config.visibility_timeout / 2
        attempt = 0
        while True:
            try:
                await self.store.settle(shard, outcomes, reconcile_after_ms=reconcile_after_ms)
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

    def _age(self, c: Claimed) -> float:
        # A scheduled message's life starts at its send time, not at acceptance.
        return (self.store.now_ms() - max(c.created_ms, c.send_at_ms)) / 1000

    def _outcome(
        self, name: str, c: Claimed, choice: RouteChoice, r: RecipientResult
    ) -> SendOutcome:
        route = f"{choice.label}: {', '.join(choice.candidates)}" if choice.label else ""
        if r.outcome is OutcomeClass.ACCEPTED:
            return SendOutcome(c, Outcome.SENT, name, r.vendor_id, route=route)
        if r.outcome is OutcomeClass.UNKNOWN:
            # Sending again (here or at another vendor) could deliver it twice:
            # it waits for a receipt or the vendor's answer to a status query.
            return SendOutcome(c, Outcome.UNKNOWN, name, "", r.code, r.reason, route=route)
        # A proven refusal moves it to the next provider of its route, unless
        # the refusal is about the recipient: another vendor would repeat it.
        others = [n for n in choice.candidates if n != name]
        refusal = r.outcome in (OutcomeClass.PERMANENT, OutcomeClass.THROTTLED)
        if refusal and others and not about_recipient(r):
            return SendOutcome(c, Outcome.FAILOVER, name, "", r.code, r.reason, route=route)
        if r.outcome is OutcomeClass.PERMANENT:
            refused = c.refused_by()
            if refused and not about_recipient(r):
                reason = "every provider of its route refused it: " + ", ".join(
                    f"{n} {code}" for n, code in [*refused.items(), (name, r.code)]
                )
                reason += f" ({r.reason})" if r.reason else ""
                return SendOutcome(
                    c, Outcome.FAIL, name, "", ALL_PROVIDERS_REFUSED, reason, route=route
                )
            return SendOutcome(c, Outcome.FAIL, name, "", r.code, r.reason, route=route)
        return self._retry(name, c, r, route)

    def _retry(self, name: str, c: Claimed, r: RecipientResult, route: str) -> SendOutcome:
        """Retry with backoff while attempts and age allow, else fail."""
        if c.attempts < self.config.max_attempts and self._age(c) < self.config.max_message_age:
            delay = retry_delay(
                c.attempts, base=self.config.retry_base, cap=self.config.retry_max, rng=self.rng
            )
            # A throttle that names its window is waited out.
            at_ms = self.store.now_ms() + int(max(delay, r.retry_after) * 1000)
            return SendOutcome(c, Outcome.RETRY, name, "", r.code, r.reason, at_ms, route=route)
        reason = f"{r.reason} (gave up after {c.attempts} attempts)"
        return SendOutcome(c, Outcome.FAIL, name, "", r.code, reason, route=route)
