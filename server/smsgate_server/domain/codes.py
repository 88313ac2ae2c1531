"""Verification codes: generation, request checks, and the keyed hashes that
stand in for codes and phone numbers wherever they are stored.

Everything secret derives from one server secret (``CodeSigner``):

- a code is stored only as ``HMAC(code key, app, phone tag, code)``; without
  the secret, a stolen hash of a 6-digit code cannot be brute-forced offline;
- a phone number becomes a 64-bit *phone tag*, ``HMAC(tag key, app, phone)``,
  so Redis key names carry no phone numbers and one app's keys never meet
  another's;
- a verification id is ``<phone tag><nonce><mac>`` (16 hex digits each), the
  mac binding tag and nonce to the app. An id this server never issued to the
  app fails the mac check before any Redis call, so it is NOT_FOUND, while an
  issued id whose code has gone is an ordinary EXPIRED_OR_NOT_FOUND result.
"""

from __future__ import annotations

import enum
import hmac
import re
import secrets
from dataclasses import dataclass

from smsgate_server.domain.errors import InvalidArgument, Reason

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_VALIDITY_MS",
    "LOOK_ALIKES",
    "MAX_CODE_INPUT",
    "MAX_LENGTH",
    "MAX_VALIDITY_MS",
    "MIN_LENGTH",
    "Alphabet",
    "CodeSigner",
    "VerificationId",
    "check_length",
    "check_scope",
    "check_validity",
    "generate_code",
    "normalize_code",
    "parse_secret",
]

MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 4, 10, 6
DEFAULT_VALIDITY_MS = 5 * 60_000
MAX_VALIDITY_MS = 10 * 60_000
# Longer input cannot be a code; refusing it keeps junk out of the HMAC.
MAX_CODE_INPUT = 64
# Symbols people confuse when reading a code off a small screen.
LOOK_ALIKES = "0O1IL2Z5S8B"

_SCOPE = re.compile(r"[a-z0-9_.-]{1,64}")
_ID = re.compile(r"([0-9a-f]{16})([0-9a-f]{16})([0-9a-f]{16})")


class Alphabet(enum.Enum):
    """The symbols a code is drawn from."""

    NUMERIC = "0123456789"
    # Digits and upper-case letters without LOOK_ALIKES: 25 symbols.
    ALPHANUMERIC = "34679ACDEFGHJKMNPQRTUVWXY"

    @property
    def symbols(self) -> str:
        return self.value


def generate_code(length: int, alphabet: Alphabet) -> str:
    """``length`` symbols of ``alphabet``, each drawn uniformly with ``secrets``."""
    symbols = alphabet.symbols
    base = len(symbols)
    # One draw, uniform over every code of this length, written in base
    # ``base``: each symbol is as uniform and independent as with one draw per
    # symbol, for one call into the OS instead of ``length`` (a third of the cost).
    n = secrets.randbelow(base**length)
    out = []
    for _ in range(length):
        n, i = divmod(n, base)
        out.append(symbols[i])
    return "".join(out)


def normalize_code(text: str) -> str:
    """What the user typed, as it was generated: no surrounding blanks, upper case."""
    return text.strip().upper()


def check_scope(value: str, field: str = "scope") -> str:
    """1-64 characters of ``[a-z0-9_.-]``."""
    if not _SCOPE.fullmatch(value):
        raise InvalidArgument.field(
            field,
            "is required: 1-64 characters of a-z, 0-9, '_', '.', '-'",
            reason=Reason.INVALID_SCOPE,
        )
    return value


def check_length(value: int, field: str = "length") -> int:
    """0 means the default; otherwise MIN_LENGTH..MAX_LENGTH."""
    if value == 0:
        return DEFAULT_LENGTH
    if not MIN_LENGTH <= value <= MAX_LENGTH:
        raise InvalidArgument.field(
            field, f"must be {MIN_LENGTH}-{MAX_LENGTH} (default {DEFAULT_LENGTH})"
        )
    return value


def check_validity(value_ms: int | None, field: str = "validity") -> int:
    """None means the default; otherwise more than 0 and at most MAX_VALIDITY_MS."""
    if value_ms is None:
        return DEFAULT_VALIDITY_MS
    if not 0 < value_ms <= MAX_VALIDITY_MS:
        raise InvalidArgument.field(
            field, f"must be more than 0 and at most {MAX_VALIDITY_MS // 60_000} minutes"
        )
    return value_ms


def parse_secret(text: str) -> bytes:
    """A configured server secret: hex when it is hex, else its UTF-8 bytes."""
    text = text.strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode()


@dataclass(frozen=True, slots=True)
class VerificationId:
    """The parts of a verification id: the phone tag (which names the Redis
    slot of the phone's codes) and the nonce of one issued code."""

    tag: str
    nonce: str


class CodeSigner:
    """The keyed hashes of codes, phone numbers and verification ids."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")

        # One subkey per purpose, so no hash of one kind can pass for another.
        def subkey(label: str) -> bytes:
            return hmac.digest(secret, f"smsgate/v1/{label}".encode(), "sha256")

        self._code_key = subkey("code")
        self._tag_key = subkey("phone-tag")
        self._id_key = subkey("verification-id")

    @staticmethod
    def _mac(key: bytes, *parts: str) -> str:
        # NUL never occurs in app keys, phone numbers, tags or codes, so the
        # joined parts are unambiguous.
        # hmac.digest is the one-shot C path: about half of hmac.new's cost.
        return hmac.digest(key, "\0".join(parts).encode(), "sha256").hex()

    def phone_tag(self, app: str, phone: str) -> str:
        """64 bits that stand for ``phone`` of ``app`` in key names and ids."""
        return self._mac(self._tag_key, app, phone)[:16]

    def code_hash(self, app: str, tag: str, code: str) -> str:
        """The full HMAC-SHA256 (hex) that is stored, and compared, instead of the code."""
        return self._mac(self._code_key, app, tag, code)

    def new_id(self, app: str, tag: str) -> tuple[str, VerificationId]:
        """A fresh verification id for a code of ``tag``: its text and its parts."""
        nonce = secrets.token_hex(8)
        return tag + nonce + self._id_mac(app, tag, nonce), VerificationId(tag, nonce)

    def open_id(self, app: str, text: str) -> VerificationId | None:
        """The parts of an id issued to ``app``; None for anything else."""
        match = _ID.fullmatch(text)
        if match is None:
            return None
        tag, nonce, mac = match.groups()
        if not hmac.compare_digest(mac, self._id_mac(app, tag, nonce)):
            return None
        return VerificationId(tag, nonce)

    def _id_mac(self, app: str, tag: str, nonce: str) -> str:
        return self._mac(self._id_key, app, tag, nonce)[:16]
