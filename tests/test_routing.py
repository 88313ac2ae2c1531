"""Routes of the providers file and the router that reads them: which
providers may send a message, in which order, and why others are skipped."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from smsgate_server.dispatch.routing import Router
from smsgate_server.providers.base import Capabilities, ContentKind, OutcomeClass, RecipientResult
from smsgate_server.providers.providers_file import ProvidersFileError, Route, load_routes
from smsgate_server.providers.refusals import about_recipient

CN = "+8613800138000"
US = "+14155550123"
CA = "+16135550123"
GB = "+447400123456"
CAPS = {
    "tencent": Capabilities(200, 1, ContentKind.TEMPLATE, frozenset({"CN"})),
    "aliyun": Capabilities(1000, 100, ContentKind.TEMPLATE),
    "twilio": Capabilities(1, 1, ContentKind.TEXT),
    "simulator": Capabilities(100, 100, ContentKind.TEXT),
}
BOTH = {"tencent": "1110001", "aliyun": "SMS_1"}


def router(*routes: Route) -> Router:
    return Router(routes, CAPS, default="simulator")


def test_without_routes_the_default_provider_takes_everything() -> None:
    choice = router().route("ak_a", CN, key="m1", template=False, vendor_ids={})

    assert (choice.label, choice.candidates) == ("", ("simulator",))


def test_a_region_wins_over_a_calling_code_which_wins_over_the_default() -> None:
    r = router(
        Route("default", ("simulator",)),
        Route("+1", ("twilio", "simulator")),
        Route("CA", ("simulator",)),
    )

    assert r.route("ak_a", US, key="m1", template=False, vendor_ids={}).candidates == (
        "twilio",
        "simulator",
    )
    assert r.route("ak_a", CA, key="m1", template=False, vendor_ids={}).label == "route CA"
    assert r.route("ak_a", GB, key="m1", template=False, vendor_ids={}).label == "route default"


def test_an_apps_routes_win_over_the_global_ones() -> None:
    r = router(Route("CN", ("tencent", "aliyun")), Route("default", ("aliyun",), app="ak_b"))

    assert r.route("ak_b", CN, key="m1", template=True, vendor_ids=BOTH).candidates == ("aliyun",)
    assert r.route("ak_a", CN, key="m1", template=True, vendor_ids=BOTH).candidates == (
        "tencent",
        "aliyun",
    )


def test_no_route_for_a_destination_leaves_no_candidate_and_says_why() -> None:
    choice = router(Route("CN", ("tencent",))).route(
        "ak_a", GB, key="m1", template=False, vendor_ids={}
    )

    assert choice.candidates == ()
    assert "no route for GB" in choice.why_none()


def test_free_text_skips_a_templates_only_vendor() -> None:
    choice = router(Route("CN", ("tencent", "twilio"))).route(
        "ak_a", CN, key="m1", template=False, vendor_ids={}
    )

    assert choice.candidates == ("twilio",)
    assert choice.skipped == ("tencent sends templates only, and this is free text",)


def test_a_template_without_the_vendors_template_id_skips_that_vendor() -> None:
    choice = router(Route("CN", ("tencent", "aliyun"))).route(
        "ak_a", CN, key="m1", template=True, vendor_ids={"aliyun": "SMS_1"}
    )

    assert choice.candidates == ("aliyun",)
    assert choice.skipped == ("tencent has no vendor template id for this template",)


def test_a_region_the_vendor_does_not_serve_is_skipped() -> None:
    choice = router(Route("default", ("tencent", "twilio"))).route(
        "ak_a", US, key="m1", template=True, vendor_ids=BOTH
    )

    assert choice.candidates == ("twilio",)
    assert choice.skipped == ("tencent does not serve US",)


def test_providers_that_refused_the_message_are_left_out() -> None:
    r = router(Route("CN", ("tencent", "aliyun")))

    choice = r.route("ak_a", CN, key="m1", template=True, vendor_ids=BOTH, refused={"tencent"})
    assert choice.candidates == ("aliyun",)
    none = r.route(
        "ak_a", CN, key="m1", template=True, vendor_ids=BOTH, refused={"tencent", "aliyun"}
    )
    assert none.candidates == ()
    assert none.why_none() == "route CN: tencent refused it; aliyun refused it"


def test_weights_draw_the_first_provider_and_the_rest_follow_for_failover() -> None:
    r = router(Route("CN", ("tencent", "aliyun"), weights=(70, 30)))

    firsts: Counter[str] = Counter()
    for i in range(10_000):
        choice = r.route("ak_a", CN, key=f"01a2{i:022x}", template=True, vendor_ids=BOTH)
        assert sorted(choice.candidates) == ["aliyun", "tencent"]
        firsts[choice.candidates[0]] += 1

    assert 6_700 < firsts["tencent"] < 7_300


def test_a_message_routed_again_draws_the_same_first_provider() -> None:
    # A re-claim after a crash must not hand a send of unknown outcome to a
    # second vendor: the draw is fixed by the message id.
    r = router(Route("CN", ("tencent", "aliyun"), weights=(50, 50)))

    for i in range(200):
        key = f"01a2{i:022x}"
        firsts = {
            r.route("ak_a", CN, key=key, template=True, vendor_ids=BOTH).candidates[0]
            for _ in range(5)
        }
        assert len(firsts) == 1


@pytest.mark.parametrize(
    ("draw", "first"), [(0.0, "tencent"), (0.6999, "tencent"), (0.7, "aliyun"), (0.9999, "aliyun")]
)
def test_the_draw_falls_among_the_weights_in_route_order(draw: float, first: str) -> None:
    r = Router(
        [Route("CN", ("tencent", "aliyun"), weights=(70, 30))],
        CAPS,
        default="simulator",
        draw=lambda key: draw,
    )

    choice = r.route("ak_a", CN, key="m1", template=True, vendor_ids=BOTH)

    assert choice.candidates == (first, "aliyun" if first == "tencent" else "tencent")


def test_a_weighted_provider_that_cannot_send_leaves_the_draw_to_the_others() -> None:
    r = router(Route("CN", ("tencent", "aliyun"), weights=(100, 0)))

    choice = r.route("ak_a", CN, key="m1", template=True, vendor_ids={"aliyun": "SMS_1"})

    assert choice.candidates == ("aliyun",)


@pytest.mark.parametrize(
    ("result", "about"),
    [
        (RecipientResult(OutcomeClass.PERMANENT, code="21211"), True),
        (RecipientResult(OutcomeClass.PERMANENT, code="isv.MOBILE_NUMBER_ILLEGAL"), True),
        (RecipientResult(OutcomeClass.PERMANENT, code="X", opted_out=True), True),
        (
            RecipientResult(OutcomeClass.THROTTLED, code="LimitExceeded.PhoneNumberOneHourLimit"),
            True,
        ),
        (
            RecipientResult(
                OutcomeClass.PERMANENT, code="FailedOperation.SignatureIncorrectOrUnapproved"
            ),
            False,
        ),
        (RecipientResult(OutcomeClass.THROTTLED, code="RequestLimitExceeded"), False),
        (RecipientResult(OutcomeClass.UNKNOWN, code="21211"), False),
    ],
)
def test_refusals_about_the_recipient_are_told_from_those_about_the_account(
    result: RecipientResult, about: bool
) -> None:
    assert about_recipient(result) is about


# --- the [[routes]] of the providers file ------------------------------------

KNOWN = ("simulator", "tencent", "aliyun", "twilio")


def routes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_routes_are_read_with_their_weights_and_apps(tmp_path: Path) -> None:
    path = routes_file(
        tmp_path,
        '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\nweights = [70, 30]\n'
        '[[routes]]\ndestination = "+86"\nproviders = ["aliyun"]\napp = "ak_x"\n'
        '[[routes]]\ndestination = "default"\nproviders = ["twilio"]\n',
    )

    assert load_routes(path, KNOWN) == [
        Route("CN", ("tencent", "aliyun"), (70, 30)),
        Route("+86", ("aliyun",), (), "ak_x"),
        Route("default", ("twilio",)),
    ]


def test_a_file_without_routes_has_none(tmp_path: Path) -> None:
    assert load_routes(routes_file(tmp_path, ""), KNOWN) == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('destination = "CN"\nproviders = ["tencnet"]', r"routes\[0\]\.providers\[0\]: 'tencnet'"),
        ('destination = "CN"\nproviders = []', r"routes\[0\]\.providers: required"),
        (
            'destination = "CN"\nproviders = ["tencent", "aliyun"]\nweights = [1]',
            r"routes\[0\]\.weights: needs one weight per provider \(2\)",
        ),
        ('destination = "Mars"\nproviders = ["twilio"]', r"routes\[0\]\.destination: 'Mars'"),
        ('destination = "+999"\nproviders = ["twilio"]', r"routes\[0\]\.destination: '\+999'"),
        ('providers = ["twilio"]', r"routes\[0\]\.destination: required"),
        ('destination = "US"\nproviders = ["twilio"]\nweight = [1]', r"routes\[0\]\.weight: not"),
        (
            'destination = "US"\nproviders = ["twilio", "twilio"]',
            r"providers\[1\]: 'twilio' is listed twice",
        ),
    ],
)
def test_a_bad_route_names_its_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ProvidersFileError, match=message):
        load_routes(routes_file(tmp_path, f"[[routes]]\n{table}\n"), KNOWN)


def test_a_destination_routed_twice_is_refused(tmp_path: Path) -> None:
    text = '[[routes]]\ndestination = "US"\nproviders = ["twilio"]\n' * 2

    with pytest.raises(ProvidersFileError, match=r"routes\[1\]\.destination: 'US' is routed twice"):
        load_routes(routes_file(tmp_path, text), KNOWN)
