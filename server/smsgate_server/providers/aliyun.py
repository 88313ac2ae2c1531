"""Alibaba Cloud SMS (Dysmsapi 2017-05-25), signed with ACS3-HMAC-SHA256 (V3).

Templates only. ``SendSms`` takes up to 1,000 numbers sharing one parameter
set; ``SendBatchSms`` up to 100, each with its own sign and parameters. Either
answers for the whole call with one ``BizId``; per-number fates come later in
receipts, which name the ``BizId`` and the number, so a recipient's vendor id
is ``aliyun_vendor_id(BizId, number)``. Lost receipts are asked about with
``QuerySendDetails`` (by number, send date and ``BizId``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx

from smsgate_server.providers.base import (
    Capabilities,
    ContentKind,
    OutboundBatch,
    OutcomeClass,
    Recipient,
    RecipientResult,
    StatusAnswer,
    StatusQuery,
    VendorStatus,
)
from smsgate_server.providers.calls import (
    CallFailed,
    VendorEndpoint,
    no_vendor_template,
    references_tag,
    refuse_all,
)
from smsgate_server.providers.signing import acs3_authorization, sha256_hex
from smsgate_server.providers.vendor_time import BEIJING, beijing_ms

__all__ = ["AliyunConfig", "AliyunProvider", "aliyun_number", "aliyun_vendor_id", "classify_aliyun"]

VERSION = "2017-05-25"
CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_SHARED = 1000
MAX_PERSONALIZED = 100
OUT_ID_LIMIT = 256
ILLEGAL_NUMBER = "isv.MOBILE_NUMBER_ILLEGAL"
QUERY_PAGE_SIZE = 50
# SmsSendDetailDTO.SendStatus: 1 waiting for its report, 2 failed, 3 delivered.
_FAILED, _DELIVERED = 2, 3


@dataclass(frozen=True, slots=True)
class AliyunConfig:
    """An Alibaba Cloud AccessKey allowed to call Dysmsapi."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    endpoint: str = "https://dysmsapi.aliyuncs.com"


_CODES: dict[str, OutcomeClass] = {
    "isv.DAY_LIMIT_CONTROL": OutcomeClass.PERMANENT,
    # "Blacklist control" names a blacklisted keyword in the template's
    # variables (the vendor's error-code table), not a recipient who
    # unsubscribed: the content is at fault, so it never opts the number out.
    # Dysmsapi's send calls have no code for an unsubscribed recipient; those
    # show in receipts as UNDELIVERED (codes such as W-BLACK).
    "isv.BLACK_KEY_CONTROL_LIMIT": OutcomeClass.PERMANENT,
    "isv.SYSTEM_ERROR": OutcomeClass.RETRYABLE,
    "isp.RAM_PERMISSION_DENY": OutcomeClass.PERMANENT,
    "InvalidAccessKeyId.NotFound": OutcomeClass.PERMANENT,
    "InvalidAccessKeyId.Inactive": OutcomeClass.PERMANENT,
    "SignatureDoesNotMatch": OutcomeClass.PERMANENT,
    "IncompleteSignature": OutcomeClass.PERMANENT,
    "Forbidden.RAM": OutcomeClass.PERMANENT,
    "MissingParameter": OutcomeClass.PERMANENT,
    "InvalidParameter": OutcomeClass.PERMANENT,
    "Throttling": OutcomeClass.THROTTLED,
    "Throttling.User": OutcomeClass.THROTTLED,
    "Throttling.Api": OutcomeClass.THROTTLED,
    "ServiceUnavailable": OutcomeClass.RETRYABLE,
    "InternalError": OutcomeClass.RETRYABLE,
}
# isv.BUSINESS_LIMIT_CONTROL is the per-number frequency control; its message
# says which window tripped (minute, hour, day).
_WINDOWS: tuple[tuple[str, OutcomeClass, float], ...] = (
    ("分钟级", OutcomeClass.THROTTLED, 60.0),
    ("小时级", OutcomeClass.THROTTLED, 3600.0),
    ("天级", OutcomeClass.PERMANENT, 0.0),
)


def classify_aliyun(code: str, message: str = "") -> tuple[OutcomeClass, float]:
    """Class and retry-after of a Dysmsapi error code (and its message, where the
    code alone does not say)."""
    if code == "isv.BUSINESS_LIMIT_CONTROL":
        for marker, outcome, retry_after in _WINDOWS:
            if marker in message:
                return outcome, retry_after
        return OutcomeClass.THROTTLED, 0.0
    if code in _CODES:
        return _CODES[code], 0.0
    # isv.*: the request is wrong for this account (sign, template, number,
    # balance); isp.* and anything else: the vendor's side.
    if code.startswith("isv."):
        return OutcomeClass.PERMANENT, 0.0
    return OutcomeClass.RETRYABLE, 0.0


def aliyun_number(phone: str) -> str:
    """An E.164 number as Dysmsapi takes it: mainland China without its
    country code, others as country code and number without '+'."""
    return phone[3:] if phone.startswith("+86") else phone.lstrip("+")


def aliyun_vendor_id(biz_id: str, number: str) -> str:
    """Our vendor id for one number of a call (receipts carry both parts)."""
    return f"{biz_id}/{number}"


class AliyunProvider:
    """Sends through Alibaba Cloud SMS; see the module docstring."""

    def __init__(
        self,
        config: AliyunConfig,
        *,
        http: httpx.AsyncClient,
        name: str = "aliyun",
        concurrency: int = 16,
        timeout: float = 10.0,
        regions: frozenset[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(
            MAX_SHARED, MAX_PERSONALIZED, ContentKind.TEMPLATE, regions
        )
        self._config = config
        self._endpoint = VendorEndpoint(
            http, config.endpoint, vendor=name, concurrency=concurrency, timeout=timeout
        )
        self._clock = clock

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        template = batch.template_ids.get(self.name, "")
        if not template:
            return no_vendor_template(self.name, len(batch.recipients), "template code")
        # Recipients sharing parameters go by SendSms; the rest by SendBatchSms.
        groups: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(list)
        for i, r in enumerate(batch.recipients):
            groups[r.params].append(i)
        shared = [idx for idx in groups.values() if len(idx) > 1]
        single = [idx[0] for idx in groups.values() if len(idx) == 1]
        calls = [idx[s : s + MAX_SHARED] for idx in shared for s in range(0, len(idx), MAX_SHARED)]
        calls += [single[s : s + MAX_PERSONALIZED] for s in range(0, len(single), MAX_PERSONALIZED)]
        answers = await asyncio.gather(
            *(self._send(batch, template, [batch.recipients[i] for i in idx]) for idx in calls)
        )
        results: dict[int, RecipientResult] = {}
        for idx, answer in zip(calls, answers, strict=True):
            results.update(zip(idx, answer, strict=True))
        return [results[i] for i in range(len(batch.recipients))]

    async def _send(
        self, batch: OutboundBatch, template: str, recipients: Sequence[Recipient]
    ) -> list[RecipientResult]:
        numbers = [aliyun_number(r.phone) for r in recipients]
        try:
            body = await self._call(batch, template, recipients, numbers)
        except CallFailed as failed:
            return failed.results(len(recipients))
        code = str(body.get("Code", ""))
        if code == "OK":
            biz_id = str(body.get("BizId", ""))
            return [
                RecipientResult(OutcomeClass.ACCEPTED, aliyun_vendor_id(biz_id, n)) for n in numbers
            ]
        if code == ILLEGAL_NUMBER and len(recipients) > 1:
            # The whole call is refused for one bad number: halve until it is
            # alone, so the others still go.
            middle = len(recipients) // 2
            halves = await asyncio.gather(
                self._send(batch, template, recipients[:middle]),
                self._send(batch, template, recipients[middle:]),
            )
            return halves[0] + halves[1]
        message = str(body.get("Message", ""))
        outcome, retry_after = classify_aliyun(code, message)
        return refuse_all(len(recipients), outcome, code, message[:200], retry_after=retry_after)

    async def _call(
        self,
        batch: OutboundBatch,
        template: str,
        recipients: Sequence[Recipient],
        numbers: Sequence[str],
    ) -> dict[str, object]:
        out_id = references_tag([r.reference for r in recipients], OUT_ID_LIMIT)
        if len(recipients) > 1 and len({r.params for r in recipients}) > 1:
            action = "SendBatchSms"
            form = {
                "PhoneNumberJson": _json(numbers),
                "SignNameJson": _json([batch.sign_name] * len(recipients)),
                "TemplateCode": template,
                "TemplateParamJson": _json([dict(r.params) for r in recipients]),
                "OutId": out_id,
            }
        else:
            action = "SendSms"
            form = {
                "PhoneNumbers": ",".join(numbers),
                "SignName": batch.sign_name,
                "TemplateCode": template,
                "OutId": out_id,
            }
            if recipients[0].params:
                form["TemplateParam"] = _json(dict(recipients[0].params))
        return await self._signed(action, form)

    async def _signed(self, action: str, form: dict[str, str]) -> dict[str, object]:
        """One V3-signed call of ``action`` with ``form``: the answer's JSON."""
        payload = urlencode(form).encode()
        signed = {
            "host": self._endpoint.host,
            "content-type": CONTENT_TYPE,
            "x-acs-action": action,
            "x-acs-version": VERSION,
            "x-acs-date": datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": secrets.token_hex(16),
            "x-acs-content-sha256": sha256_hex(payload),
        }
        authorization = acs3_authorization(
            access_key_id=self._config.access_key_id,
            access_key_secret=self._config.access_key_secret,
            method="POST",
            path="/",
            query={},
            headers=signed,
            hashed_payload=signed["x-acs-content-sha256"],
        )
        response, body = await self._endpoint.post(
            payload, {**signed, "authorization": authorization, "accept": "application/json"}
        )
        if response.is_success and "Code" not in body:
            raise CallFailed(OutcomeClass.UNKNOWN, "BAD_ANSWER", "no Code in the answer")
        return body

    async def query_status(self, queries: Sequence[StatusQuery]) -> StatusAnswer:
        """``QuerySendDetails`` per message: by number and the day it was sent
        (Beijing), narrowed by ``BizId`` when the send's outcome was known,
        else matched by our id in ``OutId``."""
        return StatusAnswer(list(await asyncio.gather(*(self._query(q) for q in queries))))

    async def _query(self, query: StatusQuery) -> VendorStatus | None:
        biz_id = query.vendor_id.partition("/")[0]
        # The send date is the vendor's calendar day.
        day = datetime.fromtimestamp(query.sent_ms / 1000, BEIJING).strftime("%Y%m%d")
        form = {
            "PhoneNumber": aliyun_number(query.phone),
            "SendDate": day,
            "PageSize": str(QUERY_PAGE_SIZE),
            "CurrentPage": "1",
        }
        if biz_id:
            form["BizId"] = biz_id
        try:
            body = await self._signed("QuerySendDetails", form)
        except CallFailed:
            return None
        dtos = body.get("SmsSendDetailDTOs")
        details = dtos.get("SmsSendDetailDTO") if isinstance(dtos, dict) else None
        if body.get("Code") != "OK" or not isinstance(details, list):
            return None
        for detail in details:
            if not isinstance(detail, dict):
                continue
            if not biz_id and query.reference not in str(detail.get("OutId", "")).split(","):
                continue
            status = detail.get("SendStatus")
            if status not in (_FAILED, _DELIVERED):
                return None
            # Read as its SmsReport is: the vendor's code, its time in Beijing.
            code = str(detail.get("ErrCode") or "")[:200]
            return VendorStatus(
                status == _DELIVERED, code, "", beijing_ms(str(detail.get("ReceiveDate") or ""))
            )
        return None

    async def aclose(self) -> None:
        """Nothing of its own to release; the HTTP client belongs to the caller."""


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
