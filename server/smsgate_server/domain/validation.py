"""Request checks shared by the send paths; each names the field it checks.

Every string and list a request carries has a maximum, checked before the
value is parsed, cached or sent to Redis. ``Violations`` runs the checks of
one request and reports every bad field at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import ParamSpec, TypeVar

from smsgate_server.domain.encoding import TextMetrics, measure
from smsgate_server.domain.errors import FieldViolation, InvalidArgument, Reason
from smsgate_server.domain.phone import (
    CannotReceiveSms,
    InvalidPhoneNumber,
    NumberPolicy,
    normalize_e164,
    recipient_e164,
)

__all__ = [
    "MAX_ID_CHARS",
    "MAX_LABEL_KEY_CHARS",
    "MAX_LABEL_VALUE_CHARS",
    "MAX_RECIPIENT_PARAMS",
    "MAX_RECIPIENT_PARAMS_BYTES",
    "MAX_REQUEST_ID_CHARS",
    "MAX_SENDER_CHARS",
    "MAX_STATUSES",
    "TEXT_CHARS_PER_SEGMENT",
    "Violations",
    "check_count",
    "check_id",
    "check_labels",
    "check_phone",
    "check_recipient",
    "check_recipient_params",
    "check_request_id",
    "check_send_at",
    "check_sender",
    "check_text",
]

P = ParamSpec("P")
T = TypeVar("T")

# Message, batch and verification ids are 26-48 characters today; 64 leaves
# room for another format without letting megabytes through.
MAX_ID_CHARS = 64
# A status filter names each of the nine statuses at most once or twice.
MAX_STATUSES = 16

MAX_REQUEST_ID_CHARS = 128
# Vendors reject longer signatures and sender ids.
MAX_SENDER_CHARS = 32
MAX_LABEL_KEY_CHARS = 63
MAX_LABEL_VALUE_CHARS = 256
# One BatchSend recipient's own template params: at most this many, of at most
# this many UTF-8 bytes of names and values together. Names, amounts, order
# numbers fit; the bound keeps the largest valid BatchSend (api/limits.py) a
# few MiB rather than a gigabyte.
MAX_RECIPIENT_PARAMS = 32
MAX_RECIPIENT_PARAMS_BYTES = 256
# The most characters one SMS segment holds (GSM-7, unsplit): text longer than
# segments x this is too long in any encoding, and is refused unmeasured.
TEXT_CHARS_PER_SEGMENT = 160
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# Scheduling a moment that has just passed (client clock skew) means "now".
SEND_AT_GRACE_MS = 60_000


class Violations:
    """The field violations of one request, collected check by check so the
    caller hears of every bad field in one INVALID_ARGUMENT.

    Keeps the violations, not the exceptions: an exception's traceback holds
    the frames that raised it, and with them the request."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        self.reasons: set[Reason] = set()

    def check(self, fallback: T, check: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``check(*args, **kwargs)``; ``fallback`` when it raises InvalidArgument,
        which is kept for ``raise_any``."""
        try:
            return check(*args, **kwargs)
        except InvalidArgument as exc:
            self.add(exc)
            return fallback

    def add(self, error: InvalidArgument) -> None:
        """Keep the violations of an error found without ``check``."""
        self.violations += error.violations
        self.reasons.add(error.reason)

    def raise_any(self) -> None:
        """Raise one InvalidArgument with every violation kept, if there are any.
        Its reason is the one they share, else the general INVALID_ARGUMENT."""
        if not self.violations:
            return
        (reason,) = self.reasons if len(self.reasons) == 1 else {Reason.INVALID_ARGUMENT}
        raise InvalidArgument(self.violations, reason=reason)


def check_id(value: str, field: str) -> str:
    """A message, batch or verification id: required, at most MAX_ID_CHARS."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument.field(field, f"must be at most {MAX_ID_CHARS} characters")
    return value


def check_count(values: Collection[object], limit: int, field: str) -> None:
    """A repeated field with at most ``limit`` entries."""
    if len(values) > limit:
        raise InvalidArgument.field(
            field, f"has {len(values)} entries; at most {limit} are allowed"
        )


def check_phone(value: str, field: str, region: str = "") -> str:
    """The E.164 form of ``value`` (E.164, or the national format of ``region``
    when given); InvalidArgument naming ``field`` otherwise."""
    try:
        return normalize_e164(value, region)
    except InvalidPhoneNumber as exc:
        raise InvalidArgument.field(field, str(exc), reason=Reason.INVALID_PHONE_NUMBER) from None


def check_recipient(value: str, field: str, policy: NumberPolicy) -> str:
    """The E.164 form of a recipient (E.164 or the app's national format) that
    can receive SMS; InvalidArgument naming ``field`` otherwise."""
    try:
        return recipient_e164(value, policy)
    except CannotReceiveSms as exc:
        raise InvalidArgument.field(
            field, str(exc), reason=Reason.NUMBER_CANNOT_RECEIVE_SMS
        ) from None
    except InvalidPhoneNumber as exc:
        raise InvalidArgument.field(field, str(exc), reason=Reason.INVALID_PHONE_NUMBER) from None


def check_recipient_params(params: Mapping[str, str], field: str = "params") -> None:
    """A recipient's own params: at most MAX_RECIPIENT_PARAMS entries and
    MAX_RECIPIENT_PARAMS_BYTES bytes of names and values."""
    if len(params) > MAX_RECIPIENT_PARAMS:
        raise InvalidArgument.field(
            field,
            f"has {len(params)} entries; at most {MAX_RECIPIENT_PARAMS} are allowed",
            reason=Reason.INVALID_TEMPLATE_PARAMS,
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in params.items())
    if size > MAX_RECIPIENT_PARAMS_BYTES:
        raise InvalidArgument.field(
            field,
            f"has {size} bytes of names and values; at most {MAX_RECIPIENT_PARAMS_BYTES} are "
            "allowed",
            reason=Reason.INVALID_TEMPLATE_PARAMS,
        )


def check_text(value: str, field: str, max_segments: int) -> TextMetrics:
    """Encoding and segments of free text; empty or over ``max_segments`` is rejected."""
    if not value.strip():
        raise InvalidArgument.field(
            field, "is required and must not be blank", reason=Reason.EMPTY_CONTENT
        )
    if len(value) > max_segments * TEXT_CHARS_PER_SEGMENT:
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
    """At most MAX_SENDER_CHARS characters."""
    if len(value) > MAX_SENDER_CHARS:
        raise InvalidArgument.field(field, f"must be at most {MAX_SENDER_CHARS} characters")
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
        FieldViolation(
            f"{field}[{key[:64]!r}]", f"value must be at most {MAX_LABEL_VALUE_CHARS} characters"
        )
        for key, value in labels.items()
        if len(value) > MAX_LABEL_VALUE_CHARS
    ]
    if bad:
        raise InvalidArgument(bad)
