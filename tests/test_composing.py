"""Composing one recipient's message from a template (pure, no Redis): where the
sign goes per region, what it costs, the params vendors get, and which number
types receive SMS."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.domain.encoding import measure
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.phone import (
    CannotReceiveSms,
    InvalidPhoneNumber,
    NumberPolicy,
    recipient_e164,
)
from smsgate_server.domain.templates import Template, TemplateKind, parse_body
from smsgate_server.services.composing import PreparedTemplate

CN, US = "+8613800138000", "+14155552671"
BODY = "{greeting}, order {order} ships {when}"

# Values a param may hold: anything but braces, sign brackets and surrogates.
values = st.text(
    alphabet=st.characters(blacklist_characters="{}【】", blacklist_categories=["Cs"]),
    max_size=35,
)


def prepared(sign: str = "Acme", body: str = BODY) -> PreparedTemplate:
    template = Template(id="t", version=3, kind=TemplateKind.NOTIFICATION, body=body)
    return PreparedTemplate(template, parse_body(body), sign)


@given(greeting=values, order=values, when=values)
def test_china_pays_for_the_sign_and_elsewhere_it_is_the_sender(
    greeting: str, order: str, when: str
) -> None:
    params = {"when": when, "order": order, "greeting": greeting}
    home = prepared().compose(CN, params, max_segments=100)
    abroad = prepared().compose(US, params, max_segments=100)
    assert home.rendered == "【Acme】" + abroad.rendered
    assert (home.sender, abroad.sender) == ("", "Acme")
    assert home.segments == measure(home.rendered).segments >= abroad.segments
    # A value never adds a bracket: the sign's are the only ones.
    assert home.rendered.count("【") == 1 and "【" not in abroad.rendered
    # Vendors with numbered params get them in placeholder order.
    assert list(json.loads(home.params_json)) == ["greeting", "order", "when"]


def test_a_sender_id_given_with_the_send_wins_over_the_sign() -> None:
    composed = prepared().compose(US, {"greeting": "a", "order": "b", "when": "c"},
                                  max_segments=10, sender="+15005550006")  # fmt: skip
    assert composed.sender == "+15005550006"


def test_without_a_sign_the_text_is_the_body_everywhere() -> None:
    params = {"greeting": "Hi", "order": "7", "when": "today"}
    assert prepared(sign="").compose(CN, params, max_segments=10).rendered == (
        "Hi, order 7 ships today"
    )


def test_a_text_over_the_segment_limit_names_the_template() -> None:
    body = "{a}" + "x" * 900
    with pytest.raises(InvalidArgument) as caught:
        prepared(body=body).compose(US, {"a": "1"}, max_segments=5)
    assert [v.field for v in caught.value.violations] == ["template"]


@pytest.mark.parametrize(
    ("number", "policy", "e164"),
    [
        ("13800138000", NumberPolicy("CN"), CN),
        ("(415) 555-2671", NumberPolicy("US"), US),
        ("+8613800138000", NumberPolicy("US"), CN),
        ("07911 123456", NumberPolicy("GB"), "+447911123456"),
    ],
)
def test_national_formats_are_read_in_the_apps_region(
    number: str, policy: NumberPolicy, e164: str
) -> None:
    assert recipient_e164(number, policy) == e164


@pytest.mark.parametrize(
    "number",
    [
        "+442079460958",  # GB fixed line
        "+861012345678",  # CN fixed line (Beijing)
        "+18005551212",  # US toll free
        "+19005551234",  # US premium rate
    ],
)
def test_numbers_that_cannot_receive_sms_are_refused(number: str) -> None:
    with pytest.raises(CannotReceiveSms):
        recipient_e164(number, NumberPolicy())


def test_an_ambiguous_number_passes_unless_the_app_is_mobile_only() -> None:
    assert recipient_e164(US, NumberPolicy()) == US
    with pytest.raises(CannotReceiveSms, match="fixed line"):
        recipient_e164(US, NumberPolicy(mobile_only=True))
    assert recipient_e164(CN, NumberPolicy(mobile_only=True)) == CN


def test_a_national_number_without_a_region_is_invalid() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"E\.164"):
        recipient_e164("13800138000", NumberPolicy())
