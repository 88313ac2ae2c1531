"""Request signatures of the vendors: Tencent Cloud TC3-HMAC-SHA256, Alibaba
Cloud ACS3-HMAC-SHA256 (V3) and Twilio's X-Twilio-Signature.

Pure functions of their inputs (the clock and nonce come in as arguments), so
the vendors' published examples pin them byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "ACS3_ALGORITHM",
    "TC3_ALGORITHM",
    "Tc3Signature",
    "acs3_authorization",
    "sha256_hex",
    "tc3_sign",
    "twilio_signature",
]

TC3_ALGORITHM = "TC3-HMAC-SHA256"
ACS3_ALGORITHM = "ACS3-HMAC-SHA256"


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256, the payload hash both cloud signatures use."""
    return hashlib.sha256(data).hexdigest()


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_headers(headers: Mapping[str, str], *, lower_values: bool) -> tuple[str, str]:
    """(canonical header block, signed header list) of the headers to sign."""
    items = sorted(
        (name.lower().strip(), value.strip().lower() if lower_values else value.strip())
        for name, value in headers.items()
    )
    block = "".join(f"{name}:{value}\n" for name, value in items)
    return block, ";".join(name for name, _ in items)


@dataclass(frozen=True, slots=True)
class Tc3Signature:
    """A TC3 signature with the intermediate values the vendor's guide shows."""

    hashed_payload: str
    credential_scope: str
    hashed_canonical_request: str
    signature: str
    authorization: str


def tc3_sign(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    payload: bytes,
    method: str = "POST",
    uri: str = "/",
    query: str = "",
) -> Tc3Signature:
    """Sign a Tencent Cloud API 3.0 request; ``headers`` are exactly the ones to sign
    (at least content-type and host)."""
    hashed_payload = sha256_hex(payload)
    # Tencent lower-cases header values as well as names.
    canonical_headers, signed_headers = _canonical_headers(headers, lower_values=True)
    canonical_request = "\n".join(
        [method, uri, query, canonical_headers, signed_headers, hashed_payload]
    )
    hashed_request = sha256_hex(canonical_request.encode())
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = f"{TC3_ALGORITHM}\n{timestamp}\n{scope}\n{hashed_request}"
    key = _hmac_sha256(("TC3" + secret_key).encode(), date)
    key = _hmac_sha256(key, service)
    key = _hmac_sha256(key, "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{TC3_ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return Tc3Signature(hashed_payload, scope, hashed_request, signature, authorization)


def _percent(value: str) -> str:
    # RFC 3986: everything but unreserved characters is escaped, space as %20.
    return quote(value, safe="~")


def acs3_authorization(
    *,
    access_key_id: str,
    access_key_secret: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    hashed_payload: str,
) -> str:
    """The ``Authorization`` header of an Alibaba Cloud V3 request; ``headers`` are
    exactly the ones to sign (host, content-type and every x-acs-* header)."""
    canonical_query = "&".join(f"{_percent(k)}={_percent(v)}" for k, v in sorted(query.items()))
    canonical_headers, signed_headers = _canonical_headers(headers, lower_values=False)
    canonical_request = "\n".join(
        [method, path or "/", canonical_query, canonical_headers, signed_headers, hashed_payload]
    )
    string_to_sign = f"{ACS3_ALGORITHM}\n{sha256_hex(canonical_request.encode())}"
    signature = hmac.new(
        access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"{ACS3_ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` of a form-encoded request to ``url`` (the full URL
    Twilio called, query included)."""
    # Twilio appends each distinct name, sorted, then its distinct values, sorted.
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    data = url + "".join(
        name + value for name in sorted(by_name) for value in sorted(by_name[name])
    )
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
