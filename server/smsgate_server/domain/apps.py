"""App credentials: key, secret, the bearer token that joins them, and hashing."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from smsgate_server.domain.phone import E164_ONLY, NumberPolicy
from smsgate_server.domain.policy import SERVER_POLICY, PolicyOverrides

__all__ = ["App", "Credentials", "hash_secret", "new_credentials", "parse_token", "secret_matches"]

_SEP = "."
# Exactly what new_credentials makes: 20 hex digits of key, 43 base64url
# characters of secret. Nothing else is looked up or cached.
_TOKEN = re.compile(r"(ak_[0-9a-f]{20})\.(as_[A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class App:
    """An authenticated app, with its own verification policy where it has one
    (None: the server-wide setting applies)."""

    key: str
    name: str
    # Calling codes (86, 1, ...) that verification codes may be sent to.
    allowed_countries: frozenset[int] | None = None
    verify_per_minute: int | None = None
    # How its recipients' numbers are read and which types are refused.
    numbers: NumberPolicy = E164_ONLY
    # Its own sending-policy values (caps, quiet hours) where it has them.
    policy: PolicyOverrides = SERVER_POLICY


@dataclass(frozen=True, slots=True)
class Credentials:
    """A new app's key and secret; the secret is shown once and stored hashed."""

    app_key: str
    app_secret: str

    @property
    def token(self) -> str:
        """``<app_key>.<app_secret>``: one string for ``authorization: Bearer``."""
        return f"{self.app_key}{_SEP}{self.app_secret}"


def new_credentials() -> Credentials:
    """A random key (public, goes in logs) and secret (256 bits, never logged)."""
    return Credentials("ak_" + secrets.token_hex(10), new_secret())


def new_secret() -> str:
    """A random app secret: 256 bits, never logged."""
    return "as_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret. Secrets are 256-bit random, so a slow hash adds nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a bearer token into key and secret; None unless it has exactly the
    shape of a token ``new_credentials`` makes."""
    match = _TOKEN.fullmatch(token)
    return (match[1], match[2]) if match else None
