"""Page and resume tokens (pure): what one server seals opens only for the same
kind, app and context, and any other text is refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.domain.events import decode_token, encode_token
from smsgate_server.domain.tokens import (
    MAX_TOKEN_CHARS,
    TOKEN_VERSION,
    InvalidToken,
    TokenKind,
    TokenSealer,
)

SECRET = bytes(range(32))
SEALER = TokenSealer(SECRET)
APP = "ak_0123456789abcdef0123"


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(payload=st.binary(max_size=2000), context=st.binary(max_size=200), app=st.text())
def test_a_sealed_payload_opens_unchanged(payload: bytes, context: bytes, app: str) -> None:
    token = SEALER.seal(TokenKind.PAGE, app, payload, context=context)
    assert SEALER.open(TokenKind.PAGE, app, token, context=context) == payload


def test_a_token_is_url_safe_text_without_padding() -> None:
    token = SEALER.seal(TokenKind.PAGE, APP, b"01HZX3\xff\x00", context=b"filters")
    assert token.isascii()
    assert not set(token) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_every_edited_byte_is_refused() -> None:
    raw = _raw(SEALER.seal(TokenKind.PAGE, APP, b"01HZX3ABCDEF", context=b"f"))
    for i in range(len(raw)):
        for flip in (0x01, 0x80, 0xFF):
            edited = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :]
            with pytest.raises(InvalidToken):
                SEALER.open(TokenKind.PAGE, APP, _text(edited), context=b"f")


def test_every_edited_character_is_refused() -> None:
    # Including edits of the last character that only touch its unused bits.
    token = SEALER.seal(TokenKind.RESUME, APP, b"1-0,2-0")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. "
    for i in range(len(token)):
        for c in alphabet:
            if c == token[i]:
                continue
            with pytest.raises(InvalidToken):
                SEALER.open(TokenKind.RESUME, APP, token[:i] + c + token[i + 1 :])


def test_every_truncation_and_extension_is_refused() -> None:
    token = SEALER.seal(TokenKind.PAGE, APP, b"01HZX3ABCDEF")
    for n in range(len(token)):
        with pytest.raises(InvalidToken):
            SEALER.open(TokenKind.PAGE, APP, token[:n])
    for extra in ("A", "AA", "==", "AAAA"):
        with pytest.raises(InvalidToken):
            SEALER.open(TokenKind.PAGE, APP, token + extra)


def test_a_token_of_another_app_is_refused() -> None:
    token = SEALER.seal(TokenKind.PAGE, "ak_app_a", b"cursor")
    with pytest.raises(InvalidToken):
        SEALER.open(TokenKind.PAGE, "ak_app_b", token)


def test_a_token_for_other_filters_is_refused() -> None:
    token = SEALER.seal(TokenKind.PAGE, APP, b"cursor", context=b'[[5], "", "", 0, 0]')
    with pytest.raises(InvalidToken):
        SEALER.open(TokenKind.PAGE, APP, token, context=b'[[], "", "", 0, 0]')


def test_a_page_token_is_no_resume_token() -> None:
    token = SEALER.seal(TokenKind.PAGE, APP, b"1-0")
    with pytest.raises(InvalidToken):
        SEALER.open(TokenKind.RESUME, APP, token)


def test_a_token_of_another_secret_is_refused() -> None:
    token = TokenSealer(b"another secret of 32 bytes......").seal(TokenKind.PAGE, APP, b"c")
    with pytest.raises(InvalidToken):
        SEALER.open(TokenKind.PAGE, APP, token)


def test_a_token_of_another_version_is_refused() -> None:
    raw = _raw(SEALER.seal(TokenKind.PAGE, APP, b"cursor"))
    assert raw[0] == TOKEN_VERSION
    for version in (0, TOKEN_VERSION + 1, 255):
        with pytest.raises(InvalidToken, match="version"):
            SEALER.open(TokenKind.PAGE, APP, _text(bytes([version]) + raw[1:]))


@pytest.mark.parametrize(
    "text", ["", "x", "not-a-token", "====", "\u00e9t\u00e9", "A" * 40, "\x00" * 40]
)
def test_text_that_is_no_token_is_refused(text: str) -> None:
    with pytest.raises(InvalidToken):
        SEALER.open(TokenKind.PAGE, APP, text)


def test_huge_input_is_refused_by_its_length() -> None:
    with pytest.raises(InvalidToken, match="too long"):
        SEALER.open(TokenKind.PAGE, APP, "A" * (MAX_TOKEN_CHARS + 1))
    with pytest.raises(InvalidToken, match="too long"):
        SEALER.open(TokenKind.PAGE, APP, "A" * 10_000_000)


def test_a_resume_token_of_the_largest_shard_count_fits() -> None:
    positions = [f"{2**64 - 1}-{2**64 - 1}"] * 256
    token = encode_token(SEALER, APP, positions)
    assert len(token) <= MAX_TOKEN_CHARS
    assert decode_token(SEALER, APP, token, 256) == positions


def test_a_resume_token_of_fewer_shards_starts_the_added_ones_at_their_start() -> None:
    token = encode_token(SEALER, APP, ["1-0", "2-5"])
    assert decode_token(SEALER, APP, token, 2) == ["1-0", "2-5"]
    assert decode_token(SEALER, APP, token, 4) == ["1-0", "2-5", "0-0", "0-0"]
    with pytest.raises(InvalidToken, match="more shards"):
        decode_token(SEALER, APP, token, 1)


def test_a_resume_token_of_another_app_is_refused() -> None:
    token = encode_token(SEALER, "ak_app_a", ["1-0"])
    with pytest.raises(InvalidToken):
        decode_token(SEALER, "ak_app_b", token, 1)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSealer(b"short")
