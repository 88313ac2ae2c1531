"""Delivery receipts as each vendor posts them to us, read into ``VendorReceipt``s.

Tencent Cloud (status callback) and Alibaba Cloud (``SmsReport``) post a JSON
array of reports and sign nothing; Twilio posts one form-encoded status per
request, signed with ``X-Twilio-Signature``. Pure functions of the body: the
HTTP side port reads the request, these say what it means.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from smsgate_server.providers.aliyun import aliyun_vendor_id
from smsgate_server.providers.signing import twilio_signature
from smsgate_server.providers.vendor_time import beijing_ms

__all__ = [
    "ALIYUN_REPLY",
    "FIELD_LIMIT",
    "TENCENT_REPLY",
    "ReceiptFormatError",
    "VendorReceipt",
    "parse_aliyun_receipts",
    "parse_tencent_receipts",
    "parse_twilio_status",
    "twilio_request_valid",
]

# What each vendor expects back once it may stop re-posting a report.
TENCENT_REPLY: Mapping[str, object] = {"result": 0, "errmsg": "OK"}
ALIYUN_REPLY: Mapping[str, object] = {"code": 0, "msg": "成功"}

# Vendor codes and texts are stored with the message: kept short.
FIELD_LIMIT = 200
# Twilio's final statuses; every other one (queued, sent, ...) is a step on the way.
_TWILIO_DELIVERED = frozenset({"delivered", "read"})
_TWILIO_UNDELIVERED = frozenset({"undelivered", "failed", "canceled"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


class ReceiptFormatError(ValueError):
    """A body that is not the vendor's receipt format; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class VendorReceipt:
    """One message's final outcome as a vendor reports it: the vendor's id for
    the message, delivered or not, its code and text, and its time (Unix ms,
    0 when the vendor names none)."""

    vendor_id: str
    delivered: bool
    code: str
    reason: str
    time_ms: int = 0


def parse_tencent_receipts(body: bytes) -> list[VendorReceipt]:
    """Reports of a Tencent Cloud SMS status callback (a JSON array)."""
    receipts = []
    for i, report in enumerate(_json_array(body)):
        status = _text(report, "report_status", i)
        if status not in ("SUCCESS", "FAIL"):
            raise ReceiptFormatError(f"[{i}].report_status must be SUCCESS or FAIL")
        receipts.append(
            VendorReceipt(
                vendor_id=_required(report, "sid", i),
                delivered=status == "SUCCESS",
                code=_text(report, "errmsg", i),
                reason=_text(report, "description", i),
                time_ms=beijing_ms(_text(report, "user_receive_time", i)),
            )
        )
    return receipts


def parse_aliyun_receipts(body: bytes) -> list[VendorReceipt]:
    """Reports of an Alibaba Cloud ``SmsReport`` push (a JSON array)."""
    receipts = []
    for i, report in enumerate(_json_array(body)):
        success = report.get("success")
        if not isinstance(success, bool):
            raise ReceiptFormatError(f"[{i}].success must be true or false")
        # The adapter names each recipient of a call by the call's BizId and
        # the number as the vendor writes it, which is how reports name it.
        vendor_id = aliyun_vendor_id(
            _required(report, "biz_id", i), _required(report, "phone_number", i)
        )
        receipts.append(
            VendorReceipt(
                vendor_id=vendor_id,
                delivered=success,
                code=_text(report, "err_code", i),
                reason=_text(report, "err_msg", i),
                time_ms=beijing_ms(_text(report, "report_time", i)),
            )
        )
    return receipts


def parse_twilio_status(params: Mapping[str, str]) -> VendorReceipt | None:
    """The outcome a Twilio status callback reports, or None for a status on the
    way (queued, sending, sent, ...)."""
    sid = params.get("MessageSid", "")
    status = params.get("MessageStatus", "")
    if not sid or not status:
        raise ReceiptFormatError("MessageSid and MessageStatus are required")
    if status in _TWILIO_DELIVERED:
        return VendorReceipt(sid[:FIELD_LIMIT], True, status, "")
    if status in _TWILIO_UNDELIVERED:
        code = params.get("ErrorCode", "") or status
        return VendorReceipt(sid[:FIELD_LIMIT], False, code[:FIELD_LIMIT], status)
    return None


def twilio_request_valid(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for a form POST to ``url``.

    Like Twilio's own validator, the URL is tried with and without its scheme's
    default port: Twilio signs the URL as configured, a proxy may add or drop it.
    """
    if not signature:
        return False
    pairs = list(params)
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    candidates = {url}
    if default is not None:
        netloc = parts.netloc.rpartition("@")[2]
        if parts.port is None:
            candidates.add(urlunsplit(parts._replace(netloc=f"{netloc}:{default}")))
        elif parts.port == default:
            candidates.add(urlunsplit(parts._replace(netloc=host)))
    # Every candidate is checked, so the time taken does not say which matched.
    matches = [
        hmac.compare_digest(twilio_signature(auth_token, candidate, pairs), signature)
        for candidate in sorted(candidates)
    ]
    return any(matches)


def _json_array(body: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ReceiptFormatError("not JSON") from None
    if not isinstance(document, list):
        raise ReceiptFormatError("must be a JSON array of reports")
    for i, report in enumerate(document):
        if not isinstance(report, dict):
            raise ReceiptFormatError(f"[{i}] must be an object")
    return document


def _text(report: Mapping[str, Any], key: str, index: int) -> str:
    value = report.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise ReceiptFormatError(f"[{index}].{key} must be a string")
    return str(value)[:FIELD_LIMIT]


def _required(report: Mapping[str, Any], key: str, index: int) -> str:
    value = _text(report, key, index)
    if not value:
        raise ReceiptFormatError(f"[{index}].{key} is required")
    return value
