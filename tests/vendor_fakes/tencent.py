"""Tencent Cloud SMS ``SendSms`` and ``PullSmsSendStatus`` (2021-01-11) as the
vendor answers them.

Checks each request's TC3-HMAC-SHA256 signature the way the API gateway does,
with the HMAC chain of Tencent's own SDK (``tencentcloud.common.sign``), and
answers in the vendor's shapes: HTTP 200 with ``Response.Error`` for a refused
call, ``Response.SendStatusSet`` with one entry per number otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from tencentcloud.common.sign import Sign  # type: ignore[import-untyped]

from tests.vendor_fakes.common import FakeControls

__all__ = ["TencentFake"]

_AUTH = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>[^/]+)/(?P<service>[^/]+)/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_BEIJING = timezone(timedelta(hours=8))


@dataclass
class TencentFake:
    """One Tencent Cloud account with one SMS application and its templates.

    ``number_codes`` makes the vendor refuse single numbers (a per-number code
    in ``SendStatusSet``); ``call_error`` refuses whole calls with that code.
    ``report`` queues a delivery report, which ``PullSmsSendStatus`` hands out
    once (``pulls`` counts those calls).
    """

    secret_id: str = "AKIDfakeTencent0000000000000000000"
    secret_key: str = "fakeTencentSecretKey00000000000000"
    sdk_app_id: str = "1400000001"
    templates: dict[str, int] = field(default_factory=lambda: {"1110001": 1})
    number_codes: dict[str, str] = field(default_factory=dict)
    call_error: str = ""
    controls: FakeControls = field(default_factory=FakeControls)
    calls: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    pulls: int = 0

    def providers_section(self, url: str, extra: str = "") -> str:
        """The ``[providers.tencent]`` table of a providers file sending to this
        fake at ``url``, with ``extra`` lines (receipt_token, limits) after it."""
        return (
            '[providers.tencent]\ntype = "tencent"\n'
            f'secret_id = "{self.secret_id}"\nsecret_key = "{self.secret_key}"\n'
            f'sdk_app_id = "{self.sdk_app_id}"\nendpoint = "{url}"\n{extra}'
        )

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        status = self.controls.next_server_error()
        if status is not None:
            return PlainTextResponse("upstream error", status_code=status)
        refused = self._check_signature(request, body)
        if refused:
            return self._error(*refused)
        action = request.headers.get("x-tc-action")
        if action not in ("SendSms", "PullSmsSendStatus"):
            return self._error("InvalidAction", "unknown action")
        if request.headers.get("x-tc-version") != "2021-01-11":
            return self._error("NoSuchVersion", "unknown version")
        try:
            params = json.loads(body)
        except ValueError:
            return self._error("FailedOperation.JsonParseFail", "bad JSON")
        if action == "PullSmsSendStatus":
            return self._pull(params)
        self.calls.append(params)
        await self.controls.maybe_stall()
        return self._send_sms(params)

    def report(self, phone: str, success: bool, description: str) -> None:
        """Queue the report of the last message sent to ``phone``."""
        status = next(s for s in reversed(self.sent) if s["PhoneNumber"] == phone)
        self.reports.append(
            {
                "UserReceiveTime": datetime.now(UTC)
                .astimezone(_BEIJING)
                .strftime("%Y-%m-%d %H:%M:%S"),
                "CountryCode": "86" if phone.startswith("+86") else "1",
                "SubscriberNumber": phone.removeprefix("+86"),
                "PhoneNumber": phone,
                "SerialNo": status["SerialNo"],
                "ReportStatus": "SUCCESS" if success else "FAIL",
                "Description": description,
                "SessionContext": status["SessionContext"],
            }
        )

    def status_callbacks(self, since: int) -> list[dict[str, Any]]:
        """The status callback entries (every one delivered) Tencent would push
        for the numbers sent from ``self.sent[since]`` on, in its callback shape."""
        now = datetime.now(UTC).astimezone(_BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        return [
            {
                "user_receive_time": now,
                "nationcode": "86" if s["PhoneNumber"].startswith("+86") else "1",
                "mobile": s["PhoneNumber"].removeprefix("+86"),
                "report_status": "SUCCESS",
                "errmsg": "DELIVRD",
                "description": "用户短信送达成功",
                "sid": s["SerialNo"],
            }
            for s in self.sent[since:]
        ]

    def _pull(self, params: dict[str, Any]) -> Response:
        self.pulls += 1
        if params.get("SmsSdkAppId") != self.sdk_app_id:
            return self._error("FailedOperation.SmsSdkAppIdVerifyFail", "SdkAppId mismatch")
        limit = params.get("Limit")
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            return self._error("InvalidParameterValue.LimitExceeded", "Limit is 1 to 100")
        handed, self.reports = self.reports[:limit], self.reports[limit:]
        return JSONResponse(
            {"Response": {"PullSmsSendStatusSet": handed, "RequestId": str(uuid.uuid4())}}
        )

    def _check_signature(self, request: Request, body: bytes) -> tuple[str, str] | None:
        match = _AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return "AuthFailure.InvalidAuthorization", "Authorization is malformed"
        if match["id"] != self.secret_id:
            return "AuthFailure.SecretIdNotFound", "The SecretId is not found"
        timestamp = int(request.headers.get("x-tc-timestamp", "0"))
        if abs(time.time() - timestamp) > 300:
            return "AuthFailure.SignatureExpire", "Signature expired"
        signed = match["headers"].split(";")
        if "content-type" not in signed or "host" not in signed:
            return "AuthFailure.SignatureFailure", "content-type and host must be signed"
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        canonical = "\n".join(
            [
                request.method,
                request.url.path,
                request.url.query,
                "".join(f"{h}:{request.headers.get(h, '').strip().lower()}\n" for h in signed),
                match["headers"],
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/{match['service']}/tc3_request"
        to_sign = (
            f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        expected = Sign.sign_tc3(self.secret_key, date, match["service"], to_sign)
        if match["service"] != "sms" or match["date"] != date or expected != match["signature"]:
            return "AuthFailure.SignatureFailure", "The provided credentials could not be validated"
        return None

    def _send_sms(self, params: dict[str, Any]) -> Response:
        if self.call_error:
            return self._error(self.call_error, "refused by the fake")
        if params.get("SmsSdkAppId") != self.sdk_app_id:
            return self._error("FailedOperation.SmsSdkAppIdVerifyFail", "SdkAppId mismatch")
        numbers = params.get("PhoneNumberSet") or []
        if not numbers:
            return self._error("MissingParameter.EmptyPhoneNumberSet", "no numbers")
        if len(numbers) > 200:
            return self._error("LimitExceeded.PhoneNumberCountLimit", "over 200 numbers")
        domestic = {str(n).startswith("+86") for n in numbers}
        if len(domestic) > 1:
            return self._error(
                "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
                "domestic and international numbers in one request",
            )
        count = self.templates.get(str(params.get("TemplateId")))
        if count is None:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "no template")
        if len(params.get("TemplateParamSet") or []) != count:
            return self._error(
                "FailedOperation.TemplateParamSetNotMatchApprovedTemplate", "params mismatch"
            )
        statuses = []
        for number in numbers:
            code = self.number_codes.get(number, "")
            if not code and not _E164.match(number):
                code = "InvalidParameterValue.IncorrectPhoneNumber"
            statuses.append(
                {
                    "SerialNo": f"2640:{secrets.randbelow(10**20):020d}" if not code else "",
                    "PhoneNumber": number,
                    "Fee": 0 if code else 1,
                    "SessionContext": params.get("SessionContext", ""),
                    "Code": code or "Ok",
                    "Message": "refused" if code else "send success",
                    "IsoCode": "CN" if number.startswith("+86") else "US",
                }
            )
        self.sent.extend(s for s in statuses if s["SerialNo"])
        return JSONResponse(
            {"Response": {"SendStatusSet": statuses, "RequestId": str(uuid.uuid4())}}
        )

    @staticmethod
    def _error(code: str, message: str) -> Response:
        # Tencent answers refused calls with HTTP 200 and an Error object.
        return JSONResponse(
            {
                "Response": {
                    "Error": {"Code": code, "Message": message},
                    "RequestId": str(uuid.uuid4()),
                }
            }
        )
