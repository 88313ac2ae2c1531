"""Replies (mobile-originated SMS) as each vendor pushes them, read into one shape.

- Tencent Cloud: the reply callback, a JSON object or array of them with
  ``nationcode``, ``mobile`` and ``text``.
- Alibaba Cloud: the ``SmsUp`` push, a JSON array with ``phone_number``
  (mainland numbers without their country code) and ``content``.
- Twilio: the incoming-message webhook, a form with ``From`` and ``Body``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smsgate_server.domain.phone import InvalidPhoneNumber, normalize_e164
from smsgate_server.providers.receipts import FIELD_LIMIT, ReceiptFormatError

__all__ = [
    "InboundSms",
    "is_stop",
    "parse_aliyun_replies",
    "parse_tencent_replies",
    "parse_twilio_reply",
]

# A reply longer than this is no keyword; kept short so a log line never holds one.
TEXT_LIMIT = 1_600


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A reply: who sent it (E.164) and what it says."""

    phone: str
    text: str


def is_stop(text: str, keywords: Iterable[str]) -> bool:
    """Whether a reply is one of the opt-out ``keywords`` (case and spaces aside)."""
    word = text.strip().casefold()
    return any(word == k.strip().casefold() for k in keywords)


def parse_tencent_replies(body: bytes) -> list[InboundSms]:
    """Replies of a Tencent Cloud reply callback."""
    items = _json(body)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ReceiptFormatError("not a JSON object or array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ReceiptFormatError(f"[{i}] is not an object")
        code = _field(item, "nationcode", i)
        out.append(
            InboundSms(_phone(f"+{code}{_field(item, 'mobile', i)}", i), _reply(item, "text", i))
        )
    return out


def parse_aliyun_replies(body: bytes) -> list[InboundSms]:
    """Replies of an Alibaba Cloud ``SmsUp`` push."""
    items = _json(body)
    if not isinstance(items, list):
        raise ReceiptFormatError("not a JSON array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ReceiptFormatError(f"[{i}] is not an object")
        number = _field(item, "phone_number", i).lstrip("+")
        # Mainland numbers come without their country code (as Dysmsapi takes them).
        e164 = f"+86{number}" if len(number) == 11 and number.startswith("1") else f"+{number}"
        out.append(InboundSms(_phone(e164, i), _reply(item, "content", i)))
    return out


def parse_twilio_reply(params: Mapping[str, str]) -> InboundSms:
    """The reply of a Twilio incoming-message webhook."""
    sender = params.get("From", "")
    if not sender:
        raise ReceiptFormatError("From is required")
    return InboundSms(_phone(sender, 0), params.get("Body", "")[:TEXT_LIMIT])


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError too
        raise ReceiptFormatError("not JSON") from None


def _field(item: Mapping[str, Any], key: str, index: int) -> str:
    value = item.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > FIELD_LIMIT:
        raise ReceiptFormatError(f"[{index}].{key} must be a short non-empty string")
    return value


def _reply(item: Mapping[str, Any], key: str, index: int) -> str:
    value = item.get(key, "")
    if not isinstance(value, str):
        raise ReceiptFormatError(f"[{index}].{key} must be a string")
    return value[:TEXT_LIMIT]


def _phone(value: str, index: int) -> str:
    try:
        return normalize_e164(value)
    except InvalidPhoneNumber:
        # Not echoed: it is a phone number.
        raise ReceiptFormatError(f"[{index}] has no valid phone number") from None
