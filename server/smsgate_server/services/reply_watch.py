"""ReplyHub: one reader per process fans new replies out to the local
WatchReplies subscribers of their app.

Each reply is stored in its app's stream and named in a shared feed stream
(``store.replies``). The hub blocks on the feed alone; for each app the feed
names that has subscribers here, it reads the app's stream after the hub's
position in it and offers what it finds to those subscribers. An app's
replies are only ever offered to that app's subscribers.

A subscriber's bounded buffer, its end when it falls behind (RESOURCE_EXHAUSTED,
SUBSCRIBER_TOO_SLOW) or when the server closes (UNAVAILABLE), and the sweep of
calls that ended without unsubscribing are WatchStatus's (``services.watch``).
So is the resume: a watch first reads what came after its token straight from
the app's stream, then live replies, skipping any at or before the last one it
sent, so nothing is missed or sent twice. Its resume token is the sealed id of
the last reply sent, in the app's stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from smsgate_server.aio import cancel_and_wait
from smsgate_server.domain.errors import (
    InvalidArgument,
    OutOfRange,
    RateLimited,
    Reason,
    Unavailable,
)
from smsgate_server.domain.events import stream_id_key
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer
from smsgate_server.metrics import REPLY_WATCH_SUBSCRIPTIONS
from smsgate_server.services.watch import CLOSING, Subscriber, ending, sweep
from smsgate_server.store.replies import FEED_LENGTH, MAX_REPLIES, ReplyStore, StoredReply

__all__ = ["MAX_WATCHES_PER_APP", "REPLY_BUFFER", "ReplyHub", "ReplyWatch"]

log = logging.getLogger("smsgate.replies")

# Replies a subscriber may fall behind before its stream is ended (each holds
# up to 1,600 characters of text, so fewer than WatchStatus's events).
REPLY_BUFFER = 1_000
# WatchReplies streams an app may hold open on one server process.
MAX_WATCHES_PER_APP = 100
# Feed entries per read: below FEED_LENGTH, so a reader that fell behind past
# the feed's trim gets a full batch, and then reads every watched app.
FEED_READ = 1_000
# Replies per read of an app's stream while catching up from a token.
CATCHUP_READ = 200
# Binds resume tokens to this stream (a WatchStatus token never opens here).
_TOKEN_CONTEXT = b"replies"

assert FEED_READ < FEED_LENGTH


def _any(reply: StoredReply) -> bool:
    return True


@dataclass
class ReplyHub:
    """Fans replies out to the WatchReplies subscribers of this process."""

    store: ReplyStore
    tokens: TokenSealer
    buffer: int = REPLY_BUFFER
    max_per_app: int = MAX_WATCHES_PER_APP
    block_ms: int = 1000
    sweep_seconds: float = 2.0
    _subscribers: dict[str, set[Subscriber[StoredReply]]] = field(default_factory=dict)
    # Per watched app: the id of the last reply the hub read from its stream.
    _positions: dict[str, str] = field(default_factory=dict)
    # The id of the last feed entry read.
    _feed: str = ""
    _reader: asyncio.Task[None] | None = None
    _sweeper: asyncio.Task[None] | None = None
    _closing: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def reading(self) -> bool:
        """Whether the feed reader runs (only while someone watches)."""
        return self._reader is not None and not self._reader.done()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def open(self, app: str, token: str) -> ReplyWatch:
        """Subscribe to ``app``'s replies after ``token`` (or from now); live
        when this returns. Close the watch when done."""
        if self._closing:
            raise Unavailable("server is shutting down; reconnect", reason=Reason.SHUTTING_DOWN)
        task = asyncio.current_task()
        assert task is not None, "a watch is opened by a call's task"
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="reply-watch-sweep")
        async with self._lock:
            if len(self._subscribers.get(app, ())) >= self.max_per_app:
                raise RateLimited(
                    f"the app holds {self.max_per_app} WatchReplies streams on this server "
                    "already; close one or retry later",
                    retry_after=5.0,
                    reason=Reason.TOO_MANY_CONCURRENT_QUERIES,
                )
            after = self._token_position(app, token) if token else ""
            if after and await self.store.trimmed_after(app, after):
                raise OutOfRange(
                    f"replies after the resume token were dropped (the latest {MAX_REPLIES} "
                    "are kept); start a new watch and reconcile with ListReplies",
                    reason=Reason.RESUME_TOKEN_EXPIRED,
                )
            now = await self.store.last_id(app)
            if not self.reading:
                self._feed = await self.store.feed_last_id()
                self._reader = asyncio.create_task(self._read(), name="reply-watch")
            # No await from here on: the subscriber and the app's position are
            # set together, before the reader next looks at them.
            position = self._positions.setdefault(app, now)
            sub = Subscriber[StoredReply](app, _any, asyncio.Queue(self.buffer), task)
            self._subscribers.setdefault(app, set()).add(sub)
            REPLY_WATCH_SUBSCRIPTIONS.inc()
        return ReplyWatch(self, sub, after or position)

    def _token_position(self, app: str, token: str) -> str:
        try:
            position = self.tokens.open(
                TokenKind.RESUME, app, token, context=_TOKEN_CONTEXT
            ).decode()
            stream_id_key(position)
        except (InvalidToken, ValueError, UnicodeDecodeError):
            raise InvalidArgument.field(
                "resume_token",
                "is not a resume token of an earlier WatchReplies call of this app",
                reason=Reason.INVALID_RESUME_TOKEN,
            ) from None
        return position

    def token(self, app: str, position: str) -> str:
        """The resume token that resumes ``app``'s replies after ``position``."""
        return self.tokens.seal(TokenKind.RESUME, app, position.encode(), context=_TOKEN_CONTEXT)

    async def close(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect) and stop reading."""
        self._closing = True
        for subs in self._subscribers.values():
            for sub in subs:
                sub.end(CLOSING)
        tasks = [t for t in (self._reader, self._sweeper) if t is not None]
        await cancel_and_wait(tasks, timeout=self.block_ms / 1000 + 2)

    async def _read(self) -> None:
        # Stops with the last subscriber (checked with no await before the
        # return, so an opening watch either sees it running or done).
        everything = False
        while not self._closing and self._subscribers:
            try:
                if everything:
                    apps = list(self._subscribers)
                else:
                    batch = await self.store.wait_feed(
                        self._feed, block_ms=self.block_ms, count=FEED_READ
                    )
                    if batch:
                        self._feed = batch[-1][0]
                    # A full batch may have skipped entries the feed's cap dropped.
                    named = dict.fromkeys(app for _, app in batch)
                    apps = list(self._subscribers) if len(batch) >= FEED_READ else list(named)
                everything = False
                for app in apps:
                    await self._read_app(app)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Feed entries may have gone by unread: read every watched app next.
                everything = True
                if not isinstance(exc, Unavailable):  # logged, counted, where mapped
                    log.exception("reply read failed")
                await asyncio.sleep(1.0)

    async def _read_app(self, app: str) -> None:
        """Offer the app's replies after the hub's position to its subscribers."""
        position = self._positions.get(app)
        # Half a buffer per read: a read is offered in one go, before any
        # subscriber gets to drain.
        count = max(1, self.buffer // 2)
        while position is not None:
            batch = await self.store.after(app, position, count)
            subs = self._subscribers.get(app)
            if not subs:
                return
            for reply in batch:
                for sub in subs:
                    sub.offer(reply)
            if batch:
                position = self._positions[app] = batch[-1].id
            if len(batch) < count:
                return

    async def _sweep_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.sweep_seconds)
            sweep(self._subscribers, self._unsubscribe)

    def _unsubscribe(self, sub: Subscriber[StoredReply]) -> None:
        subs = self._subscribers.get(sub.app)
        if subs is not None and sub in subs:
            subs.remove(sub)
            REPLY_WATCH_SUBSCRIPTIONS.dec()
            if not subs:
                del self._subscribers[sub.app]
                self._positions.pop(sub.app, None)


@dataclass(eq=False)
class ReplyWatch:
    """One open WatchReplies subscription, starting after ``position``."""

    hub: ReplyHub
    sub: Subscriber[StoredReply]
    position: str

    def start_token(self) -> str:
        """The token of where this watch starts."""
        return self.hub.token(self.sub.app, self.position)

    async def replies(self) -> AsyncIterator[tuple[StoredReply, str]]:
        """The app's replies, each with the token that resumes after it."""
        hub, app = self.hub, self.sub.app
        # First what came since the start, straight from the app's stream...
        while True:
            batch = await hub.store.after(app, self.position, CATCHUP_READ)
            for reply in batch:
                self.position = reply.id
                yield reply, hub.token(app, reply.id)
            if len(batch) < CATCHUP_READ:
                break
        # ...then live replies, skipping what the catch-up already sent.
        while True:
            item = await self.sub.queue.get()
            if isinstance(item, str):
                raise ending(item, f"{hub.buffer} replies")
            if stream_id_key(item.id) <= stream_id_key(self.position):
                continue
            self.position = item.id
            yield item, hub.token(app, item.id)

    def close(self) -> None:
        self.hub._unsubscribe(self.sub)
