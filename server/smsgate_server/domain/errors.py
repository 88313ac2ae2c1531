"""Domain errors: plain exceptions that ``api.errors`` maps to gRPC statuses.

::

    SmsgateError
    ├── InvalidArgument        INVALID_ARGUMENT + BadRequest (field violations)
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── Unauthenticated        UNAUTHENTICATED
    ├── RateLimited            RESOURCE_EXHAUSTED + RetryInfo
    ├── QuotaExceeded          RESOURCE_EXHAUSTED + QuotaFailure
    ├── OutOfRange             OUT_OF_RANGE
    ├── Aborted                ABORTED
    ├── Unavailable            UNAVAILABLE
    └── NotImplementedYet      UNIMPLEMENTED

Every error carries an UPPER_SNAKE ``reason`` that reaches clients in
``google.rpc.ErrorInfo`` (domain ``smsgate.v1``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "NotImplementedYet",
    "OutOfRange",
    "QuotaExceeded",
    "QuotaViolation",
    "RateLimited",
    "SmsgateError",
    "Unauthenticated",
    "Unavailable",
]


class SmsgateError(Exception):
    """Base of every error a client may see."""

    default_reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (``recipients[3].phone_number``) and why."""

    field: str
    description: str


class InvalidArgument(SmsgateError):
    """The request is malformed; ``violations`` name the fields."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = violations if isinstance(violations, list) else [violations]
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text, reason=reason)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """One violation of one field."""
        return cls(FieldViolation(field, description), reason=reason)


class NotFound(SmsgateError):
    """The named resource does not exist for the calling app."""

    default_reason = "NOT_FOUND"


class AlreadyExists(SmsgateError):
    """The resource exists, or a request id was reused with a different request."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(SmsgateError):
    """The request is valid but the system is not in a state that allows it."""

    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(SmsgateError):
    """No credentials, or credentials that do not match an app."""

    default_reason = "UNAUTHENTICATED"


class RateLimited(SmsgateError):
    """Too soon: retry after ``retry_after`` seconds."""

    default_reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One exhausted quota: what it limits (``phone:+86...:hour``) and how."""

    subject: str
    description: str


class QuotaExceeded(SmsgateError):
    """A quota is used up."""

    default_reason = "QUOTA_EXCEEDED"

    def __init__(self, violations: list[QuotaViolation], *, reason: str | None = None) -> None:
        self.violations = violations
        super().__init__("; ".join(v.description for v in violations), reason=reason)


class OutOfRange(SmsgateError):
    """A position (such as a resume token) is outside what is kept."""

    default_reason = "OUT_OF_RANGE"


class Aborted(SmsgateError):
    """A concurrency conflict (etag mismatch); read again and retry."""

    default_reason = "ABORTED"


class Unavailable(SmsgateError):
    """The service cannot answer now (shutting down, Redis unreachable); retry."""

    default_reason = "UNAVAILABLE"


class NotImplementedYet(SmsgateError):
    """A capability of the API that this server does not provide yet."""

    default_reason = "NOT_IMPLEMENTED"
