"""Request checks shared by the send paths; each names the field it checks."""

from __future__ import annotations

import re

from smsgate_server.domain.encoding import TextMetrics, measure
from smsgate_server.domain.errors import FieldViolation, InvalidArgument, Reason
from smsgate_server.domain.phone import InvalidPhoneNumber, normalize_e164

__all__ = [
    "check_labels",
    "check_phone",
    "check_request_id",
    "check_send_at",
    "check_sender",
    "check_text",
]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# Scheduling a moment that has just passed (client clock skew) means "now".
SEND_AT_GRACE_MS = 60_000


def check_phone(value: str, field: str) -> str:
    """The E.164 form of ``value``; InvalidArgument naming ``field`` otherwise."""
    try:
        return normalize_e164(value)
    except InvalidPhoneNumber as exc:
        raise InvalidArgument.field(field, str(exc), reason=Reason.INVALID_PHONE_NUMBER) from None


def check_text(value: str, field: str, max_segments: int) -> TextMetrics:
    """Encoding and segments of free text; empty or over ``max_segments`` is rejected."""
    if not value.strip():
        raise InvalidArgument.field(
            field, "is required and must not be blank", reason=Reason.EMPTY_CONTENT
        )
    if len(value) > max_segments * 160:
        # Too long in any encoding; measuring megabytes would stall the loop.
        raise InvalidArgument.field(
            field,
            f"has {len(value)} characters; at most {max_segments} SMS segments are allowed",
            reason=Reason.CONTENT_TOO_LONG,
        )
    metrics = measure(value)
    if metrics.segments > max_segments:
        raise InvalidArgument.field(
            field,
            f"needs {metrics.segments} SMS segments ({metrics.characters} "
            f"{metrics.encoding.name} characters); at most {max_segments} are allowed",
            reason=Reason.CONTENT_TOO_LONG,
        )
    return metrics


def check_send_at(send_at_ms: int, now_ms: int, max_days: int, field: str = "send_time") -> int:
    """``send_time`` (0 = now) as ms; past or further than ``max_days`` is rejected."""
    if send_at_ms == 0:
        return now_ms
    if send_at_ms < now_ms - SEND_AT_GRACE_MS:
        raise InvalidArgument.field(field, "is in the past", reason=Reason.SEND_TIME_IN_PAST)
    if send_at_ms > now_ms + max_days * 86_400_000:
        raise InvalidArgument.field(
            field, f"is more than {max_days} days ahead", reason=Reason.SEND_TIME_TOO_FAR
        )
    return max(send_at_ms, now_ms)


def check_request_id(value: str, field: str = "request_id") -> str:
    """Empty, or 1-128 characters of ``[A-Za-z0-9._:/=+-]`` (UUIDs fit)."""
    if value and not _REQUEST_ID.match(value):
        raise InvalidArgument.field(
            field, "must be 1-128 characters of letters, digits and ._:/=+-"
        )
    return value


def check_sender(value: str, field: str = "sender_id") -> str:
    """At most 32 characters; vendors reject longer signatures and sender ids."""
    if len(value) > 32:
        raise InvalidArgument.field(field, "must be at most 32 characters")
    return value


def check_labels(labels: dict[str, str], max_labels: int, field: str = "labels") -> None:
    """At most ``max_labels``; keys like ``order_id``; values up to 256 characters."""
    if len(labels) > max_labels:
        raise InvalidArgument.field(field, f"at most {max_labels} labels are allowed")
    bad = [
        FieldViolation(f"{field}[{key[:64]!r}]", "key must match [a-z][a-z0-9_.-]{0,62}")
        for key in labels
        if not _LABEL_KEY.match(key)
    ] + [
        FieldViolation(f"{field}[{key[:64]!r}]", "value must be at most 256 characters")
        for key, value in labels.items()
        if len(value) > 256
    ]
    if bad:
        raise InvalidArgument(bad)
