"""Which vendor refusals are about the recipient itself, so that another vendor
must not be tried: the number is invalid, its owner opted out, or the
per-number frequency limits (which protect the recipient and the account from
SMS pumping) are spent. Everything else a vendor refuses (credentials, sign,
template, balance, account throttles) is about the account and may fail over.

Codes are the vendors' own; they do not collide across vendors (Tencent's are
dotted words, Aliyun's start with ``isv.``, Twilio's are numbers).
"""

from __future__ import annotations

from smsgate_server.providers.base import OutcomeClass, RecipientResult

__all__ = ["RECIPIENT_CODES", "about_recipient"]

RECIPIENT_CODES = frozenset(
    {
        # Tencent Cloud SMS
        "InvalidParameterValue.IncorrectPhoneNumber",
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.PhoneNumberParseFail",
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.PhoneNumberThirtySecondLimit",
        "LimitExceeded.PhoneNumberOneHourLimit",
        # Alibaba Cloud Dysmsapi
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        # Twilio: invalid To, unsubscribed, not a mobile number
        "21211",
        "21610",
        "21614",
        # the simulator's scripted numbers
        "SIM_INVALID_NUMBER",
        "SIM_OPTED_OUT",
    }
)


def about_recipient(result: RecipientResult) -> bool:
    """Whether a refusal is about the recipient: another vendor would only
    repeat it (or get round a limit that is there on purpose)."""
    if result.outcome not in (OutcomeClass.PERMANENT, OutcomeClass.THROTTLED):
        return False
    return result.opted_out or result.code in RECIPIENT_CODES
