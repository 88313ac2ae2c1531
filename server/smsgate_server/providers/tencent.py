"""Tencent Cloud SMS: ``SendSms`` of API 2021-01-11, signed with TC3-HMAC-SHA256.

Templates only. One call takes up to 200 numbers sharing one template and one
parameter set; the answer has one ``SendStatusSet`` entry per number. Lost
receipts are pulled with ``PullSmsSendStatus``, which hands out each recent
report of the application once (when the console has pulling on).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
)
from smsgate_server.providers.receipts import FIELD_LIMIT
from smsgate_server.providers.signing import tc3_sign
from smsgate_server.providers.vendor_time import beijing_ms

__all__ = ["TencentConfig", "TencentProvider", "classify_tencent"]

SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
MAX_NUMBERS = 200
SESSION_CONTEXT_LIMIT = 512
MIXED_NUMBERS = "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber"
# The number is on the vendor's do-not-disturb list (its owner unsubscribed).
OPTED_OUT = "FailedOperation.PhoneNumberInBlacklist"
# PullSmsSendStatus: reports per call (the API's most), and calls per query,
# which bounds a reconciliation tick's work.
PULL_LIMIT = 100
PULL_CALLS = 5


@dataclass(frozen=True, slots=True)
class TencentConfig:
    """An SMS application of a Tencent Cloud account."""

    secret_id: str
    secret_key: str = field(repr=False)
    sdk_app_id: str
    region: str = "ap-guangzhou"
    endpoint: str = "https://sms.tencentcloudapi.com"


# Codes whose class differs from their family's (the part before the first dot),
# and how long a throttle lasts when the code says.
_CODES: dict[str, tuple[OutcomeClass, float]] = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": (OutcomeClass.THROTTLED, 30.0),
    "LimitExceeded.PhoneNumberOneHourLimit": (OutcomeClass.THROTTLED, 3600.0),
    # The number's quota is gone for today: no later attempt today can pass.
    "LimitExceeded.PhoneNumberDailyLimit": (OutcomeClass.PERMANENT, 0.0),
    "LimitExceeded.PhoneNumberSameContentDailyLimit": (OutcomeClass.PERMANENT, 0.0),
    "LimitExceeded.PhoneNumberCountLimit": (OutcomeClass.PERMANENT, 0.0),
    "LimitExceeded.AppCountryOrRegionInBlacklist": (OutcomeClass.PERMANENT, 0.0),
    # The vendor timed out inside: it may have sent.
    "InternalError.Timeout": (OutcomeClass.UNKNOWN, 0.0),
    "InternalError.SendAndRecvFail": (OutcomeClass.UNKNOWN, 0.0),
    "InternalError.SigVerificationFail": (OutcomeClass.PERMANENT, 0.0),
    "FailedOperation.FailResolvePacket": (OutcomeClass.RETRYABLE, 0.0),
}
_FAMILIES: dict[str, OutcomeClass] = {
    "AuthFailure": OutcomeClass.PERMANENT,
    "FailedOperation": OutcomeClass.PERMANENT,
    "InternalError": OutcomeClass.RETRYABLE,
    "InvalidParameter": OutcomeClass.PERMANENT,
    "InvalidParameterValue": OutcomeClass.PERMANENT,
    "LimitExceeded": OutcomeClass.THROTTLED,
    "MissingParameter": OutcomeClass.PERMANENT,
    "RequestLimitExceeded": OutcomeClass.THROTTLED,
    "ResourceNotFound": OutcomeClass.PERMANENT,
    "UnauthorizedOperation": OutcomeClass.PERMANENT,
    "UnsupportedOperation": OutcomeClass.PERMANENT,
}


def classify_tencent(code: str) -> tuple[OutcomeClass, float]:
    """Class and retry-after of a Tencent error code, from its error-code table."""
    if code in _CODES:
        return _CODES[code]
    # An answer with a code we do not know: refused, worth a bounded retry.
    return _FAMILIES.get(code.split(".", 1)[0], OutcomeClass.RETRYABLE), 0.0


class TencentProvider:
    """Sends through Tencent Cloud SMS; see the module docstring."""

    def __init__(
        self,
        config: TencentConfig,
        *,
        http: httpx.AsyncClient,
        name: str = "tencent",
        concurrency: int = 16,
        timeout: float = 10.0,
        regions: frozenset[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(MAX_NUMBERS, 1, ContentKind.TEMPLATE, regions)
        self._config = config
        self._endpoint = VendorEndpoint(
            http, config.endpoint, vendor=name, concurrency=concurrency, timeout=timeout
        )
        self._clock = clock

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        template_id = batch.template_ids.get(self.name, "")
        if not template_id:
            return no_vendor_template(self.name, len(batch.recipients), "template id")
        # One parameter set per call: recipients with the same values go together.
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, r in enumerate(batch.recipients):
            groups[tuple(v for _, v in r.params)].append(i)
        calls = [
            (params, idx[start : start + MAX_NUMBERS])
            for params, idx in groups.items()
            for start in range(0, len(idx), MAX_NUMBERS)
        ]
        answers = await asyncio.gather(
            *(
                self._send(batch, template_id, params, [batch.recipients[i] for i in idx])
                for params, idx in calls
            )
        )
        results: list[RecipientResult | None] = [None] * len(batch.recipients)
        for (_, idx), answer in zip(calls, answers, strict=True):
            for i, result in zip(idx, answer, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    async def _send(
        self,
        batch: OutboundBatch,
        template_id: str,
        params: tuple[str, ...],
        recipients: Sequence[Recipient],
        *,
        split: bool = True,
    ) -> list[RecipientResult]:
        try:
            answer = await self._call(batch, template_id, params, recipients)
        except CallFailed as failed:
            return failed.results(len(recipients))
        error = answer.get("Error")
        if isinstance(error, dict):
            code = str(error.get("Code", ""))
            if code == MIXED_NUMBERS and split:
                return await self._send_split(batch, template_id, params, recipients)
            outcome, retry_after = classify_tencent(code)
            reason = str(error.get("Message", ""))[:200]
            return [
                RecipientResult(outcome, "", code, reason, retry_after, code == OPTED_OUT)
            ] * len(recipients)
        return _per_number(recipients, answer.get("SendStatusSet"))

    async def _send_split(
        self,
        batch: OutboundBatch,
        template_id: str,
        params: tuple[str, ...],
        recipients: Sequence[Recipient],
    ) -> list[RecipientResult]:
        """Resend mainland China numbers and the others in separate calls."""
        domestic = [i for i, r in enumerate(recipients) if r.phone.startswith("+86")]
        others = [i for i, r in enumerate(recipients) if not r.phone.startswith("+86")]
        parts = [part for part in (domestic, others) if part]
        answers = await asyncio.gather(
            *(
                self._send(batch, template_id, params, [recipients[i] for i in part], split=False)
                for part in parts
            )
        )
        results: dict[int, RecipientResult] = {}
        for part, answer in zip(parts, answers, strict=True):
            results.update(zip(part, answer, strict=True))
        return [results[i] for i in range(len(recipients))]

    async def _call(
        self,
        batch: OutboundBatch,
        template_id: str,
        params: tuple[str, ...],
        recipients: Sequence[Recipient],
    ) -> dict[str, object]:
        request: dict[str, object] = {
            "PhoneNumberSet": [r.phone for r in recipients],
            "SmsSdkAppId": self._config.sdk_app_id,
            "TemplateId": template_id,
            "TemplateParamSet": list(params),
            # Echoed back per number: our message ids, as many as fit.
            "SessionContext": references_tag(
                [r.reference for r in recipients], SESSION_CONTEXT_LIMIT
            ),
        }
        if batch.sign_name:
            request["SignName"] = batch.sign_name
        # A sender id exists only for international SMS; mainland China has none.
        if batch.sender and not any(r.phone.startswith("+86") for r in recipients):
            request["SenderId"] = batch.sender
        return await self._signed("SendSms", request)

    async def _signed(self, action: str, request: dict[str, object]) -> dict[str, object]:
        """One TC3-signed call of ``action``: its ``Response`` object."""
        payload = json.dumps(request, ensure_ascii=False).encode()
        timestamp = int(self._clock())
        signed = {"content-type": CONTENT_TYPE, "host": self._endpoint.host}
        signature = tc3_sign(
            secret_id=self._config.secret_id,
            secret_key=self._config.secret_key,
            service=SERVICE,
            timestamp=timestamp,
            headers=signed,
            payload=payload,
        )
        headers = {
            **signed,
            "authorization": signature.authorization,
            "x-tc-action": action,
            "x-tc-version": VERSION,
            "x-tc-timestamp": str(timestamp),
            "x-tc-region": self._config.region,
        }
        _, body = await self._endpoint.post(payload, headers)
        response = body.get("Response")
        if not isinstance(response, dict):
            raise CallFailed(OutcomeClass.UNKNOWN, "BAD_ANSWER", "no Response in the answer")
        return response

    async def query_status(self, queries: Sequence[StatusQuery]) -> StatusAnswer:
        """Pull the application's recent reports (up to ``PULL_CALLS`` calls) and
        match them to ``queries`` by ``SerialNo``, else by our id in
        ``SessionContext`` and the number (a send of unknown outcome has no
        SerialNo); the rest are returned as ``others``."""
        by_serial = {q.vendor_id: i for i, q in enumerate(queries) if q.vendor_id}
        by_reference = {(q.reference, q.phone): i for i, q in enumerate(queries)}
        answer = StatusAnswer([None] * len(queries))
        for _ in range(PULL_CALLS):
            try:
                response = await self._signed(
                    "PullSmsSendStatus",
                    {"Limit": PULL_LIMIT, "SmsSdkAppId": self._config.sdk_app_id},
                )
            except CallFailed:
                break
            reports = response.get("PullSmsSendStatusSet")
            if "Error" in response or not isinstance(reports, list):
                break
            for report in reports:
                if isinstance(report, dict):
                    _match_report(report, by_serial, by_reference, answer)
            if len(reports) < PULL_LIMIT:
                break
        return answer

    async def aclose(self) -> None:
        """Nothing of its own to release; the HTTP client belongs to the caller."""


def _per_number(recipients: Sequence[Recipient], statuses: object) -> list[RecipientResult]:
    """Map ``SendStatusSet`` back to recipients by phone number (in order, so the
    same number twice in a call maps to its two entries)."""
    by_phone: dict[str, deque[dict[str, object]]] = defaultdict(deque)
    if isinstance(statuses, list):
        for status in statuses:
            if isinstance(status, dict):
                by_phone[str(status.get("PhoneNumber", ""))].append(status)
    results = []
    for r in recipients:
        queue = by_phone.get(r.phone)
        if not queue:
            # The vendor took the call but said nothing of this number.
            results.append(RecipientResult(OutcomeClass.UNKNOWN, "", "NO_STATUS", "no status"))
            continue
        status = queue.popleft()
        code = str(status.get("Code", ""))
        if code == "Ok":
            results.append(RecipientResult(OutcomeClass.ACCEPTED, str(status.get("SerialNo", ""))))
            continue
        outcome, retry_after = classify_tencent(code)
        reason = str(status.get("Message", ""))[:200]
        results.append(RecipientResult(outcome, "", code, reason, retry_after, code == OPTED_OUT))
    return results


def _match_report(
    report: dict[str, object],
    by_serial: dict[str, int],
    by_reference: dict[tuple[str, str], int],
    answer: StatusAnswer,
) -> None:
    """Put one pulled report where it belongs in ``answer``."""
    outcome = report.get("ReportStatus")
    if outcome not in ("SUCCESS", "FAIL"):
        return
    serial = str(report.get("SerialNo") or "")[:FIELD_LIMIT]
    # Read as the status callback is: the vendor's status and its words.
    status = VendorStatus(
        outcome == "SUCCESS",
        str(outcome),
        str(report.get("Description") or "")[:200],
        beijing_ms(str(report.get("UserReceiveTime") or "")),
    )
    index = by_serial.get(serial)
    if index is None:
        phone = str(report.get("PhoneNumber") or "")
        for reference in str(report.get("SessionContext") or "").split(","):
            index = by_reference.get((reference, phone))
            if index is not None:
                break
    if index is not None:
        answer.statuses[index] = status
    elif serial:
        answer.others.append((serial, status))
