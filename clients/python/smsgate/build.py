"""What the sync and async clients share: request building, the terminal
statuses, which errors a watch outlives, and the watch's token file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from google.protobuf import timestamp_pb2

from smsgate.errors import Error, ResourceExhausted, Unavailable
from smsgate.v1 import message_pb2, sms_service_pb2, template_service_pb2

__all__ = [
    "TERMINAL",
    "Recipient",
    "batch_request",
    "load_token",
    "new_request_id",
    "outlives",
    "save_token",
    "send_request",
]

S = message_pb2.MessageStatus
#: The statuses a message ends in; it never changes again once in one.
TERMINAL: frozenset[message_pb2.MessageStatus.ValueType] = frozenset(
    {
        S.MESSAGE_STATUS_DELIVERED,
        S.MESSAGE_STATUS_UNDELIVERED,
        S.MESSAGE_STATUS_FAILED,
        S.MESSAGE_STATUS_CANCELED,
        S.MESSAGE_STATUS_EXPIRED,
    }
)

#: A batch recipient: a phone number, or a phone number with its own template params.
Recipient = str | tuple[str, Mapping[str, str]]


def _content(
    text: str | None,
    template_id: str | None,
    params: Mapping[str, str] | None,
    template_version: int,
    sign_name: str,
) -> dict[str, object]:
    if (text is None) == (template_id is None):
        raise TypeError("give either text or template_id")
    if text is not None:
        return {"text": text}
    return {
        "template": message_pb2.TemplateContent(
            template_id=template_id or "",
            params=params,
            version=template_version,
            sign_name=sign_name,
        )
    }


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("send_time must be timezone-aware")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def new_request_id() -> str:
    """A fresh idempotency key (AIP-155) for a request the caller gave none."""
    return str(uuid.uuid4())


def send_request(
    phone_number: str,
    text: str | None,
    *,
    template_id: str | None,
    params: Mapping[str, str] | None,
    template_version: int,
    sign_name: str,
    send_time: datetime | None,
    sender_id: str,
    labels: Mapping[str, str] | None,
    request_id: str | None,
    marketing: bool = False,
) -> sms_service_pb2.SendSmsRequest:
    """A SendSmsRequest; a fresh uuid4 request id unless one is given, so that a
    retry (gRPC's, or the caller's with the same id) never sends twice."""
    return sms_service_pb2.SendSmsRequest(
        phone_number=phone_number,
        send_time=_timestamp(send_time),
        request_id=request_id or new_request_id(),
        sender_id=sender_id,
        labels=labels,
        kind=_kind(marketing),
        **_content(text, template_id, params, template_version, sign_name),  # type: ignore[arg-type]
    )


def batch_request(
    recipients: Iterable[Recipient],
    text: str | None,
    *,
    template_id: str | None,
    params: Mapping[str, str] | None,
    template_version: int,
    sign_name: str,
    send_time: datetime | None,
    sender_id: str,
    labels: Mapping[str, str] | None,
    request_id: str | None,
    marketing: bool = False,
) -> sms_service_pb2.BatchSendRequest:
    """A BatchSendRequest, with a fresh uuid4 request id unless one is given."""
    entries = [
        sms_service_pb2.BatchRecipient(phone_number=r)
        if isinstance(r, str)
        else sms_service_pb2.BatchRecipient(phone_number=r[0], params=r[1])
        for r in recipients
    ]
    return sms_service_pb2.BatchSendRequest(
        recipients=entries,
        send_time=_timestamp(send_time),
        request_id=request_id or new_request_id(),
        sender_id=sender_id,
        labels=labels,
        kind=_kind(marketing),
        **_content(text, template_id, params, template_version, sign_name),  # type: ignore[arg-type]
    )


def _kind(marketing: bool) -> template_service_pb2.TemplateKind.ValueType:
    """The kind free text names: marketing (the opt-out list and quiet hours
    apply) or unset (a notification; a template's own kind applies)."""
    return (
        template_service_pb2.TEMPLATE_KIND_MARKETING
        if marketing
        else template_service_pb2.TEMPLATE_KIND_UNSPECIFIED
    )


def outlives(error: Error) -> bool:
    """Whether a watch reconnects after ``error``: the server went away or is
    shutting down (UNAVAILABLE), or asked it to come back later (a subscriber
    that fell behind, a busy app: RESOURCE_EXHAUSTED with a RetryInfo delay)."""
    return isinstance(error, Unavailable) or (
        isinstance(error, ResourceExhausted) and error.retry_after is not None
    )


def load_token(path: Path | None) -> str:
    """The resume token saved in ``path``; empty when there is none yet."""
    if path is None or not path.exists():
        return ""
    return path.read_text().strip()


def save_token(path: Path, token: str) -> None:
    """Replace the token in ``path`` atomically: a crash leaves the old or the new one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(token)
    os.replace(partial, path)
