"""The Redis key layout, in one place.

Everything of a message lives in its shard's hash slot (``{sg<N>}``): the
message hash, its history, the shard's dispatch queue, due set, receipt set and
event stream. So every multi-key script touches one slot and runs unchanged on
Redis Cluster. Message ids carry their shard (``domain.ids``).

App records live in their own slot per app (``{app:<key>}``), with the app's
accept-rate bucket. The app's held-message counters live in each shard's slot,
beside the messages they count, so the scripts that move a message keep them.

Hash and stream field names are the enums below, one line each. Message and
event fields are one or two letters: they are repeated in every message hash
and event, and short names keep those in Redis's compact listpack encoding.
The Lua scripts spell the same names as literals (tests/test_lua.py checks
they use no others).

Verification codes of one phone number of one app share a slot
(``{v:<app>:<phone tag>}``): the code of each scope, its id index, resend
cooldowns and the send log the per-number caps count. The phone tag is a keyed
hash (``domain.codes``), so no phone number appears in a key name. The app's
per-minute verification counter has a slot of its own (``{vr:<app>}``).

The templates of one app share a slot (``{tpl:<app>}``): the id index, each
template's head (latest version, etag) and every version, so creating, updating
and deleting a template are each one script in one slot. The app's sign names
and its default sign live there too, read with a template in one round trip.

How many scheduled or queued messages of an app use a template is counted per
shard (``ShardKeys.template_uses``), beside the messages, by the scripts that
move them; deleting a template sums the shards' counts first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "GROUP",
    "HELD_BUCKETS",
    "PREFIX",
    "AppField",
    "CodeField",
    "CodeKeys",
    "EventField",
    "MessageField",
    "QueueField",
    "ShardKeys",
    "TemplateField",
    "TemplateKeys",
    "accept_bucket_key",
    "app_key",
    "apps_index",
    "breaker_key",
    "lease_keys",
    "lease_state_keys",
    "optouts_key",
    "pace_key",
    "policy_prefix",
    "replies_feed_key",
    "replies_key",
    "revocations_channel",
    "shard_count_key",
    "shard_growth_key",
    "verify_rate_key",
]

PREFIX = "sg"
# Time buckets per retention period of the ended-message counters (``ShardKeys.done``):
# more buckets, a closer count of what is still held, more keys to read.
HELD_BUCKETS = 8
# The consumer group of every shard's queue stream, shared by all dispatchers.
GROUP = "dispatch"


class MessageField(enum.StrEnum):
    """Fields of a message hash (``m:<app>:<id>``)."""

    ID = "id"  # the message id (written until the key's id was read instead)
    BATCH = "b"  # its batch id ('' when sent alone)
    PHONE = "p"  # the recipient, E.164
    TEXT = "tx"  # the free text as requested (absent: the same as RENDERED)
    TEMPLATE = "tp"  # the template id ('' for free text)
    PARAMS = "pa"  # the template parameters in placeholder order, JSON (sealed when sensitive)
    TEMPLATE_VERSION = "tv"  # the template version rendered
    SIGN = "sn"  # the sign name sent under ('' for none)
    VENDOR_IDS = "vt"  # the template's vendor template id per provider, JSON
    ENCODING = "en"  # Encoding number of the rendered text (1 GSM-7, 2 UCS-2)
    RENDERED = "r"  # the text handed to the provider (absent: its batch's, ShardKeys.batch_text)
    SEGMENTS = "sg"  # SMS segments of the rendered text
    CREATED = "ct"  # acceptance time, ms
    SEND_AT = "sa"  # requested send time, ms (at or before CREATED: send now)
    SENDER = "snd"  # the sender id ('' for the vendor's default)
    LABELS = "lb"  # the caller's labels, JSON
    ATTEMPTS = "at"  # provider attempts so far
    SENSITIVE = "sen"  # '1' for a verification code: texts wiped once handed over
    EXPIRE_AT = "ex"  # when it is of no use any more, ms (0: never); never sent after
    STATUS = "st"  # the current Status number
    UPDATED = "ut"  # time of the last status change, ms
    PROVIDER = "pv"  # the provider that took (or refused) it
    PROVIDER_ID = "pid"  # the provider's id for it (delivery receipts name it)
    ERROR_CODE = "ec"  # the last error's code
    ERROR_REASON = "er"  # the last error, in words
    ERROR_RETRYABLE = "ery"  # '1' when the last error was retried
    # The status history, a line per change: "status|ms since CREATED|detail"
    # (lib.lua; absent in messages accepted before it, whose history is a list).
    HISTORY = "hs"
    COST = "co"  # estimated cost in micro-units of its provider's currency (set on SENT)
    COST_CURRENCY = "cu"  # that currency, ISO 4217 (absent: the provider has no prices)
    # Providers of its route that refused it, as "name code" joined by ',':
    # the next claim routes it past them (failover).
    REFUSED = "rf"
    # The provider a worker is handing it to now (set just before the vendor
    # call, cleared when the outcome is stored): a re-claim that finds it knows
    # that provider may have the message, and never routes it elsewhere.
    IN_FLIGHT = "ip"
    # '1' for a marketing message: its recipient's opt-out is checked again
    # just before it is sent (dispatch.dispatcher).
    MARKETING = "mk"


class EventField(enum.StrEnum):
    """Fields of a status event in a shard's event stream: one packed value
    (``PACKED``, lib.lua's packed_event()), or for events written before it
    (read until they age out of the retention) a field per value."""

    PACKED = "e"  # status|time|app number|id|batch|#ecode|#ereason|ecode ereason detail
    APP = "a"  # the app's key
    MESSAGE = "m"  # the message id
    BATCH = "b"  # the batch id ('' when sent alone)
    STATUS = "s"  # the Status number entered
    TIME = "t"  # when, ms
    DETAIL = "d"  # why, in words (also the history entry's detail)
    ERROR_CODE = "ec"  # the error's code, for FAILED and UNDELIVERED
    ERROR_REASON = "er"  # the error, in words


class QueueField(enum.StrEnum):
    """Fields of an entry of a shard's dispatch queue stream."""

    MEMBER = "m"  # ``app:id`` of the message to send


class CodeField(enum.StrEnum):
    """Fields of a verification code hash (``c:<scope>``)."""

    NONCE = "n"  # the code's nonce (its id names it)
    HASH = "h"  # keyed hash of the code
    LEFT = "left"  # wrong attempts left
    EXPIRES = "exp"  # expiry, ms


class AppField(enum.StrEnum):
    """Fields of an app hash."""

    NAME = "name"  # the app's name
    SECRET_SHA256 = "secret_sha256"  # hash of its secret
    CREATED = "created_ms"  # creation time, ms
    VERIFY_COUNTRIES = "verify_countries"  # calling codes its codes may go to, comma-separated
    VERIFY_PER_MINUTE = "verify_per_minute"  # its own verification codes per minute
    ACCEPT_PER_SECOND = "accept_per_second"  # its own accept rate, messages per second
    MAX_HELD_MESSAGES = "max_held_messages"  # its own cap on messages held in Redis
    DEFAULT_REGION = "default_region"  # region of numbers written without + ('' = E.164 only)
    MOBILE_ONLY = "mobile_only"  # '1': numbers that may be fixed lines are refused
    # Its own sending policy ('' or absent: the server's setting).
    SAME_CONTENT_SECONDS = "same_content_seconds"  # same-content window per number, s
    PER_NUMBER_DAY = "per_number_day"  # messages per number a day
    DAILY_CAP = "daily_cap"  # messages of the app a day
    QUIET_HOURS = "quiet_hours"  # marketing quiet hours, HH:MM-HH:MM or off


class TemplateField(enum.StrEnum):
    """Fields of a template head (``t:<id>``) and of its versions (``t:<id>:<n>``)."""

    VERSION = "v"  # head: the latest version number
    ETAG = "etag"  # head and version: the version's etag
    CREATED = "ctime"  # head and version: when the template was created, ms
    UPDATED = "mtime"  # version: when it was made, ms
    KIND = "kind"  # version: TemplateKind number
    BODY = "body"  # version: the body
    NAME = "name"  # version: the display name
    SIGN = "sign"  # version: the default sign name
    PROVIDER_IDS = "pids"  # version: vendor template id per provider, JSON


def shard_count_key() -> str:
    """The most shards the data has used, recorded at first start and raised
    when SMSGATE_SHARDS grows (store/layout.py)."""
    return f"{PREFIX}:{{layout}}:shards"


def shard_growth_key() -> str:
    """Hash of the last growth of the shard count: ``from`` (the count before),
    ``at`` (ms); beside the count, so one script raises both."""
    return f"{PREFIX}:{{layout}}:grown"


def lease_keys() -> tuple[str, str]:
    """The dispatchers' shard leases, in one slot: a sorted set of live
    processes by heartbeat expiry and a hash of shard -> "process expiry_ms"."""
    return f"{PREFIX}:{{leases}}:members", f"{PREFIX}:{{leases}}:owners"


def lease_state_keys() -> tuple[str, str]:
    """Beside ``lease_keys``, in the same slot: a hash of process -> the shard
    count it knows, and one of shard -> since when it has had no owner (ms)."""
    return f"{PREFIX}:{{leases}}:counts", f"{PREFIX}:{{leases}}:free"


def app_key(app: str) -> str:
    """Hash of one app: name, secret hash, creation time."""
    return f"{PREFIX}:{{app:{app}}}"


def accept_bucket_key(app: str) -> str:
    """Hash of the app's accept-rate token bucket (``tokens``, ``at`` ms), in the
    app's slot so one script reads the app's own rate with it."""
    return f"{PREFIX}:{{app:{app}}}:rate"


def optouts_key(app: str) -> str:
    """Sorted set of the app's opted-out numbers (E.164), every score 0 so it
    pages in number order (``ZRANGE BYLEX``); a slot of its own per app."""
    return f"{PREFIX}:{{opt:{app}}}"


def policy_prefix(app: str) -> str:
    """Prefix of the app's sending-policy keys, in its opt-out set's slot so one
    script checks opt-outs and counts caps (store/lua/policy_take.lua):
    ``sc:<tag>:<digest>`` same-content marks, ``nd:<day>:<tag>`` and
    ``ad:<day>`` per-number and app day counters, ``rq:<request id>`` a
    request's verdicts. ``<tag>`` is a keyed hash of the number (none in a
    key name)."""
    return f"{PREFIX}:{{opt:{app}}}:"


def replies_key(app: str) -> str:
    """Stream of the app's replies (fields ``p`` sender, ``t`` text, ``v``
    provider, ``o`` "1" when it opted out), capped; a slot of its own per app."""
    return f"{PREFIX}:{{mo:{app}}}"


def replies_feed_key() -> str:
    """Stream naming the app of each new reply (field ``a``), capped: the one
    stream every server's WatchReplies reader blocks on, in a slot of its own,
    to learn which apps' reply streams to read."""
    return f"{PREFIX}:{{mofeed}}"


def apps_index() -> str:
    """Set of every app key (for admin listing)."""
    return f"{PREFIX}:apps"


def revocations_channel() -> str:
    """Pub/sub channel on which the key of each revoked app (or app whose record
    changed) is published, so every server process drops it from its auth
    cache at once."""
    return f"{PREFIX}:apps:revoked"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys of one shard. ``prefix`` is passed to scripts that build message keys."""

    shard: int

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{sg{self.shard}}}:"

    @property
    def queue(self) -> str:
        """Stream of messages ready to dispatch (consumer group ``dispatch``)."""
        return self.prefix + "q"

    @property
    def due(self) -> str:
        """Sorted set of ``app:id`` scored by when they are due (schedule, retry)."""
        return self.prefix + "due"

    @property
    def receipts(self) -> str:
        """Sorted set of sent ``app:id`` scored by their receipt deadline."""
        return self.prefix + "dlr"

    @property
    def reconcile(self) -> str:
        """Sorted set of sent ``app:id`` scored by when to ask their vendor about
        them (only for providers that answer status queries)."""
        return self.prefix + "rcn"

    @property
    def events(self) -> str:
        """Stream of status events of every app in this shard."""
        return self.prefix + "ev"

    @property
    def app_numbers(self) -> str:
        """Hash of the numbers events name apps by: app -> number and
        ``#<number>`` -> app; ``#`` is the last number given, ``@`` the
        generation, new with every number given (lib.lua)."""
        return self.prefix + "an"

    def message(self, app: str, message_id: str) -> str:
        return f"{self.prefix}m:{app}:{message_id}"

    def history(self, app: str, message_id: str) -> str:
        """List of the history of a message accepted before its history moved
        into the hash (``MessageField.HISTORY``); lib.lua keeps appending to it."""
        return f"{self.prefix}h:{app}:{message_id}"

    def index(self, app: str) -> str:
        """The app's message ids in this shard, in chunks: a sorted set of chunk
        names (the lowest id each may hold), every chunk a sorted set of up to
        120 ids at ``<index>:<name>``, all scored 0 so they sort by id, which
        starts with the creation time. Small enough for Redis's compact
        encoding (accept.lua writes it, index_read.lua pages it newest first)."""
        return f"{self.prefix}ix:{app}"

    def legacy_index(self, app: str) -> str:
        """The app's ids in one sorted set, as written before the chunked
        ``index``: still read and pruned, never added to."""
        return f"{self.prefix}idx:{app}"

    def batch(self, app: str, batch_id: str) -> str:
        """List of a batch's message ids, in request order."""
        return f"{self.prefix}b:{app}:{batch_id}"

    def batch_text(self, app: str, batch_id: str) -> str:
        """The text a batch's recipients share, stored once (accept.lua); their
        hashes then hold no text of their own."""
        return f"{self.prefix}bt:{app}:{batch_id}"

    def idempotency(self, app: str, request_id: str) -> str:
        return f"{self.prefix}idem:{app}:{request_id}"

    def live(self, app: str) -> str:
        """Counter of the app's messages in this shard not yet terminal (lib.lua)."""
        return f"{self.prefix}live:{app}"

    def done(self, app: str, bucket: int) -> str:
        """Counter of the app's messages in this shard that ended in time bucket
        ``bucket`` (``HELD_BUCKETS`` per retention period); it expires when the
        last of them has (lib.lua)."""
        return f"{self.prefix}done:{app}:{bucket}"

    def template_uses(self, app: str, template_id: str) -> str:
        """Counter of the app's messages in this shard rendered from template
        ``template_id`` and not yet handed to a provider (SCHEDULED, QUEUED,
        SENDING); gone at 0 (accept.lua, lib.lua)."""
        return f"{self.prefix}tu:{app}:{template_id}"

    def usage(self, app: str, day: int) -> str:
        """Hash of the app's usage in this shard on ``day`` (days since 1970-01-01,
        UTC): ``<status>|<provider>|<country>|<currency>|n`` messages, ``|s``
        segments, ``|c`` cost in micro-units; it expires a retention after the
        day (lib.lua, store/usage.py)."""
        return f"{self.prefix}u:{app}:{day}"

    @property
    def usage_totals(self) -> str:
        """Hash of every app's usage in this shard since the data began, fields as
        ``usage`` (bounded: statuses x providers x countries); the metrics."""
        return self.prefix + "ut"

    @property
    def usage_config(self) -> str:
        """Hash lib.lua prices messages from: ``<provider>|<country>`` and
        ``<provider>|*`` (its default) micro-units per segment, ``<provider>|$``
        its currency, ``r`` how long usage is kept (s); written at start."""
        return self.prefix + "uc"

    def provider_id(self, provider: str, provider_message_id: str) -> str:
        """Maps a provider's message id back to ``app:id`` for delivery receipts,
        from SENT until a receipt ends the message (receipt.lua drops it)."""
        return f"{self.prefix}pm:{provider}:{provider_message_id}"


def verify_rate_key(app: str, window: int) -> str:
    """Counter of the app's verification codes issued in minute ``window``."""
    return f"{PREFIX}:{{vr:{app}}}:{window}"


@dataclass(frozen=True, slots=True)
class CodeKeys:
    """Keys of the verification codes of one phone number (its tag) of one app.
    ``prefix`` is passed to scripts that build keys from stored values."""

    app: str
    tag: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{v:{self.app}:{self.tag}}}:"

    def code(self, scope: str) -> str:
        """Hash of the live code of ``scope``: nonce, code hash, attempts left, expiry."""
        return f"{self.prefix}c:{scope}"

    def by_id(self, nonce: str) -> str:
        """The scope of the code with this nonce (verification by id)."""
        return f"{self.prefix}i:{nonce}"

    def cooldown(self, scope: str) -> str:
        """When a new code of ``scope`` may be issued (ms)."""
        return f"{self.prefix}cd:{scope}"

    @property
    def sends(self) -> str:
        """Sorted set of the codes issued in the last day, scored by ms (the caps)."""
        return f"{self.prefix}n"


@dataclass(frozen=True, slots=True)
class TemplateKeys:
    """Keys of the templates of one app. Template ids hold no ``:``, so a
    head key never reads as a version key."""

    app: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{tpl:{self.app}}}:"

    @property
    def index(self) -> str:
        """Sorted set of the app's template ids, all scored 0 so they page by id."""
        return self.prefix + "ids"

    def head(self, template_id: str) -> str:
        """Hash of a template's latest version number and etag."""
        return f"{self.prefix}t:{template_id}"

    def version(self, template_id: str, version: int) -> str:
        """Hash of one version: kind, body, names, sign, vendor ids, times, etag."""
        return f"{self.prefix}t:{template_id}:{version}"

    def idempotency(self, request_id: str) -> str:
        """The create call a ``request_id`` made: request fingerprint and template id."""
        return f"{self.prefix}idem:{request_id}"

    @property
    def signs(self) -> str:
        """Hash of the app's registered sign names, each with its registration ms."""
        return self.prefix + "signs"

    @property
    def default_sign(self) -> str:
        """The app's default sign name (absent: none)."""
        return self.prefix + "sign"


def breaker_key(provider: str) -> str:
    """Hash of a provider account's circuit breaker (``breaker_*.lua``): state,
    consecutive failures, open-until, probe lease, a window of call counts. Each
    account has a slot of its own (``{pv:<name>}``), its pace beside it."""
    return f"{PREFIX}:{{pv:{provider}}}:br"


def pace_key(provider: str) -> str:
    """Hash of a provider account's pace (``pace.lua``): its message and call
    token buckets and the factor a vendor's throttle lowered its rate by."""
    return f"{PREFIX}:{{pv:{provider}}}:pace"
