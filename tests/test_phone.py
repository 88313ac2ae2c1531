"""Country calling codes: one parser for the setting, the CLI flag and the
code of a normalised number."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from smsgate_server.config import Settings
from smsgate_server.domain.phone import country_code, normalize_e164, parse_calling_code

CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@given(st.sampled_from(CALLING_CODES), st.booleans())
def test_every_calling_code_parses_with_or_without_plus(code: int, plus: bool) -> None:
    assert parse_calling_code(f"{'+' if plus else ''}{code}") == code


@pytest.mark.parametrize("text", ["", "+", "0", "999", "1000", "-1", "86a", "CN"])
def test_text_that_no_country_dials_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a country calling code"):
        parse_calling_code(text)


def test_a_normalised_number_has_the_code_it_was_written_with() -> None:
    assert country_code(normalize_e164("+8613800138000")) == parse_calling_code("+86")


def test_the_allowed_countries_setting_takes_commas_spaces_and_plus_signs() -> None:
    settings = Settings(verify_allowed_countries="+86, 1 44")  # type: ignore[arg-type]
    assert settings.verify_allowed_countries == frozenset({86, 1, 44})


def test_the_allowed_countries_setting_names_the_bad_code() -> None:
    with pytest.raises(ValidationError, match="'999' is not a country calling code"):
        Settings(verify_allowed_countries="86,999")  # type: ignore[arg-type]
