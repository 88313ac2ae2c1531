"""SMS text encoding: GSM 03.38 7-bit or UCS-2, segment counting and splitting.

A text is GSM-7 when every character is in the basic table or its extension
table; one character outside both makes the whole text UCS-2. Lengths are in
the units the network bills: septets for GSM-7 (an extension character is an
escape plus the character, two septets) and UTF-16 code units for UCS-2 (a
character outside the BMP is a surrogate pair, two units). A concatenated
message gives 7 septets (6 octets) of each segment to its header, so a segment
holds 160 septets or 70 units alone, 153 or 67 as one part of several; an
escape is never split from its character, nor a surrogate pair across parts,
so a part can end one unit short.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["Encoding", "Split", "TextMetrics", "measure", "split"]

# GSM 03.38 basic character set (one septet each); 0x1B, the escape, is not a character.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape plus the character (two septets).
_GSM_EXTENDED = "^{}\\[~]|€\f"
_NOT_GSM = re.compile(f"[^{re.escape(_GSM_BASIC + _GSM_EXTENDED)}]")
_EXTENDED = re.compile(f"[{re.escape(_GSM_EXTENDED)}]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class Encoding(enum.IntEnum):
    """Air encoding; values match ``smsgate.v1.TextEncoding``."""

    GSM7 = 1
    UCS2 = 2


@dataclass(frozen=True, slots=True)
class _Limits:
    single: int
    part: int


_LIMITS = {Encoding.GSM7: _Limits(160, 153), Encoding.UCS2: _Limits(70, 67)}


@dataclass(frozen=True, slots=True)
class TextMetrics:
    """How a text goes on the air: encoding, length in its units, segments."""

    encoding: Encoding
    characters: int
    segments: int


@dataclass(frozen=True, slots=True)
class Split:
    """A text as the network carries it: its metrics and the text of each segment."""

    metrics: TextMetrics
    parts: tuple[str, ...]


def _units(text: str) -> tuple[Encoding, int]:
    if _NOT_GSM.search(text) is None:
        return Encoding.GSM7, len(text) + len(_EXTENDED.findall(text))
    return Encoding.UCS2, len(text) + len(_ASTRAL.findall(text))


def _cost(ch: str, encoding: Encoding) -> int:
    if encoding is Encoding.GSM7:
        return 2 if ch in _GSM_EXTENDED else 1
    return 2 if ch > "\uffff" else 1


def _part_ends(text: str, encoding: Encoding, capacity: int) -> list[int]:
    """Where each part ends (string indices), filling parts greedily; a
    two-unit character that does not fit opens the next part."""
    ends: list[int] = []
    used = 0
    for i, ch in enumerate(text):
        cost = _cost(ch, encoding)
        if used + cost > capacity:
            ends.append(i)
            used = 0
        used += cost
    ends.append(len(text))
    return ends


def measure(text: str) -> TextMetrics:
    """Encoding, length in units and exact segment count of ``text``."""
    encoding, units = _units(text)
    limits = _LIMITS[encoding]
    if units <= limits.single:
        return TextMetrics(encoding, units, 1 if units else 0)
    return TextMetrics(encoding, units, len(_part_ends(text, encoding, limits.part)))


def split(text: str) -> Split:
    """``text`` cut into the segments the network will carry."""
    encoding, units = _units(text)
    limits = _LIMITS[encoding]
    if units <= limits.single:
        return Split(TextMetrics(encoding, units, 1 if units else 0), (text,) if text else ())
    ends = _part_ends(text, encoding, limits.part)
    starts = [0, *ends[:-1]]
    parts = tuple(text[a:b] for a, b in zip(starts, ends, strict=True))
    return Split(TextMetrics(encoding, units, len(parts)), parts)
