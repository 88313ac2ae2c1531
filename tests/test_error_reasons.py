"""The reasons the server can give are exactly the proto's ErrorReason values,
so a client can switch on every reason it may see."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from smsgate.v1 import error_reason_pb2
from smsgate_server.api.errors import DOMAIN, to_rpc_status
from smsgate_server.domain.errors import InvalidArgument, NotFound, Reason

PREFIX = "ERROR_REASON_"
PROTO_NAMES = set(error_reason_pb2.ErrorReason.DESCRIPTOR.values_by_name)


def test_every_server_reason_is_an_error_reason_of_the_proto() -> None:
    proto = {name.removeprefix(PREFIX) for name in PROTO_NAMES}
    missing = {r.value for r in Reason} - proto
    assert not missing, f"add {sorted(missing)} to proto/smsgate/v1/error_reason.proto"


def test_every_error_reason_of_the_proto_is_a_server_reason() -> None:
    names = PROTO_NAMES - {f"{PREFIX}UNSPECIFIED"}
    unknown = {name.removeprefix(PREFIX) for name in names} - {r.value for r in Reason}
    assert not unknown, f"{sorted(unknown)} are in the proto but the server never gives them"


@pytest.mark.parametrize("reason", list(Reason))
def test_a_reason_is_its_own_name(reason: Reason) -> None:
    assert reason.value == reason.name


def test_the_reason_reaches_error_info() -> None:
    status = to_rpc_status(NotFound("message not found", reason=Reason.MESSAGE_NOT_FOUND))
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    info = _error_info(status.details[0])
    assert (info.reason, info.domain) == ("MESSAGE_NOT_FOUND", DOMAIN)
    assert error_reason_pb2.ErrorReason.Value(PREFIX + info.reason)


def test_a_field_violation_without_its_own_reason_is_invalid_argument() -> None:
    status = to_rpc_status(InvalidArgument.field("page_size", "must not be negative"))
    assert _error_info(status.details[0]).reason == Reason.INVALID_ARGUMENT


def _error_info(detail: any_pb2.Any) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info
