"""MessageStore: messages, their history, queues and events in Redis."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from smsgate_server.domain.errors import StoredUnconfirmed
from smsgate_server.domain.ids import shard_for_key
from smsgate_server.domain.message import HistoryEntry, NewMessage, StoredMessage
from smsgate_server.domain.status import Status
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import GROUP, MessageField, ShardKeys
from smsgate_server.store.scripts import Scripts

__all__ = [
    "AcceptOutcome",
    "Accepted",
    "AwaitingReceipt",
    "Claimed",
    "MessageStore",
    "Outcome",
    "Receipt",
    "ReceiptResult",
    "SendOutcome",
]

DAY_MS = 86_400_000
# A group commit takes calls until it holds this many messages (a BatchSend
# chunk may fill one alone): one script run stays short for Redis's other clients.
GROUP_MAX_MESSAGES = 1000


class Accepted(enum.StrEnum):
    """What became of messages to accept (the replies of accept.lua)."""

    NEW = "new"  # stored and queued or scheduled
    DUPLICATE = "dup"  # a retry of an accepted request: nothing stored again
    CONFLICT = "conflict"  # the request id was used for a different request


class Outcome(enum.StrEnum):
    """What to record for a message a provider was given (settle.lua's outcomes)."""

    SENT = "sent"  # the provider took it: wait for its receipt
    # The provider may have taken it (no answer): SENT without its id, with the
    # error, never sent again; a receipt or the receipt timeout ends it.
    UNKNOWN = "unknown"
    RETRY = "retry"  # not taken, may be tried again: queue it for ``retry_at_ms``
    FAIL = "fail"  # not taken, and never will be: FAILED
    # Refused by this provider, not about the recipient, and the route has
    # another: queued again at once, this provider recorded as having refused.
    FAILOVER = "failover"
    # The provider's pace had no room: back to the due set for ``retry_at_ms``,
    # the attempt given back (it never reached the provider).
    DEFER = "defer"


class ReceiptResult(enum.IntEnum):
    """What became of a delivery receipt (the replies of receipt.lua)."""

    APPLIED = 1  # the SENT message is DELIVERED or UNDELIVERED now
    IGNORED = 0  # the message ended already, or is gone
    EARLY = -1  # the message is still SENDING: its send outcome is not stored yet


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    """``kind``; for a DUPLICATE, ``remembered`` is the first call's result."""

    kind: Accepted
    remembered: str = ""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker moved to SENDING and must now hand to a provider."""

    entry: str
    app: str
    id: str
    phone: str
    rendered: str
    sender: str
    attempts: int
    created_ms: int
    batch_id: str
    send_at_ms: int = 0
    # ``rendered`` (and ``params_json``) are sealed (domain.sealed_text): open
    # them only for the provider.
    sensitive: bool = False
    # Sent by template: what vendors that send only their reviewed templates
    # need (the template's vendor id per provider, the params in placeholder
    # order, the sign name). Empty for free text.
    template_id: str = ""
    params_json: str = ""
    sign: str = ""
    vendor_ids_json: str = ""
    # Providers that refused it so far: "name code" joined by ','.
    refused: str = ""
    # Re-claimed after a worker handed it to this provider and stored no
    # outcome (``hand_over``): the provider may have it; never send it again.
    in_flight: str = ""
    # A marketing message: the dispatcher checks its recipient's opt-out first.
    marketing: bool = False

    def refused_by(self) -> dict[str, str]:
        """The providers that refused it, with the code each gave."""
        if not self.refused:
            return {}
        pairs = (item.partition(" ") for item in self.refused.split(","))
        return {name: code for name, _, code in pairs}


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What to record for a claimed message."""

    claimed: Claimed
    outcome: Outcome
    provider: str
    provider_message_id: str = ""
    error_code: str = ""
    error_reason: str = ""
    retry_at_ms: int = 0
    # The route taken, for the history ("" without routes).
    route: str = ""


@dataclass(frozen=True, slots=True)
class AwaitingReceipt:
    """A SENT message without receipt, as the reconciler asks its vendor about
    it: its provider and the provider's id ('' when the outcome was unknown)."""

    app: str
    id: str
    provider: str
    provider_message_id: str
    phone: str
    sent_ms: int


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt for one message; ``time_ms`` is the vendor's time of
    the outcome (0: it named none, the store's clock is used)."""

    app: str
    id: str
    delivered: bool
    error_code: str = ""
    error_reason: str = ""
    time_ms: int = 0


@dataclass(slots=True)
class _AcceptCall:
    """One accept call waiting for its group's script run."""

    keys: tuple[str, str, str]  # idempotency key, app index, batch list
    args: list[Any]
    messages: int
    answer: asyncio.Future[AcceptOutcome]


@dataclass(slots=True)
class _Read:
    """One ``get`` call waiting for its group's pipeline: (app, shard, id)."""

    ref: tuple[str, int, str]
    answer: asyncio.Future[StoredMessage | None]


@dataclass(slots=True)
class _AcceptGroup:
    """Accept calls of one shard that share one script run."""

    calls: list[_AcceptCall] = field(default_factory=list)
    messages: int = 0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MessageStore:
    """Reads and writes messages; every status change goes through a Lua script."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        shards: int,
        write_shards: int | None = None,
        grown_from: int = 0,
        grown_at_ms: int = 0,
        event_retention_seconds: int,
        message_retention_seconds: int,
        idempotency_ttl_seconds: int,
        receipt_timeout_seconds: float,
        schedule_max_days: int,
        max_message_age_seconds: float,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        # Accepting waits for this many replicas (WAIT), so a failover keeps
        # every message answered OK (Settings.redis_wait_replicas).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.scripts = Scripts(redis)
        # Every shard that may hold messages (the most ever used), and how many
        # of them new messages go to (SMSGATE_SHARDS; store.layout).
        self.shards = shards
        self.write_shards = min(write_shards or shards, shards)
        # The shard count before the last growth and when it grew (store.layout):
        # a retry of a request accepted before may find its record there.
        self._grown_from = grown_from
        self._grown_at_ms = grown_at_ms
        self.shard_keys = [ShardKeys(i) for i in range(shards)]
        self._event_retention_ms = event_retention_seconds * 1000
        self._message_retention = message_retention_seconds
        self._idempotency_ttl = idempotency_ttl_seconds
        self._receipt_timeout_ms = int(receipt_timeout_seconds * 1000)
        # How long after creation a message can still exist, so how long its
        # app-index and batch-list entries must last: scheduled up to the limit,
        # retried while younger than the maximum age, waiting for its receipt,
        # then kept for retention. The day covers the last retry's delay,
        # re-claims and clock skew between replicas.
        self.horizon_ms = (
            schedule_max_days * DAY_MS
            + int(max_message_age_seconds * 1000)
            + self._receipt_timeout_ms
            + message_retention_seconds * 1000
            + DAY_MS
        )
        self.clock = clock
        # Group commit: per shard, the group of accept calls that the next
        # loop turn runs, and the tasks running groups.
        self._accepting: dict[int, _AcceptGroup] = {}
        self._commits: set[asyncio.Task[None]] = set()
        # The same for GetMessage reads: the ``get`` calls the next turn reads.
        self._reading: list[_Read] = []

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _common(self, keys: ShardKeys, now_ms: int) -> list[Any]:
        minid = f"{max(now_ms - self._event_retention_ms, 0)}-0"
        return [keys.prefix, now_ms, minid, self._message_retention]

    @redis_edge
    async def accept(
        self,
        app: str,
        shard: int,
        messages: Sequence[NewMessage],
        *,
        batch_id: str = "",
        request_id: str = "",
        request_hash: str = "",
        remember: str = "",
        now_ms: int | None = None,
    ) -> AcceptOutcome:
        """Store and queue (or schedule) ``messages`` atomically in one shard.

        Calls for the same shard made in the same event-loop moment share one
        script run (group commit): the round trip and redis-py's per-command
        work are paid once per group. A call waits at most one loop turn for
        others; each keeps its own atomicity, idempotency and answer.

        Raises StoredUnconfirmed when stored but not confirmed by enough
        replicas in time, Unavailable when Redis failed (the script may have
        run or not), RateLimited (STORAGE_FULL) when Redis refused the write
        (nothing stored)."""
        keys = self.shard_keys[shard]
        now = self.now_ms() if now_ms is None else now_ms
        idem = keys.idempotency(app, request_id) if request_id else keys.prefix + "idem:-"
        batch_key = keys.batch(app, batch_id) if batch_id else keys.prefix + "b:-"
        args: list[Any] = [
            app,
            request_hash if request_id else "",
            batch_id,
            remember,
            now,
            len(messages),
        ]
        for m in messages:
            args += [
                m.id,
                m.phone,
                m.text,
                m.template_id,
                m.params_json,
                m.rendered,
                m.segments,
                m.send_at_ms,
                m.sender,
                m.labels_json,
                "1" if m.sensitive else "",
                m.expire_at_ms,
                int(m.encoding) or "",
                m.template_version,
                m.sign,
                m.vendor_ids_json,
                "1" if m.marketing else "",
            ]
        loop = asyncio.get_running_loop()
        call = _AcceptCall(
            (idem, keys.index(app), batch_key), args, len(messages), loop.create_future()
        )
        group = self._accepting.get(shard)
        if group is not None and group.messages < GROUP_MAX_MESSAGES:
            group.calls.append(call)
            group.messages += call.messages
            return await call.answer
        # This call opens a group and gives others one loop turn to join it.
        group = self._accepting[shard] = _AcceptGroup()
        group.calls.append(call)
        group.messages += call.messages
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._commit_in_task(shard, group)  # the others' calls go on
            raise
        if len(group.calls) == 1:
            # Alone (as most are in role all at a moderate rate): run here,
            # without a task of its own and the loop turn its answer took.
            await self._commit(shard, group)
            return call.answer.result()
        # Shared: in a task, so no caller's cancellation stops the others'.
        self._commit_in_task(shard, group)
        return await call.answer

    def _commit_in_task(self, shard: int, group: _AcceptGroup) -> None:
        task = asyncio.get_running_loop().create_task(self._commit(shard, group))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def _commit(self, shard: int, group: _AcceptGroup) -> None:
        """Run one group's accept script and answer each of its calls."""
        if self._accepting.get(shard) is group:
            del self._accepting[shard]
        calls = group.calls
        keys = self.shard_keys[shard]
        script_keys = [keys.events, keys.queue, keys.due]
        args: list[Any] = [
            *self._common(keys, self.now_ms()),
            17,
            self.horizon_ms,
            self._idempotency_ttl,
        ]
        for c in calls:
            script_keys += c.keys
            args += c.args
        acked = self.wait_replicas
        try:
            if not self.wait_replicas:
                result = await self.scripts.accept(keys=script_keys, args=args)
            else:
                result, acked = await self.scripts.accept.call_confirmed(
                    script_keys, args, replicas=self.wait_replicas, timeout_ms=self.wait_timeout_ms
                )
        except asyncio.CancelledError:
            for c in calls:
                c.answer.cancel()
            raise
        except Exception as exc:
            # Each caller raises it (and its store edge maps it).
            for c in calls:
                if not c.answer.done():
                    c.answer.set_exception(exc)
            return
        for i, c in enumerate(calls):
            kind = Accepted(_s(result[2 * i]))
            if c.answer.done():
                # Its caller was cancelled: its messages are stored all the same,
                # as when a cancellation lands while the script runs.
                continue
            if acked < self.wait_replicas and kind is not Accepted.CONFLICT:
                # A conflict wrote nothing: nothing to lose.
                c.answer.set_exception(
                    StoredUnconfirmed(
                        f"stored, but {acked} of {self.wait_replicas} Redis replicas confirmed "
                        f"it within {self.wait_timeout_ms} ms: a failover could lose it; retry "
                        "with the same request_id"
                    )
                )
            else:
                c.answer.set_result(AcceptOutcome(kind, _s(result[2 * i + 1])))

    @redis_edge
    async def get(self, app: str, shard: int, message_id: str) -> StoredMessage | None:
        """One message with its history, or None (also for another app's id).

        Reads made in the same event-loop moment share one pipeline (as accept
        calls share a script run): at most one loop turn of waiting."""
        loop = asyncio.get_running_loop()
        read = _Read((app, shard, message_id), loop.create_future())
        if not self._reading:
            task = loop.create_task(self._read_group())
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)
        self._reading.append(read)
        return await read.answer

    async def _read_group(self) -> None:
        """Read the messages of the waiting ``get`` calls in one pipeline."""
        group, self._reading = self._reading, []
        try:
            found = await self._read([r.ref for r in group])
        except asyncio.CancelledError:
            for r in group:
                r.answer.cancel()
            raise
        except Exception as exc:
            # Each caller raises it (and its store edge maps it).
            for r in group:
                if not r.answer.done():
                    r.answer.set_exception(exc)
            return
        for r, message in zip(group, found, strict=True):
            if not r.answer.done():
                r.answer.set_result(message)

    @redis_edge
    async def get_many(
        self, app: str, refs: Sequence[tuple[int, str]]
    ) -> list[StoredMessage | None]:
        """Messages by ``(shard, id)`` in one round trip; None where gone."""
        return await self._read([(app, shard, message_id) for shard, message_id in refs])

    async def _read(self, refs: Sequence[tuple[str, int, str]]) -> list[StoredMessage | None]:
        """Messages by ``(app, shard, id)``; None where gone."""
        if not refs:
            return []
        raw: list[dict[bytes, bytes]]
        if len(refs) == 1:
            # The usual GetMessage group (grpc.aio hands over one call per loop
            # turn): a plain command costs ~15 us less than a pipeline of one.
            app, shard, message_id = refs[0]
            one = await self.redis.hgetall(self.shard_keys[shard].message(app, message_id))
            raw = [cast(dict[bytes, bytes], one)]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for app, shard, message_id in refs:
                    pipe.hgetall(self.shard_keys[shard].message(app, message_id))
                raw = await pipe.execute()
        fields = [
            _with_id_parts(message_id, {k.decode(): v.decode() for k, v in f.items()})
            if f
            else None
            for (_, _, message_id), f in zip(refs, raw, strict=True)
        ]
        # A second round trip only for what is not in the hash: the text a
        # batch's recipients share, and the history list of a message accepted
        # before the history moved into the hash.
        more: list[tuple[str, str, int, str]] = []
        for (app, shard, message_id), d in zip(refs, fields, strict=True):
            if d is None:
                continue
            if MessageField.RENDERED not in d and d.get(MessageField.BATCH):
                more.append(("bt", app, shard, d[MessageField.BATCH]))
            if MessageField.HISTORY not in d:
                more.append(("h", app, shard, message_id))
        found: dict[tuple[str, str, int, str], Any] = {}
        if more:
            wanted = list(dict.fromkeys(more))
            async with self.redis.pipeline(transaction=False) as pipe:
                for kind, app, shard, name in wanted:
                    keys = self.shard_keys[shard]
                    if kind == "bt":
                        pipe.get(keys.batch_text(app, name))
                    else:
                        pipe.lrange(keys.history(app, name), 0, -1)
                found = dict(zip(wanted, await pipe.execute(), strict=True))
        out: list[StoredMessage | None] = []
        for (app, shard, message_id), d in zip(refs, fields, strict=True):
            if d is None:
                out.append(None)
                continue
            shared = found.get(("bt", app, shard, d.get(MessageField.BATCH, "")))
            legacy = found.get(("h", app, shard, message_id))
            out.append(
                _to_message(
                    message_id,
                    d,
                    shared.decode() if shared else "",
                    [x.decode() for x in legacy] if legacy is not None else None,
                )
            )
        return out

    def shard_before_growth(self, app: str, request_id: str) -> int | None:
        """The shard a request id was given before the shard count last grew,
        while its idempotency record may still live there; None when it never
        grew, grew too long ago, or the shard is the same as now."""
        if not self._grown_from or self._grown_from > self.shards:
            return None
        if self.now_ms() - self._grown_at_ms > self._idempotency_ttl * 1000:
            return None
        key = f"{app}:{request_id}"
        earlier = shard_for_key(key, self._grown_from)
        return earlier if earlier != shard_for_key(key, self.write_shards) else None

    @redis_edge
    async def has_request(self, app: str, shard: int, request_id: str) -> bool:
        """Whether a request with this id was stored (its idempotency record lives)."""
        return bool(await self.redis.exists(self.shard_keys[shard].idempotency(app, request_id)))

    @redis_edge
    async def heads(
        self, app: str, refs: Sequence[tuple[int, str]]
    ) -> list[tuple[Status, str] | None]:
        """Status and phone of messages by ``(shard, id)``, in one round trip;
        None where gone. What ListMessages filters on, without the rest."""
        if not refs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, message_id in refs:
                pipe.hmget(
                    self.shard_keys[shard].message(app, message_id),
                    [MessageField.STATUS, MessageField.PHONE],
                )
            raw = await pipe.execute()
        return [
            (Status(int(status)), _s(phone)) if status is not None else None
            for status, phone in raw
        ]

    @redis_edge
    async def index_pages(
        self, app: str, *, below: str, at_least: str, limit: int
    ) -> list[list[str]]:
        """Per shard, up to ``limit`` of the app's ids, newest first, with
        ``at_least <= id < below`` (ids sort by creation time); one pipeline
        for every shard."""
        # Ids older than the horizon belong to messages long gone; accept.lua
        # drops them a whole chunk at a time, so a chunk may still hold some.
        # The script also trims the index written before the chunks by it.
        floor = f"{max(self.now_ms() - self.horizon_ms, 0):012x}"
        at_least = max(at_least, floor)
        raw = await self.scripts.index_read.run_many(
            [
                ((keys.index(app), keys.legacy_index(app)), (below, at_least, limit, floor))
                for keys in self.shard_keys
            ]
        )
        return [[_s(x) for x in ids] for ids in raw]

    @redis_edge
    async def forget(self, app: str, refs: Sequence[tuple[int, str]]) -> None:
        """Drop index entries of messages whose retention ran out."""
        by_shard: dict[int, list[str]] = {}
        for shard, message_id in refs:
            by_shard.setdefault(shard, []).append(message_id)
        await self.scripts.index_forget.run_many(
            [
                (
                    (self.shard_keys[shard].index(app), self.shard_keys[shard].legacy_index(app)),
                    ids,
                )
                for shard, ids in by_shard.items()
            ]
        )

    @redis_edge
    async def batch_ids(self, app: str, shard: int, batch_id: str) -> list[str]:
        """The message ids of a batch in request order (empty when unknown)."""
        raw = await self.redis.lrange(self.shard_keys[shard].batch(app, batch_id), 0, -1)
        # accept.lua lists an id made in the batch id's ms and shard by the 12
        # digits after them; lists written before hold whole ids.
        head = batch_id[:14]
        return [head + i if len(i) == 12 else i for i in map(_s, raw)]

    @redis_edge
    async def cancel(self, app: str, shard: int, ids: Sequence[str]) -> list[int]:
        """Cancel messages: per id 1 canceled, 0 too late, -1 not found."""
        keys = self.shard_keys[shard]
        result = await self.scripts.cancel(
            keys=[keys.events, keys.due], args=[*self._common(keys, self.now_ms()), app, *ids]
        )
        return [int(x) for x in result]

    # --- dispatch side -------------------------------------------------

    @redis_edge
    async def claim(
        self,
        shard: int,
        entries: Sequence[tuple[str, str]],
        *,
        reclaimed: bool,
        max_attempts: int,
        hand_to: str = "",
    ) -> list[Claimed]:
        """Move the messages of queue entries ``(entry id, 'app:id')`` to SENDING;
        with ``hand_to``, also record that provider as having them (``hand_over``
        in the same step)."""
        keys = self.shard_keys[shard]
        args: list[Any] = [
            *self._common(keys, self.now_ms()),
            GROUP,
            "1" if reclaimed else "0",
            max_attempts,
            hand_to,
        ]
        for entry, member in entries:
            args += [entry, member]
        rows = await self.scripts.claim(keys=[keys.events, keys.queue], args=args)
        return [
            Claimed(
                entry=_s(r[0]),
                app=_s(r[1]),
                id=_s(r[2]),
                phone=_s(r[3]),
                rendered=_s(r[4]),
                sender=_s(r[5]),
                attempts=int(r[6]),
                created_ms=int(r[7]),
                batch_id=_s(r[8]),
                send_at_ms=int(r[9] or 0),
                sensitive=_s(r[10] or "") == "1",
                template_id=_s(r[11]),
                params_json=_s(r[12]),
                sign=_s(r[13]),
                vendor_ids_json=_s(r[14]),
                refused=_s(r[15]) if len(r) > 15 else "",
                in_flight=_s(r[16]) if len(r) > 16 else "",
                marketing=len(r) > 17 and _s(r[17]) == "1",
            )
            for r in rows
        ]

    @redis_edge
    async def hand_over(self, shard: int, provider: str, claimed: Sequence[Claimed]) -> list[bool]:
        """Record ``provider`` as having the claimed messages, just before its
        call; per message False when it is not this worker's to send any more
        (re-claimed by another since)."""
        keys = self.shard_keys[shard]
        args: list[Any] = [*self._common(keys, self.now_ms()), provider]
        for c in claimed:
            args += [f"{c.app}:{c.id}", c.attempts]
        result = await self.scripts.hand_over(keys=[keys.events], args=args)
        return [int(x) == 1 for x in result]

    @redis_edge
    async def settle(
        self, shard: int, outcomes: Sequence[SendOutcome], *, reconcile_after_ms: int = 0
    ) -> int:
        """Store provider outcomes and acknowledge their queue entries; with
        ``reconcile_after_ms``, messages SENT are asked about that much later
        (``claim_reconcile``) if no receipt has come."""
        keys = self.shard_keys[shard]
        now = self.now_ms()
        args: list[Any] = [
            *self._common(keys, now),
            GROUP,
            now + self._receipt_timeout_ms,
            self._receipt_timeout_ms // 1000 + 3600,
            now + reconcile_after_ms if reconcile_after_ms > 0 else 0,
        ]
        for o in outcomes:
            c = o.claimed
            args += [
                c.entry,
                c.app,
                c.id,
                o.outcome,
                o.provider,
                o.provider_message_id,
                o.error_code,
                o.error_reason,
                o.retry_at_ms,
                o.route,
            ]
        return int(
            await self.scripts.settle(
                keys=[keys.events, keys.queue, keys.due, keys.receipts, keys.reconcile],
                args=args,
            )
        )

    @redis_edge
    async def apply_receipts(self, shard: int, receipts: Sequence[Receipt]) -> list[ReceiptResult]:
        """Move SENT messages to DELIVERED / UNDELIVERED; what became of each receipt."""
        keys = self.shard_keys[shard]
        args: list[Any] = self._common(keys, self.now_ms())
        for r in receipts:
            args += [
                r.app,
                r.id,
                "1" if r.delivered else "0",
                r.error_code,
                r.error_reason,
                r.time_ms,
            ]
        result = await self.scripts.receipt(keys=[keys.events, keys.receipts], args=args)
        return [ReceiptResult(int(x)) for x in result]

    @redis_edge
    async def promote(self, shard: int, limit: int) -> tuple[int, int]:
        """Queue up to ``limit`` due messages and expire up to ``limit`` overdue
        receipts: (promoted, expired)."""
        keys = self.shard_keys[shard]
        result = await self.scripts.promote(
            keys=[keys.events, keys.due, keys.queue, keys.receipts],
            args=[*self._common(keys, self.now_ms()), limit],
        )
        return int(result[0]), int(result[1])

    @redis_edge
    async def reconcile_due(self, shards: Sequence[int]) -> list[int]:
        """Those of ``shards`` with a SENT message due to be asked about now,
        in one pipeline: an idle shard costs one cheap read per tick instead
        of the reconcile script."""
        if not shards:
            return []
        now = self.now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.zrangebyscore(self.shard_keys[shard].reconcile, "-inf", now, start=0, num=1)
            found = await pipe.execute()
        return [shard for shard, due in zip(shards, found, strict=True) if due]

    @redis_edge
    async def claim_reconcile(
        self, shard: int, limit: int, interval_ms: int
    ) -> list[AwaitingReceipt]:
        """Up to ``limit`` SENT messages due to be asked about, each put back to
        be asked again ``interval_ms`` later unless a receipt ends it first."""
        keys = self.shard_keys[shard]
        result = await self.scripts.reconcile(
            keys=[keys.events, keys.reconcile, keys.receipts],
            args=[*self._common(keys, self.now_ms()), limit, interval_ms],
        )
        f = [_s(v) for v in result]
        return [
            AwaitingReceipt(f[i], f[i + 1], f[i + 2], f[i + 3], f[i + 4], int(f[i + 5] or 0))
            for i in range(0, len(f), 6)
        ]

    @redis_edge
    async def template_uses(self, app: str, template_id: str) -> int:
        """How many of the app's messages rendered from ``template_id`` are not
        yet with a provider, across every shard (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.shard_keys:
                pipe.get(keys.template_uses(app, template_id))
            counts = await pipe.execute()
        return sum(int(c) for c in counts if c is not None)

    @redis_edge
    async def lookup_provider_ids(
        self, provider: str, provider_message_ids: Sequence[str]
    ) -> list[str | None]:
        """``app:id`` of messages by their provider ids (one round trip)."""
        if not provider_message_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in provider_message_ids:
                for keys in self.shard_keys:
                    pipe.get(keys.provider_id(provider, pid))
            found = await pipe.execute()
        n = self.shards
        return [
            next((_s(v) for v in found[i * n : (i + 1) * n] if v), None)
            for i in range(len(provider_message_ids))
        ]


# Status by its number as stored: a dict look-up, cheaper than Status(int(...))
# for every message and history entry a listing reads.
_STATUS_OF = {str(s.value): s for s in Status}


def _with_id_parts(message_id: str, d: dict[str, str]) -> dict[str, str]:
    """``d`` with what accept.lua leaves out because the id says it (lib.lua's
    created_of, batch_of): the creation time when it is the id's, and the
    first 14 digits (creation ms and shard) of a batch id made with the id."""
    if len(message_id) == 26:
        if MessageField.CREATED not in d:
            d[MessageField.CREATED] = str(int(message_id[:12], 16))
        batch = d.get(MessageField.BATCH)
        if batch is not None and len(batch) == 12:
            d[MessageField.BATCH] = message_id[:14] + batch
    return d


def _history(d: dict[str, str], created_ms: int, legacy: list[str] | None) -> list[HistoryEntry]:
    """The history lines of the hash (times relative to creation), or of the
    list of a message accepted before they moved there (absolute times)."""
    if legacy is not None:
        base, lines = 0, legacy
    else:
        base, lines = created_ms, d.get(MessageField.HISTORY, "").split("\n")
    entries = []
    for line in lines:
        if line:
            status, ts, detail = line.split("|", 2)
            entries.append(HistoryEntry(_STATUS_OF[status], base + int(ts), detail))
    return entries


def _to_message(
    message_id: str, d: dict[str, str], batch_text: str, legacy_history: list[str] | None
) -> StoredMessage:
    """A message from its decoded hash; ``batch_text`` is its batch's shared
    text (used when the hash has none of its own)."""

    def n(name: MessageField) -> int:
        return int(d.get(name) or 0)

    F = MessageField
    created_ms = n(F.CREATED)
    rendered = d.get(F.RENDERED, batch_text)
    template_id = d.get(F.TEMPLATE, "")
    sensitive = d.get(F.SENSITIVE) == "1"
    # Free text is stored once, as the rendered text (accept.lua); a code's
    # rendered text is sealed and never its text.
    text = d.get(F.TEXT, "" if template_id or sensitive else rendered)
    return StoredMessage(
        id=message_id,
        batch_id=d.get(F.BATCH, ""),
        phone=d.get(F.PHONE, ""),
        text=text,
        template_id=template_id,
        params_json=d.get(F.PARAMS, ""),
        rendered=rendered,
        segments=n(F.SEGMENTS),
        status=_STATUS_OF[d[F.STATUS]],
        created_ms=created_ms,
        send_at_ms=n(F.SEND_AT),
        updated_ms=n(F.UPDATED),
        provider=d.get(F.PROVIDER, ""),
        provider_message_id=d.get(F.PROVIDER_ID, ""),
        attempts=n(F.ATTEMPTS),
        error_code=d.get(F.ERROR_CODE, ""),
        error_reason=d.get(F.ERROR_REASON, ""),
        error_retryable=d.get(F.ERROR_RETRYABLE) == "1",
        sender=d.get(F.SENDER, ""),
        labels_json=d.get(F.LABELS, ""),
        history=_history(d, created_ms, legacy_history),
        sensitive=sensitive,
        template_version=n(F.TEMPLATE_VERSION),
        sign=d.get(F.SIGN, ""),
        vendor_ids_json=d.get(F.VENDOR_IDS, ""),
        encoding=n(F.ENCODING),
        cost_micros=int(d[F.COST]) if F.COST in d else None,
        cost_currency=d.get(F.COST_CURRENCY, ""),
    )
