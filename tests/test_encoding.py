"""GSM-7 / UCS-2 analysis and splitting: a golden table, and properties checked
against an independent codec (the ``gsm0338`` package) on the encoded bytes."""

from __future__ import annotations

import codecs
from collections.abc import Callable

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.domain.encoding import Encoding, measure, split

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "^{}\\[~]|€\f"
ESCAPE = 0x1B


def reference_parts(text: str) -> tuple[Encoding, list[str]]:
    """Segments cut on the encoded bytes: GSM-7 septets from ``gsm0338`` (never
    ending a part on an escape), else UTF-16 units (never ending on a high surrogate)."""
    try:
        if "\x1b" in text:  # the escape septet is not a character of a text
            raise UnicodeEncodeError("gsm03.38", text, 0, 1, "escape")
        septets = codecs.encode(text, "gsm03.38")
    except UnicodeEncodeError:
        units = text.encode("utf-16-be")
        words = [units[i : i + 2] for i in range(0, len(units), 2)]
        chunks = _cut(words, 70, 67, lambda w: 0xD8 <= w[0] <= 0xDB)
        return Encoding.UCS2, [b"".join(c).decode("utf-16-be") for c in chunks]
    chunks = _cut([bytes([s]) for s in septets], 160, 153, lambda s: s[0] == ESCAPE)
    return Encoding.GSM7, [codecs.decode(b"".join(c), "gsm03.38") for c in chunks]


def _cut(
    units: list[bytes], single: int, part: int, opens_pair: Callable[[bytes], bool]
) -> list[list[bytes]]:
    if len(units) <= single:
        return [units] if units else []
    chunks = []
    while units:
        take = min(part, len(units))
        if take < len(units) and opens_pair(units[take - 1]):
            take -= 1
        chunks.append(units[:take])
        units = units[take:]
    return chunks


# (case, text, encoding, characters, length of each part in characters of the str)
GOLDEN = [
    ("empty", "", Encoding.GSM7, 0, []),
    ("gsm7 at 160", "a" * 160, Encoding.GSM7, 160, [160]),
    ("gsm7 at 161", "a" * 161, Encoding.GSM7, 161, [153, 8]),
    ("gsm7 at 306", "a" * 306, Encoding.GSM7, 306, [153, 153]),
    ("gsm7 at 307", "a" * 307, Encoding.GSM7, 307, [153, 153, 1]),
    ("extension fills 160", "€" * 80, Encoding.GSM7, 160, [80]),
    ("extension on the 153rd septet", "a" * 152 + "€" + "a" * 10, Encoding.GSM7, 164, [152, 11]),
    (
        "extension at 306 needs a third part",
        "a" * 152 + "€" + "a" * 152,
        Encoding.GSM7,
        306,
        [152, 152, 1],
    ),
    ("one emoji makes UCS-2", "Hello 😀", Encoding.UCS2, 8, [7]),
    ("emoji across the 67th unit", "a" * 66 + "😀" + "a" * 10, Encoding.UCS2, 78, [66, 11]),
    ("chinese with a sign at 70", "【腾讯云】" + "验" * 65, Encoding.UCS2, 70, [70]),
    ("chinese with a sign at 71", "【腾讯云】" + "验" * 66, Encoding.UCS2, 71, [67, 4]),
    ("mixed latin and chinese", "Code 1234, 验证码" + "x" * 60, Encoding.UCS2, 74, [67, 7]),
    ("one non-GSM latin letter", "ç" + "a" * 70, Encoding.UCS2, 71, [67, 4]),
]


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "lengths"),
    [case[1:] for case in GOLDEN],
    ids=[case[0] for case in GOLDEN],
)
def test_golden_segments(
    text: str, encoding: Encoding, characters: int, lengths: list[int]
) -> None:
    result = split(text)
    assert (result.metrics.encoding, result.metrics.characters) == (encoding, characters)
    assert [len(p) for p in result.parts] == lengths
    assert result.metrics.segments == len(lengths)
    assert measure(text) == result.metrics


gsm_texts = st.text(alphabet=st.sampled_from(GSM_BASIC + GSM_EXTENDED), max_size=500)
any_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(GSM_BASIC + GSM_EXTENDED),
        st.sampled_from("验证码您的【】ç😀🇨🇳\x1b"),
        st.characters(codec="utf-8"),
    ),
    max_size=400,
)


@given(st.one_of(gsm_texts, any_texts))
def test_segments_match_an_independent_codec(text: str) -> None:
    encoding, parts = reference_parts(text)
    result = split(text)
    assert result.metrics.encoding == encoding
    assert list(result.parts) == parts
    assert measure(text).segments == len(parts)


@given(st.one_of(gsm_texts, any_texts))
def test_segments_rejoin_to_the_text(text: str) -> None:
    assert "".join(split(text).parts) == text


@given(any_texts)
def test_characters_are_the_billed_units(text: str) -> None:
    encoding, _ = reference_parts(text)
    units = (
        len(codecs.encode(text, "gsm03.38"))
        if encoding is Encoding.GSM7
        else len(text.encode("utf-16-be")) // 2
    )
    assert measure(text).characters == units
