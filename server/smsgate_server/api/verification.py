"""VerificationService: one-time codes, protobuf <-> domain."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from smsgate.v1 import verification_service_pb2 as pb
from smsgate.v1 import verification_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import timestamp_from_ms
from smsgate_server.api.guard import current_app
from smsgate_server.domain.codes import Alphabet
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.validation import Violations
from smsgate_server.services.verification import (
    Delivery,
    GenerateCommand,
    Verdict,
    VerificationService,
    VerifyCommand,
)

__all__ = ["VerificationServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

_ALPHABETS = {
    pb.CODE_ALPHABET_UNSPECIFIED: Alphabet.NUMERIC,
    pb.CODE_ALPHABET_NUMERIC: Alphabet.NUMERIC,
    pb.CODE_ALPHABET_ALPHANUMERIC: Alphabet.ALPHANUMERIC,
}
_DELIVERIES = {
    pb.CODE_DELIVERY_UNSPECIFIED: Delivery.SMS,
    pb.CODE_DELIVERY_SMS: Delivery.SMS,
    pb.CODE_DELIVERY_CALLER: Delivery.CALLER,
}
_RESULTS = {
    Verdict.VERIFIED: pb.VERIFICATION_RESULT_VERIFIED,
    Verdict.INCORRECT: pb.VERIFICATION_RESULT_INCORRECT,
    Verdict.EXPIRED_OR_NOT_FOUND: pb.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND,
    Verdict.TOO_MANY_ATTEMPTS: pb.VERIFICATION_RESULT_TOO_MANY_ATTEMPTS,
}


def _enum(table: dict[Any, T], value: int, field: str, enum_type: Any) -> T:
    # proto3 enums are open: an unknown number (99) arrives as is.
    try:
        return table[value]
    except KeyError:
        names = ", ".join(enum_type.Name(v) for v in table)
        raise InvalidArgument.field(field, f"unknown value {value}; use one of {names}") from None


class VerificationServicer(pb_grpc.VerificationServiceServicer):
    """Translates VerificationService calls to VerificationService (the domain one)."""

    def __init__(self, verification: VerificationService) -> None:
        self.verification = verification

    async def GenerateCode(
        self, request: pb.GenerateCodeRequest, context: Context
    ) -> pb.GenerateCodeResponse:
        violations = Violations()
        issued = await self.verification.generate(
            current_app(),
            GenerateCommand(
                phone=request.phone_number,
                scope=request.scope,
                length=request.length,
                alphabet=violations.check(
                    Alphabet.NUMERIC,
                    _enum,
                    _ALPHABETS,
                    request.alphabet,
                    "alphabet",
                    pb.CodeAlphabet,
                ),
                validity_ms=(
                    request.validity.ToMilliseconds() if request.HasField("validity") else None
                ),
                delivery=violations.check(
                    Delivery.SMS, _enum, _DELIVERIES, request.delivery, "delivery", pb.CodeDelivery
                ),
                template_id=request.template_id,
                sender=request.sender_id,
            ),
            violations,
        )
        return pb.GenerateCodeResponse(
            verification_id=issued.verification_id,
            expire_time=timestamp_from_ms(issued.expire_ms),
            resend_time=timestamp_from_ms(issued.resend_ms),
            code=issued.code,
            message_id=issued.message_id,
        )

    async def VerifyCode(
        self, request: pb.VerifyCodeRequest, context: Context
    ) -> pb.VerifyCodeResponse:
        result = await self.verification.verify(
            current_app(),
            VerifyCommand(
                code=request.code,
                verification_id=request.verification_id,
                phone=request.phone_number,
                scope=request.scope,
            ),
        )
        return pb.VerifyCodeResponse(
            result=_RESULTS[result.verdict], attempts_left=result.attempts_left
        )
