"""Phone numbers: parse and validate E.164 with ``phonenumbers``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

__all__ = [
    "E164_ONLY",
    "MAX_PHONE_CHARS",
    "CannotReceiveSms",
    "InvalidPhoneNumber",
    "NumberPolicy",
    "country_code",
    "is_region",
    "normalize_e164",
    "parse_calling_code",
    "recipient_e164",
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


class CannotReceiveSms(ValueError):
    """A valid number of a type that cannot receive SMS (a fixed line, ...)."""


_Type = phonenumbers.PhoneNumberType
# Number types that receive SMS. A VoIP number often does (Twilio's own, Google
# Voice), so it is not refused; FIXED_LINE_OR_MOBILE is where the numbering
# plan cannot tell (the US, Canada, China's ...): allowed unless the app is
# mobile-only (NumberPolicy). Every other type (fixed line, premium rate,
# toll free, shared cost, pager, UAN, voicemail, personal numbers that
# forward calls) is refused before anything is stored or paid for.
_SMS_TYPES = frozenset({_Type.MOBILE, _Type.VOIP})
_AMBIGUOUS = _Type.FIXED_LINE_OR_MOBILE
_TYPE_NAMES = {
    _Type.FIXED_LINE: "a fixed line",
    _Type.PREMIUM_RATE: "a premium-rate number",
    _Type.TOLL_FREE: "a toll-free number",
    _Type.SHARED_COST: "a shared-cost number",
    _Type.PAGER: "a pager number",
    _Type.UAN: "a universal access number",
    _Type.VOICEMAIL: "a voicemail number",
    _Type.PERSONAL_NUMBER: "a personal (forwarding) number",
    _AMBIGUOUS: "possibly a fixed line, and the app accepts mobile numbers only",
}


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    """How an app's recipients are read: the region of numbers written without
    ``+`` (``""``: E.164 only), and whether a number that may be a fixed line or
    a mobile (every US number) is accepted (the default: US numbers just work)."""

    default_region: str = ""
    mobile_only: bool = False


# The policy of an app created without one: E.164 only, mobile or ambiguous.
E164_ONLY = NumberPolicy()


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _parse(text: str, region: str = "") -> tuple[str, int, int] | str:
    if not text:
        return "is required"
    if not text.startswith("+") and not region:
        return "must be in E.164 form, starting with + and the country code"
    try:
        number = phonenumbers.parse(text, region or None)
    except phonenumbers.NumberParseException as exc:
        return f"is not a phone number ({exc._msg})"
    if not phonenumbers.is_valid_number(number):
        return "is not a valid phone number for its country"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, int(number.country_code or 0), int(phonenumbers.number_type(number))


def _parsed(text: str, region: str = "") -> tuple[str, int, int]:
    if len(text) > MAX_PHONE_CHARS:
        raise InvalidPhoneNumber(f"has more than {MAX_PHONE_CHARS} characters")
    text = text.strip()
    # An E.164 number reads the same in every region: one cache entry for it.
    parsed = _parse(text, "" if text.startswith("+") else region)
    if isinstance(parsed, str):
        raise InvalidPhoneNumber(parsed)
    return parsed


def normalize_e164(text: str, region: str = "") -> str:
    """Return the canonical E.164 form of ``text`` (E.164, or the national format
    of ``region`` when given) or raise InvalidPhoneNumber."""
    return _parsed(text, region)[0]


def recipient_e164(text: str, policy: NumberPolicy) -> str:
    """The E.164 form of a recipient written in E.164 or in the national format
    of ``policy.default_region``; InvalidPhoneNumber, or CannotReceiveSms for a
    valid number of a type that cannot receive SMS."""
    e164, _, kind = _parsed(text, policy.default_region)
    if kind in _SMS_TYPES or (kind == _AMBIGUOUS and not policy.mobile_only):
        return e164
    raise CannotReceiveSms(f"{e164} is {_TYPE_NAMES.get(kind, 'not a mobile number')}")


def country_code(e164: str) -> int:
    """The calling code (86, 1, 44, ...) of a number already normalised."""
    return _parsed(e164)[1]


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


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def region_of(e164: str) -> str:
    """The ISO 3166-1 region (``CN``, ``US``, ...) of a number already normalised
    (cached: a batch by template asks it of every recipient)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""


def is_region(code: str) -> bool:
    """Whether ``code`` is a region ``phonenumbers`` knows (``CN``, ``GB``, ...)."""
    return code in phonenumbers.SUPPORTED_REGIONS
