"""Twilio Programmable Messaging: one ``POST Messages.json`` per recipient,
HTTP basic auth with the account (or an API key), free text."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlencode

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
from smsgate_server.providers.calls import CallFailed, vendor_call, vendor_post

__all__ = ["TwilioConfig", "TwilioProvider", "classify_twilio"]

OPTED_OUT = 21610
# Finding a send of unknown outcome in the number's messages: the clock skew
# allowed between Twilio's date_created (whole seconds) and ours, and how many
# of the number's latest messages are read.
FIND_SKEW_MS = 5_000
FIND_PAGE = 100


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    """A Twilio account and where its messages come from.

    ``username`` is the account SID or an API key SID (``password`` its token
    or secret). One of ``from_number`` and ``messaging_service_sid`` is set.
    """

    account_sid: str
    password: str = field(repr=False)
    username: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    status_callback: str = ""
    base_url: str = "https://api.twilio.com"


# Error codes of the Messages resource whose class is not what the HTTP status says.
_CODES: dict[int, OutcomeClass] = {
    20429: OutcomeClass.THROTTLED,
    30022: OutcomeClass.THROTTLED,
    30001: OutcomeClass.THROTTLED,
    20003: OutcomeClass.PERMANENT,
    21211: OutcomeClass.PERMANENT,
    OPTED_OUT: OutcomeClass.PERMANENT,
}


def classify_twilio(status: int, code: int | None) -> OutcomeClass:
    """Class of a Twilio error answer, from its code, else its HTTP status."""
    if code in _CODES:
        return _CODES[code]
    if status == 429:
        return OutcomeClass.THROTTLED
    if status >= 500:
        return OutcomeClass.RETRYABLE
    # Any other 4xx: the request is wrong for this account (number, sender, region).
    return OutcomeClass.PERMANENT


class TwilioProvider:
    """Sends through Twilio; see the module docstring."""

    def __init__(
        self,
        config: TwilioConfig,
        *,
        http: httpx.AsyncClient,
        name: str = "twilio",
        concurrency: int = 16,
        timeout: float = 10.0,
        regions: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(1, 1, ContentKind.TEXT, regions)
        self._config = config
        self._http = http
        self._url = f"{config.base_url}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(config.username or config.account_sid, config.password)
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        return list(await asyncio.gather(*(self._send(batch, r) for r in batch.recipients)))

    async def _send(self, batch: OutboundBatch, recipient: Recipient) -> RecipientResult:
        form = {"To": recipient.phone, "Body": recipient.text}
        if self._config.messaging_service_sid:
            form["MessagingServiceSid"] = self._config.messaging_service_sid
        else:
            form["From"] = batch.sender or self._config.from_number
        if self._config.status_callback:
            form["StatusCallback"] = self._config.status_callback
        try:
            response, body = await vendor_post(
                self._http,
                self._url,
                vendor=self.name,
                content=urlencode(form).encode(),
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "accept": "application/json",
                },
                timeout=self._timeout,
                slots=self._slots,
                auth=self._auth,
            )
        except CallFailed as failed:
            return failed.results(1)[0]
        if response.is_success:
            sid = body.get("sid")
            if not isinstance(sid, str) or not sid:
                return RecipientResult(OutcomeClass.UNKNOWN, "", "BAD_ANSWER", "no sid")
            return RecipientResult(OutcomeClass.ACCEPTED, sid)
        code = body.get("code")
        number = code if isinstance(code, int) else None
        outcome = classify_twilio(response.status_code, number)
        return RecipientResult(
            outcome,
            "",
            str(number if number is not None else f"HTTP_{response.status_code}"),
            str(body.get("message", ""))[:200],
            retry_after=_retry_after(response) if outcome is OutcomeClass.THROTTLED else 0.0,
            opted_out=number == OPTED_OUT,
        )

    async def query_status(self, queries: Sequence[StatusQuery]) -> StatusAnswer:
        """``GET Messages/{Sid}.json`` per message; one sent with an unknown
        outcome has no sid, and is looked for in the list of the number's
        messages (``_find``)."""
        return StatusAnswer(list(await asyncio.gather(*(self._query(q) for q in queries))))

    async def _query(self, query: StatusQuery) -> VendorStatus | None:
        if not query.vendor_id:
            return await self._find(query)
        url = self._url.removesuffix(".json") + f"/{quote(query.vendor_id, safe='')}.json"
        body = await self._get(url)
        return _final_status(body) if body is not None else None

    async def _find(self, query: StatusQuery) -> VendorStatus | None:
        """The fate of a send whose answer was lost: the one message to the
        number (from our number, when we send from one) that Twilio created
        while our call could have reached it, from the call's start (a timeout
        before the SENT time) to the SENT time, give or take clock skew. None
        when there is none (the request never arrived), several (no guess), or
        the page does not reach back that far."""
        latest = query.sent_ms + FIND_SKEW_MS
        earliest = query.sent_ms - int(self._timeout * 1000) - FIND_SKEW_MS
        params = {"To": query.phone, "PageSize": str(FIND_PAGE)}
        if self._config.from_number and not self._config.messaging_service_sid:
            params["From"] = self._config.from_number
        body = await self._get(f"{self._url}?{urlencode(params)}")
        listed = body.get("messages") if body is not None else None
        if not isinstance(listed, list):
            return None
        times = [_time_ms(m.get("date_created")) if isinstance(m, dict) else 0 for m in listed]
        if len(listed) >= FIND_PAGE and min(times, default=0) > earliest:
            return None
        found = [m for m, at in zip(listed, times, strict=True) if earliest <= at <= latest]
        return _final_status(found[0]) if len(found) == 1 else None

    async def _get(self, url: str) -> dict[str, object] | None:
        """The JSON object a GET answers, or None when it could not be had."""
        try:
            response, body = await vendor_call(
                self._http,
                "GET",
                url,
                vendor=self.name,
                headers={"accept": "application/json"},
                timeout=self._timeout,
                slots=self._slots,
                auth=self._auth,
            )
        except CallFailed:
            return None
        return body if response.is_success else None

    async def aclose(self) -> None:
        """Nothing of its own to release; the HTTP client belongs to the caller."""


def _final_status(body: dict[str, object]) -> VendorStatus | None:
    """A Message resource's final word, read as its status callback is
    (providers/receipts.py): same codes; None while it has none."""
    status = str(body.get("status", ""))
    at = _time_ms(body.get("date_updated"))
    if status in ("delivered", "read"):
        return VendorStatus(True, status, "", at)
    if status in ("undelivered", "failed", "canceled"):
        code = body.get("error_code")
        return VendorStatus(False, str(code) if code is not None else status, status, at)
    # queued, sending, sent, ...: no final word yet.
    return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def _time_ms(value: object) -> int:
    """Milliseconds of an RFC 2822 date of the Message resource; 0 when unreadable."""
    if not isinstance(value, str):
        return 0
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError):
        return 0
