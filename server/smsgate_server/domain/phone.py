"""Phone numbers: parse and validate E.164 with ``phonenumbers``."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

__all__ = [
    "MAX_PHONE_CHARS",
    "InvalidPhoneNumber",
    "country_code",
    "is_region",
    "normalize_e164",
    "parse_calling_code",
    "region_of",
]


# E.164 has at most 15 digits after the +; 64 characters leave room for the
# spaces, dashes and brackets people write between them. Longer input is
# rejected before it is parsed or cached.
MAX_PHONE_CHARS = 64
# Cached: parsing costs tens of microseconds and the same numbers recur. The
# keys are length-checked, so a full cache of the worst keys (64 characters,
# one of them outside Latin-1) holds about 16,384 x 0.47 KB = 7.3 MiB.
PARSE_CACHE_ENTRIES = 16_384


class InvalidPhoneNumber(ValueError):
    """The text is not a valid phone number in E.164 form."""


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _parse(text: str) -> tuple[str, int] | str:
    if not text:
        return "is required"
    if not text.startswith("+"):
        return "must be in E.164 form, starting with + and the country code"
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        return f"is not a phone number ({exc._msg})"
    if not phonenumbers.is_valid_number(number):
        return "is not a valid phone number for its country"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, int(number.country_code or 0)


def normalize_e164(text: str) -> str:
    """Return the canonical E.164 form of ``text`` or raise InvalidPhoneNumber."""
    if len(text) > MAX_PHONE_CHARS:
        raise InvalidPhoneNumber(f"has more than {MAX_PHONE_CHARS} characters")
    parsed = _parse(text.strip())
    if isinstance(parsed, str):
        raise InvalidPhoneNumber(parsed)
    return parsed[0]


def country_code(e164: str) -> int:
    """The calling code (86, 1, 44, ...) of a number already normalised."""
    parsed = _parse(e164)
    if isinstance(parsed, str):
        raise InvalidPhoneNumber(parsed)
    return parsed[1]


def parse_calling_code(text: str) -> int:
    """The country calling code written as ``86`` or ``+86``; ValueError when no
    country (or non-geographic service) has it."""
    try:
        code = int(text.strip().removeprefix("+"))
    except ValueError:
        code = 0
    # A code no number can have would silently refuse every destination.
    if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        raise ValueError(f"{text!r} is not a country calling code (86, 1, 44, ...)")
    return code


def region_of(e164: str) -> str:
    """The ISO 3166-1 region (``CN``, ``US``, ...) of a number already normalised."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""


def is_region(code: str) -> bool:
    """Whether ``code`` is a region ``phonenumbers`` knows (``CN``, ``GB``, ...)."""
    return code in phonenumbers.SUPPORTED_REGIONS
