"""SMS text encoding: GSM 03.38 7-bit or UCS-2, and segment counting."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Encoding", "TextMetrics", "measure"]

# GSM 03.38 basic character set (one septet each).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape plus the character (two septets).
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


class Encoding(enum.IntEnum):
    """Air encoding; values match ``smsgate.v1.TextEncoding``."""

    GSM7 = 1
    UCS2 = 2


@dataclass(frozen=True, slots=True)
class TextMetrics:
    """How a text goes on the air: encoding, length in its units, segments."""

    encoding: Encoding
    characters: int
    segments: int


def measure(text: str) -> TextMetrics:
    """Encoding, length and segment count of ``text`` (concatenated SMS with UDH)."""
    septets = 0
    for ch in text:
        if ch in _GSM_BASIC:
            septets += 1
        elif ch in _GSM_EXTENDED:
            septets += 2
        else:
            return _ucs2(text)
    if septets <= 160:
        return TextMetrics(Encoding.GSM7, septets, 1 if septets else 0)
    return TextMetrics(Encoding.GSM7, septets, -(-septets // 153))


def _ucs2(text: str) -> TextMetrics:
    # Characters outside the BMP take two UTF-16 code units.
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return TextMetrics(Encoding.UCS2, units, 1)
    return TextMetrics(Encoding.UCS2, units, -(-units // 67))
