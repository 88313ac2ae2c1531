"""Opaque page and resume tokens: versioned, bound to an app (and a context
such as list filters) and authenticated with an HMAC under the server secret,
so a client can hand a token back but cannot forge or edit one.

A token is ``base64url(version byte || payload || mac)`` without padding; the
mac (128 bits of HMAC-SHA256) covers the kind, app, context, version and payload.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac

__all__ = ["MAX_TOKEN_CHARS", "TOKEN_VERSION", "InvalidToken", "TokenKind", "TokenSealer"]

TOKEN_VERSION = 1
# Far above any token this server issues (a resume token of 256 shards is
# about 14,000 characters); longer input is refused before it is decoded.
MAX_TOKEN_CHARS = 32_768
_MAC_BYTES = 16


class TokenKind(enum.StrEnum):
    """What a token is for; a token of one kind never opens as another."""

    PAGE = "page"
    RESUME = "resume"


class InvalidToken(ValueError):
    """Not a token this server issued, for this kind, app and context."""


class TokenSealer:
    """Seals payloads into tokens and opens them again, under one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        # A subkey of its own, so no token mac can pass for a code hash or id mac.
        self._key = hmac.digest(secret, b"smsgate/v1/token", "sha256")

    def seal(self, kind: TokenKind, app: str, payload: bytes, *, context: bytes = b"") -> str:
        """A token carrying ``payload`` that opens only for ``kind``, ``app`` and ``context``."""
        body = bytes([TOKEN_VERSION]) + payload
        raw = body + self._mac(kind, app, context, body)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def open(self, kind: TokenKind, app: str, token: str, *, context: bytes = b"") -> bytes:
        """The payload of a token sealed for ``kind``, ``app`` and ``context``;
        InvalidToken for anything else."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("is too long to be a token")
        raw = _decode(token)
        if len(raw) < 1 + _MAC_BYTES:
            raise InvalidToken("is not a token this server issued")
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if body[0] != TOKEN_VERSION:
            raise InvalidToken("has a version this server does not read")
        if not hmac.compare_digest(mac, self._mac(kind, app, context, body)):
            raise InvalidToken("is not a token this server issued for this call")
        return body[1:]

    def _mac(self, kind: TokenKind, app: str, context: bytes, body: bytes) -> bytes:
        # Each part length-prefixed, so no two (kind, app, context) run together alike.
        parts = [kind.value.encode(), app.encode(), context]
        signed = b"".join(len(part).to_bytes(4, "big") + part for part in parts) + body
        # One-shot hmac.digest runs in C: a watch seals a resume token per event.
        return hmac.digest(self._key, signed, "sha256")[:_MAC_BYTES]


def _decode(token: str) -> bytes:
    """The bytes of a canonical unpadded base64url text; InvalidToken otherwise."""
    if not token.isascii():
        raise InvalidToken("is not a token this server issued")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("is not a token this server issued") from None
    # Unused low bits of the last character decode to the same bytes: only the
    # canonical text of those bytes is a token, so every edit is refused.
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
        raise InvalidToken("is not a token this server issued")
    return raw
