"""The three vendor signers: each reproduces the vendor's published example,
and the two cloud signers agree with the vendors' own Python SDKs on random
requests."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from alibabacloud_openapi_util.client import Client as AliyunUtil  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.providers.signing import (
    acs3_authorization,
    sha256_hex,
    tc3_sign,
    twilio_signature,
)
from tencentcloud.common.abstract_client import AbstractClient  # type: ignore[import-untyped]

# A copy of ../shared/vectors/signing.json, so the tests run from any checkout.
VECTORS = json.loads((Path(__file__).parent / "vectors/signing.json").read_text())

_token = st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=12)
_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
_host = st.from_regex(r"\A[a-z0-9]{1,12}\.(tencentcloudapi|aliyuncs)\.com\Z")


def test_tc3_reproduces_tencents_published_example() -> None:
    v = VECTORS["tencent_tc3_hmac_sha256"]

    signed = tc3_sign(
        secret_id=v["secret_id"],
        secret_key=v["secret_key"],
        service=v["service"],
        timestamp=v["timestamp"],
        headers={"content-type": v["content_type"], "host": v["host"]},
        payload=v["payload"].encode(),
        method=v["method"],
    )

    expect = v["expect"]
    assert signed.hashed_payload == expect["hashed_payload"]
    assert signed.credential_scope == expect["credential_scope"]
    assert signed.hashed_canonical_request == expect["hashed_canonical_request"]
    assert signed.signature == expect["signature"]
    assert signed.authorization == expect["authorization"]


def test_twilio_reproduces_twilios_published_example() -> None:
    v = VECTORS["twilio_request_validation"]

    signature = twilio_signature(v["auth_token"], v["url"], v["params"].items())

    assert signature == v["expect"]["x_twilio_signature"]


def test_twilio_signs_repeated_parameters_sorted() -> None:
    one_way = twilio_signature(
        "token", "https://example.com/cb", [("b", "2"), ("a", "y"), ("a", "x")]
    )
    other_way = twilio_signature(
        "token", "https://example.com/cb", [("a", "x"), ("a", "y"), ("b", "2")]
    )

    assert one_way == other_way


@given(
    payload=st.binary(max_size=300),
    host=_host,
    timestamp=st.integers(min_value=1_500_000_000, max_value=2_000_000_000),
    service=st.sampled_from(["sms", "cvm", "cam"]),
    key=_token,
)
def test_tc3_agrees_with_tencents_sdk(
    payload: bytes, host: str, timestamp: int, service: str, key: str
) -> None:
    content_type = "application/json"
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    request = SimpleNamespace(
        method="POST",
        uri="/",
        data=payload,
        header={"Content-Type": content_type, "Host": host, "X-TC-Timestamp": str(timestamp)},
    )

    sdk = AbstractClient._get_tc3_signature(None, {}, request, date, service, key)
    ours = tc3_sign(
        secret_id="AKID",
        secret_key=key,
        service=service,
        timestamp=timestamp,
        headers={"content-type": content_type, "host": host},
        payload=payload,
    )

    assert ours.signature == sdk


@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/", "/api/v1/x"]),
    query=st.dictionaries(_token, _value, max_size=4),
    extra=st.dictionaries(_token.map(lambda t: "x-acs-" + t.lower()), _value, max_size=4),
    host=_host,
    payload=st.binary(max_size=300),
    secret=_token,
)
def test_acs3_agrees_with_alibabas_sdk(
    method: str,
    path: str,
    query: dict[str, str],
    extra: dict[str, str],
    host: str,
    payload: bytes,
    secret: str,
) -> None:
    hashed = sha256_hex(payload)
    headers = {
        "host": host,
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-action": "SendSms",
        "x-acs-content-sha256": hashed,
        **extra,
    }
    request = SimpleNamespace(pathname=path, query=query, headers=headers, method=method)

    sdk = AliyunUtil.get_authorization(request, "ACS3-HMAC-SHA256", hashed, "AK", secret)
    ours = acs3_authorization(
        access_key_id="AK",
        access_key_secret=secret,
        method=method,
        path=path,
        query=query,
        headers=headers,
        hashed_payload=hashed,
    )

    assert ours == sdk
