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
        """``GET Messages/{Sid}.json`` per message; a message sent with an
        unknown outcome has no sid to ask about."""
        return StatusAnswer(list(await asyncio.gather(*(self._query(q) for q in queries))))

    async def _query(self, query: StatusQuery) -> VendorStatus | None:
        if not query.vendor_id:
            return None
        try:
            response, body = await vendor_call(
                self._http,
                "GET",
                self._url.removesuffix(".json") + f"/{quote(query.vendor_id, safe='')}.json",
                vendor=self.name,
                headers={"accept": "application/json"},
                timeout=self._timeout,
                slots=self._slots,
                auth=self._auth,
            )
        except CallFailed:
            return None
        if not response.is_success:
            return None
        # Read as its status callback is (providers/receipts.py): same codes.
        status = str(body.get("status", ""))
        at = _time_ms(body.get("date_updated"))
        if status in ("delivered", "read"):
            return VendorStatus(True, status, "", at)
        if status in ("undelivered", "failed", "canceled"):
            code = body.get("error_code")
            return VendorStatus(False, str(code) if code is not None else status, status, at)
        # queued, sending, sent, ...: no final word yet.
        return None

    async def aclose(self) -> None:
        """Nothing of its own to release; the HTTP client belongs to the caller."""


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
