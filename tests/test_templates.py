"""Template bodies: parsing, checks, rendering with params and signs (pure domain)."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.domain.encoding import Encoding, split
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.templates import (
    MAX_BODY_LENGTH,
    MAX_PARAM_LENGTH,
    Placeholder,
    TemplateKind,
    check_kind,
    check_sign_name,
    check_template_id,
    parse_body,
    render,
    with_sign,
)


def violations(exc: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in exc.value.violations}


def test_placeholders_are_listed_in_order_of_first_use() -> None:
    body = parse_body("Hi {name}, order {order_id} for {name} ships {1}")
    assert body.variables == ("name", "order_id", "1")


def test_double_braces_are_literal_braces() -> None:
    body = parse_body("{{code}} is {code}}}")
    assert body.parts == ("{code} is ", Placeholder("code"), "}")
    assert body.variables == ("code",)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("Your code is {code", "unbalanced '{' at position 13"),
        ("Your code is code}", "unbalanced '}' at position 17"),
        ("Hi {} there", "placeholder '{}'"),
        ("【Acme】Your code is {code}", "sign bracket at position 0"),
        ("Hi {first name}", "placeholder '{first name}'"),
        ("x" * (MAX_BODY_LENGTH + 1), f"at most {MAX_BODY_LENGTH}"),
        ("".join(f"{{v{i}}}" for i in range(33)), "at most 32"),
    ],
)
def test_bad_bodies_name_the_field(body: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_body(body, "template.body")
    assert says in violations(exc)["template.body"]


def test_verification_template_needs_a_code_placeholder() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_kind(TemplateKind.VERIFICATION, parse_body("Your code is {1}"))
    assert "{code}" in violations(exc)["body"]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_kind(0, parse_body("Hello"), kind_field="template.kind")
    assert "template.kind" in violations(exc)


def test_every_missing_unknown_and_bad_param_is_named() -> None:
    body = parse_body("{a} {b} {c} {d}")
    with pytest.raises(InvalidArgument) as exc:
        render(body, {"b": "x" * (MAX_PARAM_LENGTH + 1), "c": "{a}", "d": "【Bank】", "e": "1"})
    found = violations(exc)
    assert set(found) == {"params[a]", "params[b]", "params[c]", "params[d]", "params[e]"}
    assert "required" in found["params[a]"]
    assert f"at most {MAX_PARAM_LENGTH}" in found["params[b]"]
    assert "not a placeholder" in found["params[e]"]


def test_thousands_of_params_are_one_violation() -> None:
    with pytest.raises(InvalidArgument) as exc:
        render(parse_body("{a}"), {f"p{i}": "x" for i in range(10_000)})
    assert list(violations(exc)) == ["params"]


@pytest.mark.parametrize("value", ["", "bad id", "x" * 65, "a/b"])
def test_bad_template_ids_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument):
        check_template_id(value)


@pytest.mark.parametrize("value", ["x", "【Bank】", "a\nb", "x" * 17])
def test_bad_sign_names_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument):
        check_sign_name(value)


class Case(NamedTuple):
    body: str
    params: dict[str, str]
    sign: str
    region: str
    text: str
    encoding: Encoding
    segments: int


CN_CODE = "验证码{code}"
CN_SIGNED = "【腾讯云】验证码1234"
GOLDEN = {
    "gsm7 at 160": Case(
        "{a}" + "x" * 125, {"a": "y" * 35}, "", "US", "y" * 35 + "x" * 125, Encoding.GSM7, 1
    ),
    "gsm7 at 161": Case(
        "{a}" + "x" * 126, {"a": "y" * 35}, "", "US", "y" * 35 + "x" * 126, Encoding.GSM7, 2
    ),
    "sign is the sender id outside China": Case(
        "Hi {n}", {"n": "Al"}, "Acme", "GB", "Hi Al", Encoding.GSM7, 1
    ),
    "sign in the text in China": Case(
        "Hi {n}", {"n": "Al"}, "Acme", "CN", "【Acme】Hi Al", Encoding.UCS2, 1
    ),
    "braces escaped": Case("{{x}} {n}", {"n": "€"}, "", "US", "{x} €", Encoding.GSM7, 1),
    "chinese with a sign at 70": Case(
        CN_CODE + "。" * 58,
        {"code": "1234"},
        "腾讯云",
        "CN",
        CN_SIGNED + "。" * 58,
        Encoding.UCS2,
        1,
    ),
    "chinese with a sign at 71": Case(
        CN_CODE + "。" * 59,
        {"code": "1234"},
        "腾讯云",
        "CN",
        CN_SIGNED + "。" * 59,
        Encoding.UCS2,
        2,
    ),
    "emoji param makes UCS-2": Case(
        "Enjoy {gift}", {"gift": "🎁"}, "", "US", "Enjoy 🎁", Encoding.UCS2, 1
    ),
}


@pytest.mark.parametrize("case", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_rendering(case: Case) -> None:
    rendered = with_sign(render(parse_body(case.body), case.params), case.sign, case.region)
    assert rendered == case.text
    metrics = split(rendered).metrics
    assert (metrics.encoding, metrics.segments) == (case.encoding, case.segments)


literals = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="{}【】"), max_size=20)
names = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
values = st.text(max_size=MAX_PARAM_LENGTH)


@given(st.lists(st.tuples(literals, names), max_size=6), literals, st.data())
def test_rendering_never_leaves_a_placeholder_or_adds_a_bracket(
    pieces: list[tuple[str, str]], tail: str, data: st.DataObject
) -> None:
    body = parse_body("".join(f"{lit}{{{name}}}" for lit, name in pieces) + tail + "x")
    params = {name: data.draw(values, label=name) for name in body.variables}
    try:
        text = render(body, params)
    except InvalidArgument as exc:
        # Only values carrying braces or sign brackets are refused, each by name.
        bad = {f"params[{n}]" for n, v in params.items() if set(v) & set("{}【】")}
        assert {v.field for v in exc.violations} == bad
        return
    assert not set(text) & set("{}【】")


@given(values, st.sampled_from(["CN", "US"]))
def test_a_value_never_changes_where_the_sign_is(value: str, region: str) -> None:
    try:
        text = with_sign(render(parse_body("Hi {n}"), {"n": value}), "Acme", region)
    except InvalidArgument:
        return
    assert text.count("【") == text.count("】") == (1 if region == "CN" else 0)
