"""SendingService: accepts messages for an app and answers questions about them.

Sits between ``api`` (protobuf) and ``store`` (Redis): validates with the
domain checks, picks the shard and ids, and turns store outcomes into domain
errors. The verification service sends its codes through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from smsgate_server.config import Settings
from smsgate_server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Reason,
    SmsgateError,
    Unavailable,
)
from smsgate_server.domain.ids import new_batch_id, new_message_id, shard_for_key, shard_of_id
from smsgate_server.domain.message import HistoryEntry, NewMessage, StoredMessage
from smsgate_server.domain.phone import (
    E164_ONLY,
    CannotReceiveSms,
    InvalidPhoneNumber,
    NumberPolicy,
    recipient_e164,
)
from smsgate_server.domain.policy import SERVER_POLICY, PolicyOverrides, SendPolicy
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.status import Status
from smsgate_server.domain.templates import TemplateKind, check_template_id
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer
from smsgate_server.domain.validation import (
    Violations,
    check_id,
    check_labels,
    check_phone,
    check_recipient,
    check_recipient_params,
    check_request_id,
    check_send_at,
    check_sender,
    check_text,
)
from smsgate_server.services.admission import Admission
from smsgate_server.services.composing import Composed, Composer, PreparedTemplate, TemplateRef
from smsgate_server.services.policy import PolicyCheck, SendingPolicy
from smsgate_server.store.messages import MessageStore

__all__ = [
    "BatchCommand",
    "BatchOutcome",
    "ListQuery",
    "SendCommand",
    "SendLimits",
    "SendingService",
]

# Messages per accept script call: large enough to amortise the round trip,
# small enough that one script does not hold Redis for long.
ACCEPT_CHUNK = 500
# How many index entries one ListMessages call may examine for its filters,
# then the page comes back short (even empty) with a token to go on; and how
# many one step checks on two fields before it reads the matches whole.
LIST_SCAN_LIMIT = 1_000
LIST_WINDOW = 200
# Whole messages per read: decoding a read holds the event loop, and other
# calls run between reads.
LIST_READ = 25
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Limits on what a send may ask for; the values live once, in Settings."""

    max_text_segments: int
    max_labels: int
    schedule_max_days: int
    batch_max_recipients: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SendLimits:
        return cls(
            max_text_segments=settings.max_text_segments,
            max_labels=settings.max_labels,
            schedule_max_days=settings.schedule_max_days,
            batch_max_recipients=settings.batch_max_recipients,
        )


@dataclass(frozen=True, slots=True)
class SendCommand:
    """One message to accept. ``fingerprint`` identifies the request for
    idempotency (the deterministic bytes of the protobuf request)."""

    phone: str
    text: str
    send_at_ms: int = 0
    request_id: str = ""
    sender: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    fingerprint: bytes = b""
    # The text carries a secret (verification code): see NewMessage.sensitive.
    sensitive: bool = False
    # See NewMessage.expire_at_ms.
    expire_at_ms: int = 0
    # Template content instead of ``text``.
    template: TemplateRef | None = None
    # How the app's numbers are read (its default region, number types).
    numbers: NumberPolicy = E164_ONLY
    # The app's own sending-policy values (services.policy).
    policy: PolicyOverrides = SERVER_POLICY
    # The TemplateKind number the request names (0: none): what free text is for.
    kind: int = 0


@dataclass(frozen=True, slots=True)
class BatchCommand:
    """One text for many recipients (``phones`` in request order)."""

    phones: list[str]
    text: str
    send_at_ms: int = 0
    request_id: str = ""
    sender: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    fingerprint: bytes = b""
    # Template content instead of ``text``, with each recipient's own params
    # (in ``phones`` order; empty when none has any).
    template: TemplateRef | None = None
    recipient_params: list[Mapping[str, str]] = field(default_factory=list)
    numbers: NumberPolicy = E164_ONLY
    policy: PolicyOverrides = SERVER_POLICY
    kind: int = 0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per recipient, in request order: a message id or ``(reason, description)``."""

    batch_id: str
    results: list[str | tuple[Reason, str]]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters and position of ListMessages."""

    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""
    statuses: frozenset[Status] = frozenset()
    phone: str = ""
    batch_id: str = ""
    start_ms: int = 0
    end_ms: int = 0
    # The app's default region: ``phone`` may be in its national format.
    region: str = ""


class SendingService:
    """Accepts, reads and cancels messages of one app at a time."""

    def __init__(
        self,
        store: MessageStore,
        limits: SendLimits,
        tokens: TokenSealer,
        *,
        texts: TextCipher,
        admission: Admission | None = None,
        composer: Composer | None = None,
        policy: SendingPolicy | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.tokens = tokens
        # Seals the texts of sensitive messages (see NewMessage.sensitive).
        self.texts = texts
        # Each app's fair share (None: no per-app limits).
        self.admission = admission
        # Templates and signs for template content (None: free text only).
        self.composer = composer
        # Opt-outs, frequency caps, daily caps, quiet hours (None: none of them).
        self.policy = policy

    def _shard(self, app: str, request_id: str) -> int:
        if request_id:
            # Retries of one request id must meet the same idempotency key.
            return shard_for_key(f"{app}:{request_id}", self.store.write_shards)
        return secrets.randbelow(self.store.write_shards)

    async def _request_shard(self, app: str, request_id: str) -> int:
        """The shard of a new request; a retry of one accepted before the shard
        count grew goes back to the shard it was given then (one look-up, only
        for a while after a growth)."""
        earlier = self.store.shard_before_growth(app, request_id) if request_id else None
        if earlier is not None and await self.store.has_request(app, earlier, request_id):
            return earlier
        return self._shard(app, request_id)

    async def send(
        self, app: str, cmd: SendCommand, violations: Violations | None = None
    ) -> StoredMessage:
        """Validate and accept one message; return it as stored. Every bad field
        (with those the caller found in ``violations``) is one InvalidArgument."""
        if violations is None:
            violations = Violations()
        now = self.store.now_ms()
        phone = violations.check("", check_recipient, cmd.phone, "phone_number", cmd.numbers)
        prototype = self._prototype(cmd, now, violations)
        request_id = violations.check("", check_request_id, cmd.request_id)
        violations.raise_any()
        kind = TemplateKind.VERIFICATION if cmd.sensitive else _free_text_kind(cmd)
        if cmd.template is not None:
            prepared = await self._prepare(app, cmd.template)
            _check_template_kind(cmd, prepared)
            if not cmd.sensitive:
                kind = prepared.template.kind
            composed = prepared.compose(
                phone,
                cmd.template.params,
                max_segments=self.limits.max_text_segments,
                sender=prototype.sender,
            )
            prototype = _templated(prototype, prepared, composed)
        shard = await self._request_shard(app, request_id)
        await self._admit(app, 1, shard, request_id)
        policy = self.policy.policy_for(cmd.policy) if self.policy else None
        check = await self._check_one(
            app, policy, kind, phone, prototype.rendered, shard, request_id
        )
        message = dataclasses.replace(
            prototype,
            id=new_message_id(now, shard),
            phone=phone,
            sensitive=cmd.sensitive,
            expire_at_ms=cmd.expire_at_ms,
            send_at_ms=self._hold_until(policy, kind, phone, prototype.send_at_ms, now),
            marketing=kind is TemplateKind.MARKETING,
        )
        if message.sensitive:
            # Sealed before it leaves this process: Redis, its append-only file
            # and its replicas only ever hold the ciphertext.
            sealed = self.texts.seal(app, message.id, message.rendered)
            # Template params of a code hold the code: sealed as the text is.
            params = (
                self.texts.seal(app, message.id, message.params_json) if message.params_json else ""
            )
            message = dataclasses.replace(message, text="", rendered=sealed, params_json=params)
        try:
            outcome = await self.store.accept(
                app,
                shard,
                [message],
                request_id=request_id,
                request_hash=_request_hash(cmd.fingerprint, request_id),
                remember=message.id,
                now_ms=now,
            )
        except SmsgateError as exc:
            if _stored_nothing(exc):
                await _refund(check, [0])
            raise
        if outcome.kind != "new":
            # Stored by an earlier call, or not at all. This gives back only what
            # this call counted: a retry gets the earlier call's verdicts again,
            # counting nothing, so the earlier call's counts stay.
            await _refund(check, [0])
        if outcome.kind == "conflict":
            raise _request_id_reused(request_id)
        if outcome.kind == "dup":
            return await self.get(app, outcome.remembered)
        status = Status.SCHEDULED if message.send_at_ms > now else Status.QUEUED
        return StoredMessage(
            id=message.id,
            batch_id="",
            phone=phone,
            text=message.text,
            template_id=message.template_id,
            params_json=message.params_json,
            rendered=message.rendered,
            segments=message.segments,
            status=status,
            created_ms=now,
            send_at_ms=message.send_at_ms,
            updated_ms=now,
            provider="",
            provider_message_id="",
            attempts=0,
            error_code="",
            error_reason="",
            error_retryable=False,
            sender=message.sender,
            labels_json=message.labels_json,
            history=[HistoryEntry(status, now, "")],
            sensitive=cmd.sensitive,
            template_version=message.template_version,
            sign=message.sign,
            vendor_ids_json=message.vendor_ids_json,
            encoding=message.encoding,
        )

    async def _check_one(
        self,
        app: str,
        policy: SendPolicy | None,
        kind: TemplateKind,
        phone: str,
        rendered: str,
        shard: int,
        request_id: str,
    ) -> PolicyCheck | None:
        """The sending policy's check of one message; raises its refusal, unless
        the request was stored before (its retry answers from the record)."""
        if self.policy is None or policy is None:
            return None
        check = await self.policy.check(
            app, policy, kind, [(phone, rendered)], request_id=request_id
        )
        refusal = check.refusals[0]
        if refusal is not None:
            if request_id and await self.store.has_request(app, shard, request_id):
                return None
            raise refusal
        return check

    def _hold_until(
        self, policy: SendPolicy | None, kind: TemplateKind, phone: str, send_at_ms: int, now: int
    ) -> int:
        """``send_at_ms``, or for marketing due in quiet hours the time they end."""
        if self.policy is None or policy is None:
            return send_at_ms
        due = max(send_at_ms, now)
        held = self.policy.hold_until(policy, kind, phone, due)
        return held if held > due else send_at_ms

    async def _prepare(self, app: str, ref: TemplateRef) -> PreparedTemplate:
        if self.composer is None:
            raise InvalidArgument.field("template", "this server sends free text only")
        return await self.composer.prepare(app, ref)

    def _prototype(
        self, cmd: SendCommand | BatchCommand, now_ms: int, violations: Violations
    ) -> NewMessage:
        """Checks what a single send and a batch share (text or template id, send
        time, sender, labels) into ``violations``; returns the message every
        recipient gets, id and phone unset (meaningless when a check failed),
        and for template content not yet rendered."""
        limits = self.limits
        metrics = None
        if cmd.template is None:
            metrics = violations.check(None, check_text, cmd.text, "text", limits.max_text_segments)
        else:
            violations.check(
                "", check_template_id, cmd.template.template_id, "template.template_id"
            )
            if cmd.template.version < 0:
                violations.add(
                    InvalidArgument.field(
                        "template.version", "must be 0 (the latest) or a version number"
                    )
                )
        send_at = violations.check(
            0, check_send_at, cmd.send_at_ms, now_ms, limits.schedule_max_days
        )
        sender = violations.check("", check_sender, cmd.sender)
        violations.check(None, check_labels, cmd.labels, limits.max_labels)
        if cmd.kind not in _KINDS:
            violations.add(
                InvalidArgument.field(
                    "kind", "must be TEMPLATE_KIND_NOTIFICATION or TEMPLATE_KIND_MARKETING"
                )
            )
        elif cmd.kind == TemplateKind.VERIFICATION and cmd.template is None:
            violations.add(
                InvalidArgument.field(
                    "kind",
                    "free text cannot be a verification code: VerificationService.GenerateCode "
                    "sends codes",
                )
            )
        return NewMessage(
            id="",
            phone="",
            rendered=cmd.text,
            segments=metrics.segments if metrics else 0,
            send_at_ms=send_at,
            text=cmd.text,
            sender=sender,
            labels_json=json.dumps(cmd.labels, sort_keys=True) if cmd.labels else "",
            encoding=metrics.encoding if metrics else 0,
        )

    def _locate(self, any_id: str, kind: str = "message") -> int:
        """The shard of a message or batch id; NOT_FOUND for an id we never made."""
        check_id(any_id, f"{kind}_id")
        shard = shard_of_id(any_id, self.store.shards)
        if shard is None:
            # Not echoed: a malformed id may be anything, of any size.
            reason = Reason.BATCH_NOT_FOUND if kind == "batch" else Reason.MESSAGE_NOT_FOUND
            raise NotFound(f"{kind} not found", reason=reason)
        return shard

    async def get(self, app: str, message_id: str) -> StoredMessage:
        """The app's message with its history; NOT_FOUND for others' ids."""
        shard = self._locate(message_id)
        found = await self.store.get(app, shard, message_id)
        if found is None:
            raise NotFound(f"message {message_id!r} not found", reason=Reason.MESSAGE_NOT_FOUND)
        return found

    async def cancel(self, app: str, message_id: str) -> StoredMessage:
        """Cancel a message no provider has yet; FAILED_PRECONDITION after that."""
        shard = self._locate(message_id)
        (result,) = await self.store.cancel(app, shard, [message_id])
        if result == -1:
            raise NotFound(f"message {message_id!r} not found", reason=Reason.MESSAGE_NOT_FOUND)
        message = await self.get(app, message_id)
        if result == 0:
            raise FailedPrecondition(
                f"message is {message.status.name}; only SCHEDULED or QUEUED messages can be "
                "canceled",
                reason=Reason.NOT_CANCELABLE,
            )
        return message

    # --- batches -------------------------------------------------------

    def _check_recipient_count(self, phones: list[str]) -> None:
        if not phones:
            raise InvalidArgument.field("recipients", "at least one recipient is required")
        limit = self.limits.batch_max_recipients
        if len(phones) > limit:
            raise InvalidArgument.field(
                "recipients",
                f"has {len(phones)} recipients; at most {limit} are allowed per call",
                reason=Reason.TOO_MANY_RECIPIENTS,
            )

    def _check_recipients(
        self, phones: list[str], numbers: NumberPolicy
    ) -> list[str | tuple[Reason, str]]:
        """Per recipient its E.164 form, or why it is rejected. A number seen
        before in the request is rejected as a duplicate (one SMS per number)."""
        seen: set[str] = set()
        out: list[str | tuple[Reason, str]] = []
        for raw in phones:
            try:
                phone = recipient_e164(raw, numbers)
            except CannotReceiveSms as exc:
                out.append((Reason.NUMBER_CANNOT_RECEIVE_SMS, f"phone_number {exc}"))
                continue
            except InvalidPhoneNumber as exc:
                out.append((Reason.INVALID_PHONE_NUMBER, f"phone_number {exc}"))
                continue
            if phone in seen:
                out.append(
                    (Reason.DUPLICATE_RECIPIENT, f"{phone} is already a recipient of this batch")
                )
                continue
            seen.add(phone)
            out.append(phone)
        return out

    async def send_batch(
        self, app: str, cmd: BatchCommand, violations: Violations | None = None
    ) -> BatchOutcome:
        """Validate each recipient and accept the valid ones as one batch.

        Idempotent by request id: a retry returns the first batch, and
        accepts what the first call did not reach if it died part-way.
        """
        now = self.store.now_ms()
        if violations is None:
            violations = Violations()
        violations.check(None, self._check_recipient_count, cmd.phones)
        prototype = self._prototype(cmd, now, violations)
        request_id = violations.check("", check_request_id, cmd.request_id)
        if cmd.template is None:
            with_params = next((i for i, p in enumerate(cmd.recipient_params) if p), None)
            if with_params is not None:
                violations.add(
                    InvalidArgument.field(
                        f"recipients[{with_params}].params",
                        "per-recipient params need template content",
                    )
                )
        violations.raise_any()
        checked: list[str | NewMessage | tuple[Reason, str]] = [
            *self._check_recipients(cmd.phones, cmd.numbers)
        ]
        kind = _free_text_kind(cmd)
        if cmd.template is not None:
            prepared = await self._prepare(app, cmd.template)
            _check_template_kind(cmd, prepared)
            kind = prepared.template.kind
            checked = self._compose_each(prepared, cmd, checked, prototype)

        shard = await self._request_shard(app, request_id)
        batch_id = new_batch_id(now, shard)
        pending = [
            c if isinstance(c, NewMessage) else dataclasses.replace(prototype, phone=c)
            for c in checked
            if not isinstance(c, tuple)
        ]
        # Paid per chunk stored: a retry pays only for what the first call did not store.
        await self._admit(app, len(pending), shard, request_id, pay=False)
        policy = self.policy.policy_for(cmd.policy) if self.policy else None
        check: PolicyCheck | None = None
        if self.policy is not None and policy is not None:
            check = await self.policy.check(
                app,
                policy,
                kind,
                [(m.phone, m.rendered) for m in pending],
                request_id=request_id,
                batch=True,
            )
            refusals = iter(check.refusals)
            checked = [
                c if isinstance(c, tuple) else _rejection(next(refusals)) or c for c in checked
            ]
        # The policy's index of each message stored (refused ones are not).
        admitted = [i for i in range(len(pending)) if check is None or check.refusals[i] is None]
        # Ids in request order are ascending, so each chunk's ids follow the
        # last one's in the app index and fill its newest chunk (accept.lua)
        # instead of interleaving with them.
        new_ids = iter(sorted(new_message_id(now, shard) for _ in admitted))
        messages = [
            dataclasses.replace(
                pending[i],
                id=next(new_ids),
                send_at_ms=self._hold_until(
                    policy, kind, pending[i].phone, pending[i].send_at_ms, now
                ),
                marketing=kind is TemplateKind.MARKETING,
            )
            for i in admitted
        ]
        request_hash = _request_hash(cmd.fingerprint, request_id)
        ids: list[str] = []
        # Every chunk has its own idempotency record (the request id, then
        # "#1", "#2", ...) remembering the batch id and its message ids: a retry,
        # even one racing the first call, replays stored chunks and accepts
        # only those the first call never reached. Nothing is accepted twice.
        for k, i in enumerate(range(0, max(len(messages), 1), ACCEPT_CHUNK)):
            chunk = messages[i : i + ACCEPT_CHUNK]
            chunk_ids = [m.id for m in chunk]
            try:
                outcome = await self.store.accept(
                    app, shard, chunk, batch_id=batch_id,
                    request_id=f"{request_id}#{k}" if request_id and k else request_id,
                    request_hash=request_hash,
                    remember=batch_id + ";" + ",".join(chunk_ids),
                    now_ms=now,
                )  # fmt: skip
            except SmsgateError as exc:
                # The chunks after this one were not stored; this one perhaps
                # was (see _stored_nothing).
                unstored = i if _stored_nothing(exc) else i + ACCEPT_CHUNK
                await _refund_unstored(check, admitted, unstored, request_id)
                raise
            if outcome.kind == "conflict":
                await _refund_unstored(check, admitted, i, request_id)
                raise _request_id_reused(request_id)
            if outcome.kind == "dup":
                await _refund(check, admitted[i : i + ACCEPT_CHUNK])
                batch_id, _, stored = outcome.remembered.partition(";")
                chunk_ids = stored.split(",") if stored else []
            elif self.admission is not None and chunk:
                await self.admission.pay_accepted(app, len(chunk))
            ids += chunk_ids
        id_iter = iter(ids)
        results: list[str | tuple[Reason, str]] = [
            c if isinstance(c, tuple) else next(id_iter) for c in checked
        ]
        return BatchOutcome(batch_id, results)

    def _compose_each(
        self,
        prepared: PreparedTemplate,
        cmd: BatchCommand,
        checked: list[str | NewMessage | tuple[Reason, str]],
        prototype: NewMessage,
    ) -> list[str | NewMessage | tuple[Reason, str]]:
        """Each valid recipient's message, rendered with the shared params and
        its own; a recipient whose params are bad is rejected alone, its result
        naming each bad param."""
        shared = dict(cmd.template.params) if cmd.template else {}
        out: list[str | NewMessage | tuple[Reason, str]] = []
        for i, phone in enumerate(checked):
            if not isinstance(phone, str):
                out.append(phone)
                continue
            own = cmd.recipient_params[i] if i < len(cmd.recipient_params) else {}
            try:
                check_recipient_params(own)
                composed = prepared.compose(
                    phone,
                    {**shared, **own} if own else shared,
                    max_segments=self.limits.max_text_segments,
                    sender=prototype.sender,
                    params_field="params",
                )
            except InvalidArgument as exc:
                out.append((exc.reason, exc.message))
                continue
            out.append(_templated(dataclasses.replace(prototype, phone=phone), prepared, composed))
        return out

    async def cancel_batch(self, app: str, batch_id: str) -> tuple[int, int]:
        """Cancel what no provider has yet: (canceled, not canceled)."""
        shard = self._locate(batch_id, "batch")
        ids = await self.store.batch_ids(app, shard, batch_id)
        if not ids:
            raise NotFound(f"batch {batch_id!r} not found", reason=Reason.BATCH_NOT_FOUND)
        canceled = 0
        for i in range(0, len(ids), ACCEPT_CHUNK):
            results = await self.store.cancel(app, shard, ids[i : i + ACCEPT_CHUNK])
            canceled += sum(1 for r in results if r == 1)
        return canceled, len(ids) - canceled

    # --- listing -------------------------------------------------------

    async def list_messages(
        self, app: str, q: ListQuery, violations: Violations | None = None
    ) -> tuple[list[StoredMessage], str]:
        """A page of the app's messages, newest first, and the next page token.

        Filters on status and phone are applied while walking the id index; one
        call examines at most LIST_SCAN_LIMIT messages, so a page can come back
        short with a token to go on. A page size above MAX_PAGE_SIZE is lowered
        to it (AIP-158).
        """
        if violations is None:
            violations = Violations()
        if q.page_size < 0:
            violations.add(InvalidArgument.field("page_size", "must not be negative"))
        size = min(q.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        phone = (
            violations.check("", check_phone, q.phone, "phone_number", q.region) if q.phone else ""
        )
        if q.start_ms and q.end_ms and q.start_ms >= q.end_ms:
            violations.add(InvalidArgument.field("end_time", "must be after start_time"))
        if q.batch_id:
            violations.check("", check_id, q.batch_id, "batch_id")
        filters = _query_filters(q)
        cursor = "g"
        if q.page_token:
            cursor = violations.check("", self._open_page_token, app, q.page_token, filters)
        violations.raise_any()
        if q.end_ms:
            cursor = min(cursor, f"{q.end_ms:012x}")
        at_least = f"{q.start_ms:012x}" if q.start_ms else "0"
        batch_shard = self._locate(q.batch_id, "batch") if q.batch_id else None

        with self._query(app):
            page, cursor = await self._scan(app, q, phone, size, cursor, at_least, batch_shard)
        # Other calls get a turn between decoding the page and converting it.
        await asyncio.sleep(0)
        if not cursor:
            return page, ""
        return page, self.tokens.seal(TokenKind.PAGE, app, cursor.encode(), context=filters)

    def _query(self, app: str) -> AbstractContextManager[None]:
        """One of the app's expensive-call slots (none to take without admission)."""
        return self.admission.query(app) if self.admission else nullcontext()

    async def _admit(
        self, app: str, n: int, shard: int, request_id: str, *, pay: bool = True
    ) -> None:
        """Raise unless the app may store ``n`` more messages now (Admission.admit_accept)."""
        if self.admission is None:
            return
        try:
            await self.admission.admit_accept(app, n, pay=pay)
        except (RateLimited, QuotaExceeded):
            # A retry of a request stored before goes on: what was stored is
            # answered from its record, and the rest of a batch pays as it is stored.
            if request_id and await self.store.has_request(app, shard, request_id):
                return
            raise

    async def _scan(
        self,
        app: str,
        q: ListQuery,
        phone: str,
        size: int,
        cursor: str,
        at_least: str,
        batch_shard: int | None,
    ) -> tuple[list[StoredMessage], str]:
        """Up to ``size`` matching messages below ``cursor``, examining at most
        LIST_SCAN_LIMIT ids; and the id to go on below ('' when none is left).

        Without filters only the messages of the page are read. With filters a
        window of ids is checked on two fields, and only matches are read whole.
        """
        filtered = bool(q.statuses or phone)
        batch: list[str] | None = None
        if batch_shard is not None:
            ids = await self.store.batch_ids(app, batch_shard, q.batch_id)
            batch = sorted((i for i in ids if at_least <= i < cursor), reverse=True)
        page: list[StoredMessage] = []
        examined = 0
        while len(page) < size and examined < LIST_SCAN_LIMIT:
            want = min(LIST_WINDOW if filtered else size - len(page), LIST_SCAN_LIMIT - examined)
            if batch is not None:
                assert batch_shard is not None
                refs = [(batch_shard, i) for i in batch[examined : examined + want]]
            else:
                refs = await self._index_window(app, below=cursor, at_least=at_least, limit=want)
            if not refs:
                return page, ""
            examined += len(refs)
            if filtered:
                heads = await self.store.heads(app, refs)
                gone = [ref for ref, h in zip(refs, heads, strict=True) if h is None]
                matches = [
                    ref
                    for ref, h in zip(refs, heads, strict=True)
                    if h is not None
                    and (not q.statuses or h[0] in q.statuses)
                    and (not phone or h[1] == phone)
                ]
            else:
                gone, matches = [], refs
            taken = matches[: size - len(page)]
            found: list[StoredMessage | None] = []
            for i in range(0, len(taken), LIST_READ):
                found += await self.store.get_many(app, taken[i : i + LIST_READ])
            page += [m for m in found if m is not None]
            gone += [ref for ref, m in zip(taken, found, strict=True) if m is None]
            if gone and batch is None:
                await self.store.forget(app, gone)
            # Where the next call goes on: after the last message taken when the
            # page filled up inside this window, else after the whole window.
            cursor = taken[-1][1] if len(taken) < len(matches) else refs[-1][1]
        return page, cursor

    def _open_page_token(self, app: str, token: str, filters: bytes) -> str:
        """The index position a page token of ``app`` issued for ``filters`` holds."""
        try:
            return self.tokens.open(TokenKind.PAGE, app, token, context=filters).decode()
        except InvalidToken:
            # Not echoed: a forged token may be anything, of any size.
            raise InvalidArgument.field(
                "page_token",
                "is not a token of an earlier call with the same filters",
                reason=Reason.INVALID_PAGE_TOKEN,
            ) from None

    async def _index_window(
        self, app: str, *, below: str, at_least: str, limit: int
    ) -> list[tuple[int, str]]:
        """The newest ``limit`` ids below ``below`` across every shard."""
        pages = await self.store.index_pages(app, below=below, at_least=at_least, limit=limit)
        merged = [(shard, i) for shard, ids in enumerate(pages) for i in ids]
        merged.sort(key=lambda ref: ref[1], reverse=True)
        return merged[:limit]


def _templated(message: NewMessage, prepared: PreparedTemplate, composed: Composed) -> NewMessage:
    """``message`` as rendered from a template for one recipient."""
    return dataclasses.replace(
        message,
        rendered=composed.rendered,
        segments=composed.segments,
        encoding=composed.encoding,
        sender=composed.sender,
        template_id=prepared.template.id,
        template_version=prepared.template.version,
        params_json=composed.params_json,
        sign=prepared.sign,
        vendor_ids_json=prepared.vendor_ids_json,
    )


# The kinds a request may name (0: none).
_KINDS = frozenset({0, *(k.value for k in TemplateKind)})


def _free_text_kind(cmd: SendCommand | BatchCommand) -> TemplateKind:
    """What free text is for: the kind the request names, else a notification."""
    return TemplateKind(cmd.kind) if cmd.kind else TemplateKind.NOTIFICATION


def _check_template_kind(cmd: SendCommand | BatchCommand, prepared: PreparedTemplate) -> None:
    """A kind named beside template content must be the template's."""
    own = prepared.template.kind
    if cmd.kind and cmd.kind != own:
        raise InvalidArgument.field(
            "kind",
            f"is {TemplateKind(cmd.kind).name}, but template {prepared.template.id!r} is "
            f"{own.name}; leave it unset for template content",
        )


def _rejection(refusal: SmsgateError | None) -> tuple[Reason, str] | None:
    """A batch recipient's result for the policy's refusal (None: admitted)."""
    return None if refusal is None else (refusal.reason, refusal.message)


async def _refund(check: PolicyCheck | None, indexes: list[int]) -> None:
    """Give back the policy's counts of messages not stored; a failure to is
    logged by the store and left to the counters' expiry."""
    if check is None:
        return
    with contextlib.suppress(SmsgateError):
        await check.refund(indexes)


def _stored_nothing(exc: SmsgateError) -> bool:
    """Whether an accept that raised ``exc`` is known to have stored nothing (a
    refusal such as STORAGE_FULL). Not so for Unavailable: StoredUnconfirmed is
    stored, and a Redis failure may come after the script ran. What may be
    stored will be sent, so its counts stay: counting too many (until the
    counters expire) is the safer mistake."""
    return not isinstance(exc, Unavailable)


async def _refund_unstored(
    check: PolicyCheck | None, admitted: list[int], first: int, request_id: str
) -> None:
    """Give back the counts of a batch's messages from ``first`` on, which this
    call did not store. With a request id only from the first (``first`` 0):
    once a chunk of the request is stored, its retry gets the policy's verdicts
    again and stores the rest without counting them, so their counts stay."""
    if request_id and first:
        return
    await _refund(check, admitted[first:])


def _request_hash(fingerprint: bytes, request_id: str) -> str:
    """What a request id is bound to; nothing without one."""
    return hashlib.sha256(fingerprint).hexdigest() if request_id else ""


def _request_id_reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was used for a different request",
        reason=Reason.REQUEST_ID_REUSED,
    )


def _query_filters(q: ListQuery) -> bytes:
    """The filters a page token is bound to."""
    parts = [sorted(int(s) for s in q.statuses), q.phone, q.batch_id, q.start_ms, q.end_ms]
    return json.dumps(parts).encode()
