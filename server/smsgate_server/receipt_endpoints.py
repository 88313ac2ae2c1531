"""Vendor delivery-receipt callbacks on the HTTP side port, one per provider of
the providers file.

- ``POST /receipts/NAME/TOKEN``: a Tencent Cloud or Alibaba Cloud account.
  Neither vendor signs its pushes, so the path carries a secret token
  (``receipt_token``); a wrong one is a 404, like a name that does not exist.
- ``POST /receipts/NAME``: a Twilio account, whose status callbacks carry
  ``X-Twilio-Signature`` (missing or wrong: 403). The signature covers the URL
  Twilio called: behind a proxy, ``SMSGATE_PUBLIC_BASE_URL`` says what it was.

The vendor gets its OK once every receipt of the request is stored (or known
to be for no message of ours); until then it gets a 503 and posts again.

Replies (mobile-originated SMS) come the same two ways, at ``/inbound/NAME/TOKEN``
(Tencent reply callback, Aliyun ``SmsUp``) and ``/inbound/NAME`` (Twilio's
incoming-message webhook, signed). Each is stored for the account's
``inbound_app``, and one that is a STOP keyword (``SMSGATE_STOP_KEYWORDS``)
puts its sender on that app's opt-out list; until both are stored the vendor
gets a 503.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsgate_server.dispatch.receipt_intake import ReceiptIntake
from smsgate_server.domain.errors import Unavailable
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import REPLIES
from smsgate_server.providers.inbound import (
    InboundSms,
    is_stop,
    parse_aliyun_replies,
    parse_tencent_replies,
    parse_twilio_reply,
)
from smsgate_server.providers.providers_file import (
    AliyunEntry,
    TencentEntry,
    TwilioEntry,
    VendorEntry,
)
from smsgate_server.providers.receipts import (
    ALIYUN_REPLY,
    TENCENT_REPLY,
    ReceiptFormatError,
    VendorReceipt,
    parse_aliyun_receipts,
    parse_tencent_receipts,
    parse_twilio_status,
    twilio_request_valid,
)
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.replies import ReplyStore

__all__ = [
    "MAX_BODY_BYTES",
    "ReceiptEndpoint",
    "Vendor",
    "inbound_routes",
    "receipt_endpoints",
    "receipt_routes",
]

log = logging.getLogger("smsgate.receipts")
# Per provider, with a count: whoever can reach the port could post garbage.
_malformed_log = RepeatedLog(log, "malformed receipt", every=10.0)

# A Tencent push carries at most a few hundred reports (~300 bytes each).
MAX_BODY_BYTES = 1 << 20
# A Twilio status callback has about 15 fields.
MAX_FORM_FIELDS = 100


class Vendor(StrEnum):
    """Which receipt format an endpoint speaks."""

    TENCENT = "tencent"
    ALIYUN = "aliyun"
    TWILIO = "twilio"


@dataclass(frozen=True, slots=True)
class ReceiptEndpoint:
    """One provider's callback: its format and its secret (the path token, or
    the token Twilio signs with)."""

    provider: str
    vendor: Vendor
    secret: str
    # The app whose opt-out list a STOP reply lands on ('' for none).
    inbound_app: str = ""


def receipt_endpoints(entries: Mapping[str, VendorEntry]) -> dict[str, ReceiptEndpoint]:
    """The endpoints of the providers file's accounts, by provider name: those
    with a ``receipt_token`` (Tencent, Aliyun) or a token to check Twilio's
    signature with."""
    endpoints = {}
    for name, entry in entries.items():
        secret = ""
        if isinstance(entry, TencentEntry | AliyunEntry) and entry.receipt_token is not None:
            secret = entry.receipt_token.get_secret_value()
        elif isinstance(entry, TwilioEntry):
            secret = entry.callback_auth_token()
        if secret:
            endpoints[name] = ReceiptEndpoint(
                name, Vendor(entry.type), secret, entry.inbound_app or ""
            )
    return endpoints


class _TooLarge(Exception):
    """The body is over MAX_BODY_BYTES."""


def receipt_routes(
    endpoints: Mapping[str, ReceiptEndpoint],
    intake: ReceiptIntake,
    *,
    public_base_url: str | None = None,
) -> list[Route]:
    """The Starlette routes serving ``endpoints``, storing through ``intake``."""

    async def tokened(request: Request) -> Response:
        endpoint = endpoints.get(request.path_params["provider"])
        if (
            endpoint is None
            or endpoint.vendor is Vendor.TWILIO
            or not _same_secret(str(request.path_params["token"]), endpoint.secret)
        ):
            return Response(status_code=404)
        try:
            body = await _body(request)
            if endpoint.vendor is Vendor.TENCENT:
                receipts = parse_tencent_receipts(body)
            else:
                receipts = parse_aliyun_receipts(body)
        except _TooLarge:
            return _too_large()
        except ReceiptFormatError as exc:
            return _malformed(endpoint, exc)
        if not await _stored(intake, endpoint, receipts):
            return JSONResponse(
                {"result": 1, "errmsg": "retry later"}
                if endpoint.vendor is Vendor.TENCENT
                else {"code": 1, "msg": "retry later"},
                status_code=503,
            )
        return JSONResponse(TENCENT_REPLY if endpoint.vendor is Vendor.TENCENT else ALIYUN_REPLY)

    async def signed(request: Request) -> Response:
        verified = await _twilio_form(request, endpoints, public_base_url)
        if isinstance(verified, Response):
            return verified
        endpoint, params = verified
        try:
            receipt = parse_twilio_status(dict(params))
        except ReceiptFormatError as exc:
            return _malformed(endpoint, exc)
        if receipt is not None and not await _stored(intake, endpoint, [receipt]):
            return Response(status_code=503)
        return Response(status_code=204)

    return [
        Route("/receipts/{provider}/{token}", tokened, methods=["POST"]),
        Route("/receipts/{provider}", signed, methods=["POST"]),
    ]


def inbound_routes(
    endpoints: Mapping[str, ReceiptEndpoint],
    optouts: OptOutStore,
    replies_store: ReplyStore,
    stop_keywords: frozenset[str],
    *,
    public_base_url: str | None = None,
) -> list[Route]:
    """The Starlette routes taking replies for ``endpoints``."""

    async def opted_out(endpoint: ReceiptEndpoint, replies: list[InboundSms]) -> bool:
        """Whether every reply is stored, and every STOP reply's sender on the
        list (False: retry later; a re-post stores a reply again)."""
        app = endpoint.inbound_app
        if not app:
            return True
        try:
            for reply in replies:
                stop = is_stop(reply.text, stop_keywords)
                if stop:
                    await optouts.add(app, reply.phone)
                await replies_store.add(
                    app,
                    phone=reply.phone,
                    text=reply.text,
                    provider=endpoint.provider,
                    opted_out=stop,
                )
                REPLIES.labels(endpoint.provider, "true" if stop else "false").inc()
        except Unavailable:
            return False
        return True

    async def tokened(request: Request) -> Response:
        endpoint = endpoints.get(request.path_params["provider"])
        if (
            endpoint is None
            or endpoint.vendor is Vendor.TWILIO
            or not _same_secret(str(request.path_params["token"]), endpoint.secret)
        ):
            return Response(status_code=404)
        try:
            body = await _body(request)
            if endpoint.vendor is Vendor.TENCENT:
                replies = parse_tencent_replies(body)
            else:
                replies = parse_aliyun_replies(body)
        except _TooLarge:
            return _too_large()
        except ReceiptFormatError as exc:
            return _malformed(endpoint, exc)
        tencent = endpoint.vendor is Vendor.TENCENT
        if not await opted_out(endpoint, replies):
            return JSONResponse(
                {"result": 1, "errmsg": "retry later"}
                if tencent
                else {"code": 1, "msg": "retry later"},
                status_code=503,
            )
        return JSONResponse(TENCENT_REPLY if tencent else ALIYUN_REPLY)

    async def signed(request: Request) -> Response:
        verified = await _twilio_form(request, endpoints, public_base_url)
        if isinstance(verified, Response):
            return verified
        endpoint, params = verified
        try:
            reply = parse_twilio_reply(dict(params))
        except ReceiptFormatError as exc:
            return _malformed(endpoint, exc)
        if not await opted_out(endpoint, [reply]):
            return Response(status_code=503)
        # An empty TwiML answer: no message back to the sender.
        return Response("<Response/>", media_type="text/xml")

    return [
        Route("/inbound/{provider}/{token}", tokened, methods=["POST"]),
        Route("/inbound/{provider}", signed, methods=["POST"]),
    ]


async def _twilio_form(
    request: Request, endpoints: Mapping[str, ReceiptEndpoint], public_base_url: str | None
) -> tuple[ReceiptEndpoint, list[tuple[str, str]]] | Response:
    """The Twilio account and form of a POST whose X-Twilio-Signature is valid;
    else the answer: 404 (no such Twilio account), 403 (signature missing or
    wrong), 413 or 400."""
    endpoint = endpoints.get(request.path_params["provider"])
    if endpoint is None or endpoint.vendor is not Vendor.TWILIO:
        return Response(status_code=404)
    signature = request.headers.get("x-twilio-signature", "")
    if not signature:
        return Response(status_code=403)
    try:
        body = await _body(request)
        params = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except _TooLarge:
        return _too_large()
    except ValueError:  # UnicodeDecodeError too
        return _malformed(endpoint, ReceiptFormatError("not a form"))
    if not twilio_request_valid(
        endpoint.secret, _called_url(request, public_base_url), params, signature
    ):
        return Response(status_code=403)
    return endpoint, params


def _same_secret(given: str, secret: str) -> bool:
    # Digests of equal length: compare_digest's time then says nothing of
    # either length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(secret.encode()).digest()
    )


async def _body(request: Request) -> bytes:
    """The request body, or ``_TooLarge`` past MAX_BODY_BYTES (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _stored(
    intake: ReceiptIntake, endpoint: ReceiptEndpoint, receipts: list[VendorReceipt]
) -> bool:
    """Whether the vendor may have its OK: every receipt stored or useless."""
    try:
        result = await intake.store_receipts(endpoint.provider, receipts)
    except Unavailable:
        # Logged, with a count, where the store mapped it.
        return False
    return not result.retry_later


def _called_url(request: Request, public_base_url: str | None) -> str:
    """The URL the vendor called: behind a proxy, the public base URL and our path."""
    if not public_base_url:
        return str(request.url)
    query = request.url.query
    return public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _too_large() -> Response:
    return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)


def _malformed(endpoint: ReceiptEndpoint, exc: ReceiptFormatError) -> Response:
    # The reason only: a body may hold phone numbers.
    _malformed_log.occurred(endpoint.provider, provider=endpoint.provider, error=str(exc))
    return JSONResponse({"error": f"not a {endpoint.vendor} receipt: {exc}"}, status_code=400)
