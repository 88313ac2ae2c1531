"""WatchHub: one reader per shard event stream fans status events out to every
local WatchStatus subscriber.

A subscriber gets a bounded queue. When it falls too far behind, its stream
ends with RESOURCE_EXHAUSTED and the client resumes from its last token;
the others never wait for it. A resumed subscriber first reads what it missed
from the streams (XRANGE), then live events, skipping anything at or before
its position, so nothing is delivered twice.

A subscription ends with its client. gRPC cancels the handler's task when the
client goes (cancel, closed channel, reset connection; HTTP/2 keepalive finds
peers that fell silent), and the handler's ``finally`` unsubscribes. That one
cancellation must not be lost: the store re-raises one that redis-py swallowed
(``store.errors.redis_edge``), and as a backstop a sweep every
``sweep_seconds`` cancels again each subscriber whose task was cancelled yet
runs on, and drops those whose task ended without unsubscribing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from smsgate_server.aio import cancel_and_wait
from smsgate_server.domain.errors import (
    InvalidArgument,
    NotFound,
    OutOfRange,
    RateLimited,
    Reason,
    Unavailable,
)
from smsgate_server.domain.events import (
    NEW_SHARD_START,
    StatusEvent,
    decode_token,
    encode_token,
    stream_id_key,
)
from smsgate_server.domain.message import StoredMessage
from smsgate_server.domain.status import Status
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.metrics import WATCH_SUBSCRIPTIONS
from smsgate_server.services.admission import Admission, QuerySlot
from smsgate_server.services.sending import MAX_PAGE_SIZE, ListQuery, SendingService
from smsgate_server.store.events import EventStore

__all__ = [
    "CLOSING",
    "OVERFLOW",
    "Subscriber",
    "Watch",
    "WatchFilter",
    "WatchHub",
    "current_messages",
    "ending",
    "sweep",
]

log = logging.getLogger("smsgate.watch")

# Events per read while catching up from a resume token: a read's events are
# decoded in one go, holding the event loop, and they are every app's events.
CATCHUP_READ = 200
# Resume tokens the hub keeps sealed for its live subscribers (see
# WatchHub.token): past this many it forgets them all and starts again.
SEALED_TOKENS = 1024
# The end markers a subscriber's queue may hold last.
CLOSING = "closing"
OVERFLOW = "overflow"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which events a subscriber wants; empty parts match everything."""

    message_ids: frozenset[str] = frozenset()
    batch_id: str = ""
    statuses: frozenset[Status] = frozenset()

    def matches(self, e: StatusEvent) -> bool:
        return (
            (not self.message_ids or e.message_id in self.message_ids)
            and (not self.batch_id or e.batch_id == self.batch_id)
            and (not self.statuses or e.status in self.statuses)
        )


@dataclass(eq=False)
class Subscriber(Generic[T]):
    """One subscription's bounded buffer of items (status events, replies),
    ended by a marker when it overflows or the server closes."""

    app: str
    # Which items it wants (filtered on offer, so others never fill the buffer).
    wants: Callable[[T], bool]
    queue: asyncio.Queue[T | str]
    # The task of the call that reads this subscription (the gRPC handler's).
    task: asyncio.Task[Any]
    ended: bool = False

    def offer(self, item: T) -> None:
        if self.ended or not self.wants(item):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.end(OVERFLOW)

    def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        # Make room so the end marker always fits.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(reason)


@dataclass
class WatchHub:
    """Fans events out to subscribers of this process."""

    events: EventStore
    tokens: TokenSealer
    buffer: int = 10_000
    retention_seconds: int = 86_400
    block_ms: int = 1000
    sweep_seconds: float = 2.0
    clock: Callable[[], float] = time.time
    positions: list[str] = field(default_factory=list)
    _subscribers: dict[str, set[Subscriber[StatusEvent]]] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sweeper: asyncio.Task[None] | None = None
    _closing: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The app whose watch is being opened (under the lock), if any.
    _opening: str | None = None
    # Bounds the catch-ups an app runs at once (None: unbounded).
    admission: Admission | None = None
    # Resume tokens by (app, positions), for live subscribers (see token()).
    _sealed: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, app: str, positions: list[str]) -> str:
        """The resume token of ``app`` at ``positions``. Live subscribers of an
        app that watch alike stand at the same positions after each event, so
        one seal (an HMAC) serves all of them instead of one each."""
        key = (app, ",".join(positions))
        token = self._sealed.get(key)
        if token is None:
            if len(self._sealed) >= SEALED_TOKENS:
                self._sealed.clear()
            token = self._sealed[key] = encode_token(self.tokens, app, positions)
        return token

    async def _ensure_reading(self) -> None:
        """Start the shard readers if they stopped for lack of subscribers,
        from the streams' current ends."""
        if self.reading:
            return
        shards = len(self.events.keys)
        self.positions = await self.events.last_ids()
        # One blocking read over every shard where Redis allows it (one
        # connection), else one per shard.
        groups = [tuple(range(shards))] if self.events.together else [(s,) for s in range(shards)]
        self._tasks = [
            asyncio.create_task(self._read(group), name=f"watch-{group[0]}") for group in groups
        ]

    async def close(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect) and stop reading."""
        self._closing = True
        for subs in self._subscribers.values():
            for sub in subs:
                sub.end(CLOSING)
        sweeper = [self._sweeper] if self._sweeper is not None else []
        # Bounded: a reader also ends on the closing flag after its read.
        await cancel_and_wait([*self._tasks, *sweeper], timeout=self.block_ms / 1000 + 2)

    @property
    def reading(self) -> bool:
        """Whether the shard readers are running (only while someone watches)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _read(self, shards: tuple[int, ...]) -> None:
        # Checked each turn as well as cancelled: a cancellation that lands
        # inside redis-py can surface as a connection error instead. With no
        # subscriber left the reader stops (no await between the check and
        # the return, so a new subscriber either sees it running or done).
        while not self._closing and self._subscribers:
            try:
                # Never more per read than half a subscriber's buffer: a batch is
                # offered in one go, before any subscriber gets to drain.
                batch = await self.events.wait_after_many(
                    {shard: self.positions[shard] for shard in shards},
                    block_ms=self.block_ms,
                    count=max(1, min(1000, self.buffer // 2) // len(shards)),
                )
            except asyncio.CancelledError:
                raise
            except Unavailable:
                # Logged, with a count, where the store mapped it.
                await asyncio.sleep(1.0)
                continue
            except Exception:
                log.exception("event read failed", extra={"shards": len(shards)})
                await asyncio.sleep(1.0)
                continue
            for event in batch:
                self.positions[event.shard] = event.stream_id
                for sub in self._subscribers.get(event.app, ()):
                    sub.offer(event)

    async def _sweep_loop(self) -> None:
        # No I/O: a wake-up every few seconds for the life of the hub.
        while not self._closing:
            await asyncio.sleep(self.sweep_seconds)
            self._sweep()

    def _sweep(self) -> None:
        sweep(self._subscribers, self._unsubscribe)

    async def _start_positions(self, app: str, token: str) -> list[str]:
        if not token:
            return list(self.positions)
        try:
            positions = decode_token(self.tokens, app, token, len(self.events.keys))
        except ValueError as exc:
            raise InvalidArgument.field(
                "resume_token", str(exc), reason=Reason.INVALID_RESUME_TOKEN
            ) from None
        horizon_ms = int(self.clock() * 1000) - self.retention_seconds * 1000
        firsts = await self.events.first_ids()
        for position, first in zip(positions, firsts, strict=True):
            if position == NEW_SHARD_START:
                continue  # a shard added since: read from its start, not "too old"
            behind = first is not None and stream_id_key(position) < stream_id_key(first)
            if behind and stream_id_key(position)[0] < horizon_ms:
                raise OutOfRange(
                    f"the resume token is older than the {self.retention_seconds}s retention "
                    "window; start a new watch and reconcile with ListMessages",
                    reason=Reason.RESUME_TOKEN_EXPIRED,
                )
        return positions

    async def open(self, app: str, wanted: WatchFilter, token: str) -> Watch:
        """Subscribe ``app``'s events matching ``wanted`` from ``token`` (or now).

        The subscription is live when this returns, so nothing that happens
        after it is missed; close the Watch when done.
        """
        if self._closing:
            raise Unavailable("server is shutting down; reconnect", reason=Reason.SHUTTING_DOWN)
        task = asyncio.current_task()
        assert task is not None, "a watch is opened by a call's task"
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="watch-sweep")
        async with self._lock:
            # Registering the app first keeps the readers from stopping while
            # they are started (or found running) for this watch; marking it
            # as opening keeps the app's last other watch, closing meanwhile,
            # from removing the entry.
            self._subscribers.setdefault(app, set())
            self._opening = app
            try:
                await self._ensure_reading()
                positions = await self._start_positions(app, token)
            except BaseException:
                self._opening = None
                self._forget_app(app)
                raise
            self._opening = None
            sub = Subscriber[StatusEvent](app, wanted.matches, asyncio.Queue(self.buffer), task)
            self._subscribers[app].add(sub)
            WATCH_SUBSCRIPTIONS.inc()
        return Watch(self, sub, wanted, positions)

    def _forget_app(self, app: str) -> None:
        if not self._subscribers.get(app) and app != self._opening:
            self._subscribers.pop(app, None)

    def _unsubscribe(self, sub: Subscriber[StatusEvent]) -> None:
        subs = self._subscribers.get(sub.app)
        if subs is not None and sub in subs:
            subs.remove(sub)
            WATCH_SUBSCRIPTIONS.dec()
        self._forget_app(sub.app)

    def _ending(self, reason: str) -> Exception:
        return ending(reason, f"{self.buffer} events")


@dataclass(eq=False)
class Watch:
    """One open WatchStatus subscription."""

    hub: WatchHub
    sub: Subscriber[StatusEvent]
    wanted: WatchFilter
    positions: list[str]
    # The app's expensive-call slot while catching up (released by close() too:
    # a generator abandoned mid-catch-up runs its finally only when collected).
    catchup: QuerySlot | None = None
    # Whether it starts behind the live readers (a resume), decided when it is
    # made: the readers move on while the stream starts.
    resumed: bool = field(init=False, default=False)
    # Whether it starts exactly at the readers' positions (no token, or a token
    # of where they stand): then its buffer holds every event after its
    # positions and nothing else. A token can also be ahead of them (issued by
    # another server process), and then events up to it are skipped.
    at_readers: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        live = self.hub.positions
        self.resumed = any(
            stream_id_key(p) < stream_id_key(live[shard])
            for shard, p in enumerate(self.positions)
            if shard < len(live)
        )
        self.at_readers = self.positions == live

    def start_token(self) -> str:
        """The token of where this watch starts: a resume from it receives
        every event the watch would have streamed."""
        return encode_token(self.hub.tokens, self.sub.app, self.positions)

    async def events(
        self, shown: frozenset[tuple[str, Status]] = frozenset()
    ) -> AsyncIterator[tuple[StatusEvent, str]]:
        """Matching events, each with the token that resumes after it.

        ``shown``: (message id, status) pairs a snapshot already showed; a
        message that changed between the subscription and the snapshot's read
        would otherwise report those statuses twice on this stream.
        """
        positions, wanted, app = self.positions, self.wanted, self.sub.app
        tokens = self.hub.tokens
        # First what happened since the token, straight from the streams. Only
        # a resume has any: a watch from the live readers' positions finds in
        # its buffer every event since, and reading the streams meanwhile (a
        # round trip per shard) would leave that buffer to fill and overflow.
        slot = self.catchup = self._catchup_slot()
        try:
            for shard in range(len(positions) if self.resumed else 0):
                while True:
                    batch = await self.hub.events.after(shard, positions[shard], CATCHUP_READ)
                    for event in batch:
                        positions[shard] = event.stream_id
                        if event.app == app and _wanted(event, wanted, shown):
                            yield event, encode_token(tokens, app, positions)
                    if len(batch) < CATCHUP_READ:
                        break
        finally:
            if slot is not None:
                slot.release()
        # ...then live events, skipping what the catch-up (or a token ahead of
        # the readers) already covered.
        hub, check = self.hub, not self.at_readers
        while True:
            item = await self.sub.queue.get()
            if isinstance(item, str):
                raise hub._ending(item)
            if check and stream_id_key(item.stream_id) <= stream_id_key(positions[item.shard]):
                continue
            positions[item.shard] = item.stream_id
            if _wanted(item, wanted, shown):
                yield item, hub.token(app, positions)

    def _catchup_slot(self) -> QuerySlot | None:
        """An expensive-call slot of the app for a resume: its catch-up reads
        every app's events since the token."""
        admission = self.hub.admission
        return admission.query_slot(self.sub.app) if admission and self.resumed else None

    def close(self) -> None:
        if self.catchup is not None:
            self.catchup.release()
        self.hub._unsubscribe(self.sub)


def sweep(
    subscribers: dict[str, set[Subscriber[T]]], unsubscribe: Callable[[Subscriber[T]], None]
) -> None:
    """Release subscriptions whose call has ended or was cancelled without
    hearing of it (see the module docstring)."""
    for subs in list(subscribers.values()):
        for sub in list(subs):
            if sub.task.done():
                # Its handler never ran its cleanup (an unfinished generator).
                unsubscribe(sub)
            elif sub.task.cancelling():
                sub.task.cancel()


def ending(marker: str, buffer: str) -> Exception:
    """The error that ends a stream whose queue held ``marker`` last; ``buffer``
    says how far behind a subscriber may fall ("10000 events")."""
    if marker == OVERFLOW:
        return RateLimited(
            f"the subscriber fell more than {buffer} behind; resume from the last token",
            retry_after=0.0,
            reason=Reason.SUBSCRIBER_TOO_SLOW,
        )
    return Unavailable(
        "server is shutting down; reconnect with the last resume token",
        reason=Reason.SHUTTING_DOWN,
    )


def _wanted(event: StatusEvent, wanted: WatchFilter, shown: frozenset[tuple[str, Status]]) -> bool:
    return wanted.matches(event) and (event.message_id, event.status) not in shown


async def current_messages(
    sending: SendingService, app: str, wanted: WatchFilter
) -> list[StoredMessage]:
    """The app's messages a watch filtered by ids or a batch matches, as they
    are now (its snapshot); ids not found (or another app's) are left out."""
    found: list[StoredMessage] = []
    for message_id in sorted(wanted.message_ids):
        try:
            found.append(await sending.get(app, message_id))
        except NotFound:
            continue
    if wanted.batch_id and not wanted.message_ids:
        token = ""
        while True:
            query = ListQuery(page_size=MAX_PAGE_SIZE, page_token=token, batch_id=wanted.batch_id)
            try:
                page, token = await sending.list_messages(app, query)
            except NotFound:
                break
            found.extend(page)
            if not token:
                break
    return [
        m
        for m in found
        if (not wanted.batch_id or m.batch_id == wanted.batch_id)
        and (not wanted.statuses or m.status in wanted.statuses)
    ]
