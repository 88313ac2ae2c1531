"""Domain errors: plain exceptions that ``api.errors`` maps to gRPC statuses.

::

    SmsgateError
    ├── InvalidArgument        INVALID_ARGUMENT + BadRequest (field violations)
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── Unauthenticated        UNAUTHENTICATED
    ├── RateLimited            RESOURCE_EXHAUSTED + RetryInfo
    ├── QuotaExceeded          RESOURCE_EXHAUSTED + QuotaFailure (+ RetryInfo)
    ├── OutOfRange             OUT_OF_RANGE
    ├── Aborted                ABORTED
    └── Unavailable            UNAVAILABLE
        └── StoredUnconfirmed  UNAVAILABLE (stored, no replica confirmed it in time)

Every error carries a ``Reason`` that reaches clients in
``google.rpc.ErrorInfo`` (domain ``smsgate.v1``); the proto enum
``smsgate.v1.ErrorReason`` lists the same reasons, and a test keeps them equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "QuotaExceeded",
    "QuotaViolation",
    "RateLimited",
    "Reason",
    "SmsgateError",
    "StoredUnconfirmed",
    "Unauthenticated",
    "Unavailable",
]


class Reason(enum.StrEnum):
    """Every ``ErrorInfo.reason`` (and batch ``RecipientError.reason``) the server
    returns: ``smsgate.v1.ErrorReason`` without its ``ERROR_REASON_`` prefix."""

    # INVALID_ARGUMENT
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_PHONE_NUMBER = "INVALID_PHONE_NUMBER"
    EMPTY_CONTENT = "EMPTY_CONTENT"
    CONTENT_TOO_LONG = "CONTENT_TOO_LONG"
    SEND_TIME_IN_PAST = "SEND_TIME_IN_PAST"
    SEND_TIME_TOO_FAR = "SEND_TIME_TOO_FAR"
    TOO_MANY_RECIPIENTS = "TOO_MANY_RECIPIENTS"
    DUPLICATE_RECIPIENT = "DUPLICATE_RECIPIENT"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    INVALID_RESUME_TOKEN = "INVALID_RESUME_TOKEN"
    INVALID_SCOPE = "INVALID_SCOPE"
    EMPTY_CODE = "EMPTY_CODE"
    VERIFICATION_UNNAMED = "VERIFICATION_UNNAMED"
    INVALID_TEMPLATE_BODY = "INVALID_TEMPLATE_BODY"
    INVALID_TEMPLATE_KIND = "INVALID_TEMPLATE_KIND"
    INVALID_TEMPLATE_PARAMS = "INVALID_TEMPLATE_PARAMS"
    INVALID_SIGN_NAME = "INVALID_SIGN_NAME"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    NUMBER_CANNOT_RECEIVE_SMS = "NUMBER_CANNOT_RECEIVE_SMS"
    # NOT_FOUND
    MESSAGE_NOT_FOUND = "MESSAGE_NOT_FOUND"
    BATCH_NOT_FOUND = "BATCH_NOT_FOUND"
    VERIFICATION_NOT_FOUND = "VERIFICATION_NOT_FOUND"
    TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
    SIGN_NAME_NOT_FOUND = "SIGN_NAME_NOT_FOUND"
    # ALREADY_EXISTS
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    TEMPLATE_ALREADY_EXISTS = "TEMPLATE_ALREADY_EXISTS"
    SIGN_NAME_ALREADY_EXISTS = "SIGN_NAME_ALREADY_EXISTS"
    # FAILED_PRECONDITION
    NOT_CANCELABLE = "NOT_CANCELABLE"
    COUNTRY_NOT_ALLOWED = "COUNTRY_NOT_ALLOWED"
    SIGN_NOT_REGISTERED = "SIGN_NOT_REGISTERED"
    TEMPLATE_IN_USE = "TEMPLATE_IN_USE"
    TOO_MANY_SIGN_NAMES = "TOO_MANY_SIGN_NAMES"
    RECIPIENT_OPTED_OUT = "RECIPIENT_OPTED_OUT"
    # ABORTED
    ETAG_MISMATCH = "ETAG_MISMATCH"
    CONCURRENT_UPDATE = "CONCURRENT_UPDATE"
    # UNAUTHENTICATED
    MISSING_CREDENTIALS = "MISSING_CREDENTIALS"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    # RESOURCE_EXHAUSTED
    APP_VERIFY_RATE_LIMITED = "APP_VERIFY_RATE_LIMITED"
    RESEND_COOLDOWN = "RESEND_COOLDOWN"
    PHONE_CODE_CAP = "PHONE_CODE_CAP"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    APP_RATE_LIMITED = "APP_RATE_LIMITED"
    APP_HELD_MESSAGES_CAP = "APP_HELD_MESSAGES_CAP"
    STORAGE_FULL = "STORAGE_FULL"
    TOO_MANY_CONCURRENT_QUERIES = "TOO_MANY_CONCURRENT_QUERIES"
    SAME_CONTENT_TOO_SOON = "SAME_CONTENT_TOO_SOON"
    PHONE_DAILY_CAP = "PHONE_DAILY_CAP"
    APP_DAILY_CAP = "APP_DAILY_CAP"
    # OUT_OF_RANGE
    RESUME_TOKEN_EXPIRED = "RESUME_TOKEN_EXPIRED"
    # UNAVAILABLE
    UNAVAILABLE = "UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    # INTERNAL
    INTERNAL = "INTERNAL"


class SmsgateError(Exception):
    """Base of every error a client may see."""

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (``recipients[3].phone_number``) and why."""

    field: str
    description: str


class InvalidArgument(SmsgateError):
    """The request is malformed; ``violations`` name the fields."""

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        *,
        reason: Reason = Reason.INVALID_ARGUMENT,
    ) -> None:
        self.violations = violations if isinstance(violations, list) else [violations]
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text, reason=reason)

    @classmethod
    def field(
        cls, field: str, description: str, *, reason: Reason = Reason.INVALID_ARGUMENT
    ) -> InvalidArgument:
        """One violation of one field."""
        return cls(FieldViolation(field, description), reason=reason)


class NotFound(SmsgateError):
    """The named resource does not exist for the calling app."""


class AlreadyExists(SmsgateError):
    """The resource exists, or a request id was reused with a different request."""


class FailedPrecondition(SmsgateError):
    """The request is valid but the system is not in a state that allows it."""


class Unauthenticated(SmsgateError):
    """No credentials, or credentials that do not match an app."""


class RateLimited(SmsgateError):
    """Too soon: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float, reason: Reason) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One exhausted quota: what it limits (``phone:+86...:hour``) and how."""

    subject: str
    description: str


class QuotaExceeded(SmsgateError):
    """A quota is used up; with ``retry_after``, when it has room again (RetryInfo too)."""

    def __init__(
        self,
        violations: list[QuotaViolation],
        *,
        reason: Reason,
        retry_after: float | None = None,
    ) -> None:
        self.violations = violations
        self.retry_after = retry_after
        super().__init__("; ".join(v.description for v in violations), reason=reason)


class OutOfRange(SmsgateError):
    """A position (such as a resume token) is outside what is kept."""


class Aborted(SmsgateError):
    """A concurrency conflict (etag mismatch); read again and retry."""


class Unavailable(SmsgateError):
    """The service cannot answer now (shutting down, Redis unreachable); retry."""

    def __init__(self, message: str, *, reason: Reason = Reason.UNAVAILABLE) -> None:
        super().__init__(message, reason=reason)


class StoredUnconfirmed(Unavailable):
    """Stored, but fewer replicas than asked confirmed it in time: a failover
    could still lose it. Answered as any Unavailable (retry with the same
    request_id), yet what was stored stays counted: it will be sent."""
