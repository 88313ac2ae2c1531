"""Typed errors: one class per gRPC status code, with the ``google.rpc``
details of the ``grpc-status-details-bin`` trailer decoded.

Every failed call of :class:`smsgate.Client` and :class:`smsgate.AsyncClient`
raises a subclass of :class:`Error`; no ``grpc.RpcError`` reaches the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "Error",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QuotaViolation",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_from_rpc",
]

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request (a ``google.rpc.BadRequest`` entry)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One exhausted quota (a ``google.rpc.QuotaFailure`` entry)."""

    subject: str
    description: str


class Error(Exception):
    """A failed smsgate call: its status code, message and decoded details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
        quota_violations: Iterable[QuotaViolation] = (),
    ) -> None:
        super().__init__(f"{self.code.name}: {reason + ': ' if reason else ''}{message}")
        self.message = message
        #: The ``ErrorInfo`` reason, an ``ErrorReason`` name without its prefix
        #: (for example ``"INVALID_PHONE_NUMBER"``); empty when the server sent none.
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = list(field_violations)
        #: Seconds to wait before retrying (``RetryInfo``), when the server said.
        self.retry_after = retry_after
        self.quota_violations = list(quota_violations)


class Cancelled(Error):
    code = grpc.StatusCode.CANCELLED


class Unknown(Error):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(Error):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(Error):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(Error):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(Error):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(Error):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(Error):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(Error):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(Error):
    code = grpc.StatusCode.ABORTED


class OutOfRange(Error):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(Error):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(Error):
    code = grpc.StatusCode.INTERNAL


class Unavailable(Error):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(Error):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(Error):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[Error]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_from_rpc(exc: grpc.RpcError) -> Error:
    """The typed error for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code, message, trailers = exc.code(), exc.details() or "", exc.trailing_metadata()
        return _error(code, message, trailers or ())
    if isinstance(exc, grpc.Call):
        return _error(exc.code(), exc.details() or "", exc.trailing_metadata() or ())
    # Not a call's error (grpc raises these only for calls); keep what it says.
    return Unknown(str(exc))


def _error(
    code: grpc.StatusCode, message: str, trailers: Iterable[tuple[str, str | bytes]]
) -> Error:
    cls = _BY_CODE.get(code, Unknown)
    blob = next((v for k, v in trailers if k == _DETAILS_KEY and isinstance(v, bytes)), None)
    if blob is None:
        return cls(message)
    status = status_pb2.Status.FromString(blob)
    reason = domain = ""
    metadata: dict[str, str] = {}
    fields: list[FieldViolation] = []
    quotas: list[QuotaViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quotas += [QuotaViolation(v.subject, v.description) for v in quota.violations]
    return cls(
        status.message or message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=fields,
        retry_after=retry_after,
        quota_violations=quotas,
    )
