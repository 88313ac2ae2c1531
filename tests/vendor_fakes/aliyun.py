"""Alibaba Cloud SMS (Dysmsapi 2017-05-25) ``SendSms`` / ``SendBatchSms`` and
``QuerySendDetails`` as the vendor answers them.

Checks each request's V3 signature (ACS3-HMAC-SHA256) with the vendor's own
``alibabacloud_openapi_util`` over the headers the request says it signed,
refuses a reused nonce or a stale date, and answers in the vendor's shapes:
``{"Code": "OK", "BizId": ...}`` or a ``Code`` from its error table.
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
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

from alibabacloud_openapi_util.client import Client as AliyunUtil  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.vendor_fakes.common import FakeControls

__all__ = ["AliyunFake"]

_AUTH = re.compile(
    r"ACS3-HMAC-SHA256 Credential=(?P<ak>[^,]+),SignedHeaders=(?P<headers>[a-z0-9;-]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
# Mainland numbers bare (11 digits), others with their country code, no '+'.
_NUMBER = re.compile(r"^(1\d{10}|[2-9]\d{7,14})$")
_BEIJING = timezone(timedelta(hours=8))


@dataclass
class AliyunFake:
    """One AccessKey with its approved signs and templates.

    ``illegal`` numbers make a whole call fail with isv.MOBILE_NUMBER_ILLEGAL,
    as the vendor does, and so do ``black_keywords`` in template parameters
    with isv.BLACK_KEY_CONTROL_LIMIT; ``call_error`` refuses calls with
    (code, message).
    ``details`` holds a ``SmsSendDetailDTO`` per number sent (waiting for its
    report) and ``report`` gives one its outcome, as ``QuerySendDetails`` shows.
    """

    access_key_id: str = "LTAI5tFakeAliyunKey000000"
    access_key_secret: str = "fakeAliyunSecret000000000000000"
    signs: set[str] = field(default_factory=lambda: {"阿里云短信测试"})
    templates: set[str] = field(default_factory=lambda: {"SMS_154950909"})
    illegal: set[str] = field(default_factory=set)
    # Keywords a template variable may not carry (isv.BLACK_KEY_CONTROL_LIMIT).
    black_keywords: set[str] = field(default_factory=lambda: {"阿里大鱼"})
    call_error: tuple[str, str] | None = None
    controls: FakeControls = field(default_factory=FakeControls)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    _nonces: set[str] = field(default_factory=set)

    def providers_section(self, url: str, extra: str = "") -> str:
        """The ``[providers.aliyun]`` table of a providers file sending to this
        fake at ``url``, with ``extra`` lines (receipt_token, limits) after it."""
        return (
            '[providers.aliyun]\ntype = "aliyun"\n'
            f'access_key_id = "{self.access_key_id}"\n'
            f'access_key_secret = "{self.access_key_secret}"\nendpoint = "{url}"\n{extra}'
        )

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        status = self.controls.next_server_error()
        if status is not None:
            return self._answer("ServiceUnavailable", "The request has failed.", status)
        refused = self._check_signature(request, body)
        if refused:
            return self._answer(*refused)
        if request.headers.get("x-acs-version") != "2017-05-25":
            return self._answer("InvalidVersion", "Specified parameter Version is not valid.", 400)
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        action = request.headers.get("x-acs-action", "")
        self.calls.append((action, form))
        await self.controls.maybe_stall()
        if self.call_error is not None:
            return self._answer(*self.call_error)
        if action == "SendSms":
            numbers = form.get("PhoneNumbers", "").split(",")
            signs = [form.get("SignName", "")]
            params = [form.get("TemplateParam", "{}")]
            limit = 1000
        elif action == "SendBatchSms":
            numbers = json.loads(form.get("PhoneNumberJson", "[]"))
            signs = json.loads(form.get("SignNameJson", "[]"))
            params = [json.dumps(p) for p in json.loads(form.get("TemplateParamJson", "[]"))]
            limit = 100
            if not len(numbers) == len(signs) == len(params):
                return self._answer("isv.INVALID_PARAMETERS", "参数异常")
        elif action == "QuerySendDetails":
            return self._query(form)
        else:
            return self._answer("InvalidAction.NotFound", "Specified api is not found.", 404)
        return self._send(numbers, signs, params, form, limit)

    def report(self, number: str, delivered: bool, err_code: str) -> None:
        """The report of the last message sent to ``number`` (as the vendor writes it)."""
        detail = next(d for d in reversed(self.details) if d["PhoneNum"] == number)
        detail["SendStatus"] = 3 if delivered else 2
        detail["ErrCode"] = err_code
        detail["ReceiveDate"] = _beijing_now().strftime("%Y-%m-%d %H:%M:%S")

    def _query(self, form: dict[str, str]) -> Response:
        number, day = form.get("PhoneNumber", ""), form.get("SendDate", "")
        if not number or not re.fullmatch(r"\d{8}", day):
            return self._answer("isv.INVALID_PARAMETERS", "参数异常")
        size = int(form.get("PageSize", "0") or 0)
        if not 1 <= size <= 50:
            return self._answer("isv.INVALID_PARAMETERS", "PageSize 1-50")
        found = [
            d
            for d in self.details
            if d["PhoneNum"] == number
            and d["SendDate"].replace("-", "")[:8] == day
            and form.get("BizId", d["BizId"]) == d["BizId"]
        ]
        body: dict[str, Any] = {
            "RequestId": str(uuid.uuid4()).upper(),
            "Code": "OK",
            "Message": "OK",
            "TotalCount": len(found),
            "SmsSendDetailDTOs": {
                "SmsSendDetailDTO": [
                    {k: v for k, v in d.items() if k != "BizId"} for d in found[:size]
                ]
            },
        }
        return JSONResponse(body)

    def _check_signature(self, request: Request, body: bytes) -> tuple[str, str, int] | None:
        match = _AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return "IncompleteSignature", "The request signature does not conform.", 400
        if match["ak"] != self.access_key_id:
            return "InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404
        signed = match["headers"].split(";")
        required = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date"}
        if not required <= set(signed) or "x-acs-signature-nonce" not in signed:
            return "IncompleteSignature", "Required headers are not signed.", 400
        if hashlib.sha256(body).hexdigest() != request.headers.get("x-acs-content-sha256"):
            return "IncompleteSignature", "x-acs-content-sha256 does not match the body.", 400
        date = datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%S%z")
        if abs(time.time() - date.timestamp()) > 900:
            return "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400
        nonce = request.headers["x-acs-signature-nonce"]
        if nonce in self._nonces:
            return "SignatureNonceUsed", "Specified signature nonce was used already.", 400
        headers = {h: request.headers.get(h, "") for h in signed}
        query = dict(request.query_params)
        vendor_request = SimpleNamespace(
            pathname=request.url.path, query=query, headers=headers, method=request.method
        )
        expected = AliyunUtil.get_authorization(
            vendor_request,
            "ACS3-HMAC-SHA256",
            request.headers["x-acs-content-sha256"],
            self.access_key_id,
            self.access_key_secret,
        )
        if expected != request.headers["authorization"]:
            return "SignatureDoesNotMatch", "Specified signature is not matched.", 400
        self._nonces.add(nonce)
        return None

    def _send(
        self,
        numbers: list[str],
        signs: list[str],
        params: list[str],
        form: dict[str, str],
        limit: int,
    ) -> Response:
        if len(numbers) > limit:
            return self._answer("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if any(n in self.illegal or not _NUMBER.match(n) for n in numbers):
            return self._answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if any(s not in self.signs for s in signs):
            return self._answer("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法")
        if form.get("TemplateCode") not in self.templates:
            return self._answer("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
        for p in params:
            try:
                json.loads(p)
            except ValueError:
                return self._answer("isv.INVALID_JSON_PARAM", "JSON参数不合法")
            if any(word in p for word in self.black_keywords):
                return self._answer("isv.BLACK_KEY_CONTROL_LIMIT", "黑名单管控")
        biz_id = f"{secrets.randbelow(10**15):015d}^{secrets.randbelow(10)}"
        sent = _beijing_now().strftime("%Y-%m-%d %H:%M:%S")
        self.details.extend(
            {
                "PhoneNum": n,
                "BizId": biz_id,
                "OutId": form.get("OutId", ""),
                "TemplateCode": form.get("TemplateCode", ""),
                "SendDate": sent,
                "ReceiveDate": "",
                "SendStatus": 1,
                "ErrCode": "",
                "Content": "",
            }
            for n in numbers
        )
        return self._answer("OK", "OK", biz_id=biz_id)

    @staticmethod
    def _answer(code: str, message: str, status: int = 200, biz_id: str = "") -> Response:
        body: dict[str, Any] = {"RequestId": str(uuid.uuid4()).upper(), "Code": code}
        body["Message"] = message
        if biz_id:
            body["BizId"] = biz_id
        if status != 200:
            body["HostId"] = "dysmsapi.aliyuncs.com"
            body["Recommend"] = "https://api.aliyun.com/troubleshoot"
        return JSONResponse(body, status_code=status)


def _beijing_now() -> datetime:
    return datetime.now(UTC).astimezone(_BEIJING)
