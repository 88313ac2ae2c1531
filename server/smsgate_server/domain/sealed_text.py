"""Sealed message texts: the text of a message that carries a secret (a
verification code) is encrypted before it reaches Redis, so neither Redis nor
its append-only file nor a replica ever holds it in clear. It is opened only
to hand it to the provider.

AES-256-GCM under a subkey of the server secret with its own label, a random
96-bit nonce per message, and the app and message id as associated data, so a
sealed text opens for its own message only. A sealed text is
``base64url(nonce || ciphertext || tag)`` without padding.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["TextCipher", "UnreadableText"]

_NONCE_BYTES = 12


class UnreadableText(ValueError):
    """Not a text sealed for this message under this server secret."""


class TextCipher:
    """Seals and opens message texts under one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        # A subkey of its own, as for code hashes and tokens (CodeSigner, TokenSealer).
        self._aead = AESGCM(hmac.digest(secret, b"smsgate/v1/message-text", "sha256"))

    def seal(self, app: str, message_id: str, text: str) -> str:
        """``text`` encrypted for message ``message_id`` of ``app``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), _bound_to(app, message_id))
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, app: str, message_id: str, sealed: str) -> str:
        """The text ``seal`` sealed for this message; UnreadableText for anything
        else (another message's, edited, or sealed under another secret)."""
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            plain = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bound_to(app, message_id)
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise UnreadableText(
                "the text is not sealed for this message under this server secret"
            ) from None
        return plain.decode()


def _bound_to(app: str, message_id: str) -> bytes:
    # Length-prefixed, so no two (app, id) pairs run together alike.
    return b"".join(len(p).to_bytes(4, "big") + p for p in (app.encode(), message_id.encode()))
