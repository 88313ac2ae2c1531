"""SendingService: accepts messages for an app and answers questions about them.

Sits between ``api`` (protobuf) and ``store`` (Redis): validates with the
domain checks, picks the shard and ids, and turns store outcomes into domain
errors. The verification service sends its codes through it too.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

from smsgate_server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from smsgate_server.domain.ids import new_message_id, shard_of
from smsgate_server.domain.message import HistoryEntry, NewMessage, StoredMessage
from smsgate_server.domain.status import Status
from smsgate_server.domain.validation import (
    check_labels,
    check_phone,
    check_request_id,
    check_send_at,
    check_sender,
    check_text,
)
from smsgate_server.store.keys import shard_for
from smsgate_server.store.messages import MessageStore

__all__ = ["SendCommand", "SendLimits", "SendingService"]


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Limits on what a send may ask for (from Settings)."""

    max_text_segments: int = 10
    max_labels: int = 16
    schedule_max_days: int = 35
    batch_max_recipients: int = 10_000


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


class SendingService:
    """Accepts, reads and cancels messages of one app at a time."""

    def __init__(self, store: MessageStore, limits: SendLimits) -> None:
        self.store = store
        self.limits = limits

    def _shard(self, app: str, request_id: str) -> int:
        if request_id:
            # Retries of one request id must meet the same idempotency key.
            return shard_for(f"{app}:{request_id}", self.store.shards)
        return secrets.randbelow(self.store.shards)

    async def send(self, app: str, cmd: SendCommand) -> StoredMessage:
        """Validate and accept one message; return it as stored."""
        now = self.store.now_ms()
        phone = check_phone(cmd.phone, "phone_number")
        metrics = check_text(cmd.text, "text", self.limits.max_text_segments)
        send_at = check_send_at(cmd.send_at_ms, now, self.limits.schedule_max_days)
        request_id = check_request_id(cmd.request_id)
        sender = check_sender(cmd.sender)
        check_labels(cmd.labels, self.limits.max_labels)

        shard = self._shard(app, request_id)
        message = NewMessage(
            id=new_message_id(now, shard),
            phone=phone,
            rendered=cmd.text,
            segments=metrics.segments,
            send_at_ms=send_at,
            text=cmd.text,
            sender=sender,
            labels_json=json.dumps(cmd.labels, sort_keys=True) if cmd.labels else "",
        )
        outcome = await self.store.accept(
            app,
            shard,
            [message],
            request_id=request_id,
            request_hash=hashlib.sha256(cmd.fingerprint).hexdigest(),
            remember=message.id,
            now_ms=now,
        )
        if outcome.kind == "conflict":
            raise AlreadyExists(
                f"request_id {request_id!r} was used for a different request",
                reason="REQUEST_ID_REUSED",
            )
        if outcome.kind == "dup":
            return await self.get(app, outcome.remembered)
        status = Status.SCHEDULED if send_at > now else Status.QUEUED
        return StoredMessage(
            id=message.id,
            batch_id="",
            phone=phone,
            text=cmd.text,
            template_id="",
            params_json="",
            rendered=cmd.text,
            segments=metrics.segments,
            status=status,
            created_ms=now,
            send_at_ms=send_at,
            updated_ms=now,
            provider="",
            provider_message_id="",
            attempts=0,
            error_code="",
            error_reason="",
            error_retryable=False,
            sender=sender,
            labels_json=message.labels_json,
            history=[HistoryEntry(status, now, "")],
        )

    def _locate(self, message_id: str) -> int:
        if not message_id:
            raise InvalidArgument.field("message_id", "is required")
        shard = shard_of(message_id, self.store.shards)
        if shard is None:
            raise NotFound(f"message {message_id!r} not found", reason="MESSAGE_NOT_FOUND")
        return shard

    async def get(self, app: str, message_id: str) -> StoredMessage:
        """The app's message with its history; NOT_FOUND for others' ids."""
        shard = self._locate(message_id)
        found = await self.store.get(app, shard, message_id)
        if found is None:
            raise NotFound(f"message {message_id!r} not found", reason="MESSAGE_NOT_FOUND")
        return found

    async def cancel(self, app: str, message_id: str) -> StoredMessage:
        """Cancel a message no provider has yet; FAILED_PRECONDITION after that."""
        shard = self._locate(message_id)
        (result,) = await self.store.cancel(app, shard, [message_id])
        if result == -1:
            raise NotFound(f"message {message_id!r} not found", reason="MESSAGE_NOT_FOUND")
        message = await self.get(app, message_id)
        if result == 0:
            raise FailedPrecondition(
                f"message is {message.status.name}; only SCHEDULED or QUEUED messages can be "
                "canceled",
                reason="NOT_CANCELABLE",
            )
        return message
