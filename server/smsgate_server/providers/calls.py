"""The HTTP edge of the vendor adapters: one POST, with httpx's exceptions and
the vendor's HTTP status turned into an ``OutcomeClass`` here and nowhere else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from smsgate_server.providers.base import OutcomeClass, RecipientResult

__all__ = [
    "CallFailed",
    "VendorEndpoint",
    "no_vendor_template",
    "references_tag",
    "refuse_all",
    "vendor_call",
    "vendor_post",
]

log = logging.getLogger("smsgate.providers")

# Failures before the request left this process (or before the vendor could
# have read all of it): nothing was sent, so sending again is safe.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


@dataclass
class CallFailed(Exception):
    """A vendor call that gave no usable answer, with what that means for its recipients."""

    outcome: OutcomeClass
    code: str
    reason: str

    def results(self, count: int) -> list[RecipientResult]:
        return refuse_all(count, self.outcome, self.code, self.reason)


def refuse_all(
    count: int, outcome: OutcomeClass, code: str, reason: str, *, retry_after: float = 0.0
) -> list[RecipientResult]:
    """The same refusal for every recipient of a call."""
    return [RecipientResult(outcome, "", code, reason, retry_after)] * count


def no_vendor_template(provider: str, count: int, what: str) -> list[RecipientResult]:
    """Every recipient of a call refused for good: the message's template has no
    ``what`` (the vendor's word: template id, template code) at ``provider``."""
    return refuse_all(
        count,
        OutcomeClass.PERMANENT,
        "NO_VENDOR_TEMPLATE",
        f"no {provider} {what} for this template",
    )


def references_tag(references: Sequence[str], limit: int) -> str:
    """Our message ids, comma-joined, as many as fit in a vendor's ``limit``
    characters (the vendor echoes it; receipts are matched by vendor id)."""
    tag = ""
    for ref in references:
        candidate = f"{tag},{ref}" if tag else ref
        if len(candidate) > limit:
            break
        tag = candidate
    return tag


async def vendor_post(
    client: httpx.AsyncClient,
    url: str,
    *,
    vendor: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
    slots: asyncio.Semaphore,
    auth: httpx.BasicAuth | None = None,
) -> tuple[httpx.Response, dict[str, Any]]:
    """POST to a vendor within its concurrency limit; the response and its JSON body.

    Raises ``CallFailed``: RETRYABLE when nothing reached the vendor or it answered
    5xx, UNKNOWN when it may have acted (read timeout, connection lost before the
    answer, a gateway timeout, an unreadable answer).
    """
    return await vendor_call(
        client,
        "POST",
        url,
        vendor=vendor,
        content=content,
        headers=headers,
        timeout=timeout,
        slots=slots,
        auth=auth,
    )


class VendorEndpoint:
    """One vendor API's URL, posted to through ``vendor_post`` with at most
    ``concurrency`` calls at a time, each given ``timeout`` seconds."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        vendor: str,
        concurrency: int,
        timeout: float,
    ) -> None:
        self.url = url
        self.host = urlsplit(url).netloc
        self.vendor = vendor
        self._http = http
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout

    async def post(
        self, content: bytes, headers: Mapping[str, str]
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """``vendor_post`` to this endpoint: the response and its JSON body."""
        return await vendor_post(
            self._http,
            self.url,
            vendor=self.vendor,
            content=content,
            headers=headers,
            timeout=self._timeout,
            slots=self._slots,
        )


async def vendor_call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    vendor: str,
    headers: Mapping[str, str],
    timeout: float,
    slots: asyncio.Semaphore,
    content: bytes = b"",
    auth: httpx.BasicAuth | None = None,
) -> tuple[httpx.Response, dict[str, Any]]:
    """``vendor_post`` for any method (a status query is a GET)."""
    try:
        async with slots:
            response = await client.request(
                method,
                url,
                content=content or None,
                headers=dict(headers),
                timeout=timeout,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
    except _NOT_SENT as exc:
        raise CallFailed(OutcomeClass.RETRYABLE, "NOT_SENT", _describe(exc)) from None
    except httpx.TransportError as exc:
        log.warning("vendor call outcome unknown", extra={"vendor": vendor, "error": repr(exc)})
        raise CallFailed(OutcomeClass.UNKNOWN, "NO_ANSWER", _describe(exc)) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 504:
        # A gateway gave up waiting on the vendor, which may have sent it.
        raise CallFailed(OutcomeClass.UNKNOWN, "HTTP_504", "vendor gateway timeout")
    if response.status_code >= 500 and not isinstance(body, dict):
        raise CallFailed(
            OutcomeClass.RETRYABLE, f"HTTP_{response.status_code}", "vendor server error"
        )
    if not isinstance(body, dict):
        outcome = OutcomeClass.UNKNOWN if response.is_success else OutcomeClass.RETRYABLE
        raise CallFailed(outcome, f"HTTP_{response.status_code}", "unreadable vendor answer")
    return response, body


def _describe(exc: httpx.TransportError) -> str:
    # The class says what happened; the message may carry a URL, never a secret.
    return f"{type(exc).__name__}: {exc}"[:200]
