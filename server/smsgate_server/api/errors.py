"""The one place that maps domain errors to gRPC status codes and
``google.rpc`` details (BadRequest, ErrorInfo, RetryInfo, QuotaFailure)."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from smsgate_server.domain import errors as e

__all__ = ["DOMAIN", "STATUS_DETAILS_KEY", "grpc_code_of", "to_rpc_status"]

DOMAIN = "smsgate.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# An error echoes parts of the request. Trailers beyond the client's metadata
# limit (8 KiB by default) would turn the answer into RESOURCE_EXHAUSTED, so the
# message (sent twice, once percent-encoded) and the BadRequest stay small.
MAX_MESSAGE_BYTES = 512
MAX_BAD_REQUEST_BYTES = 3072

_CODES: list[tuple[type[e.SmsgateError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (e.Aborted, grpc.StatusCode.ABORTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def grpc_code_of(err: e.SmsgateError) -> grpc.StatusCode:
    """The status code for a domain error."""
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _bounded(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def _retry_info(retry_after: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    seconds = max(retry_after, 0.0)
    info.retry_delay.seconds = int(seconds)
    info.retry_delay.nanos = int((seconds - math.floor(seconds)) * 1e9)
    return info


def to_rpc_status(err: e.SmsgateError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo plus the detail the error kind calls for."""
    code = grpc_code_of(err)
    status = status_pb2.Status(code=code.value[0], message=_bounded(err.message))
    status.details.append(_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN)))
    if isinstance(err, e.InvalidArgument):
        bad = error_details_pb2.BadRequest()
        for shown, v in enumerate(err.violations):
            bad.field_violations.add(field=v.field, description=v.description)
            if bad.ByteSize() > MAX_BAD_REQUEST_BYTES:
                del bad.field_violations[-1]
                more = f" ({len(err.violations) - shown} more violations not shown)"
                status.message = _bounded(err.message, MAX_MESSAGE_BYTES - len(more)) + more
                break
        status.details.append(_pack(bad))
    elif isinstance(err, e.RateLimited):
        status.details.append(_pack(_retry_info(err.retry_after)))
    elif isinstance(err, e.QuotaExceeded):
        quota = error_details_pb2.QuotaFailure()
        for q in err.violations:
            quota.violations.add(subject=q.subject, description=q.description)
        status.details.append(_pack(quota))
        if err.retry_after is not None:
            status.details.append(_pack(_retry_info(err.retry_after)))
    assert status.code != code_pb2.OK
    return status
