"""Verification codes below the API: generation, keyed hashes and ids (pure),
and the resend policy over time (VerificationService on real Redis with an
injected clock)."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from smsgate_server.config import Settings
from smsgate_server.domain.apps import App
from smsgate_server.domain.codes import (
    LOOK_ALIKES,
    MAX_LENGTH,
    MIN_LENGTH,
    Alphabet,
    CodeSigner,
    check_length,
    check_scope,
    check_validity,
    generate_code,
    normalize_code,
    parse_secret,
)
from smsgate_server.domain.errors import InvalidArgument, QuotaExceeded, RateLimited
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.services.sending import SendingService, SendLimits
from smsgate_server.services.verification import (
    CodePolicy,
    Delivery,
    GenerateCommand,
    Verdict,
    VerificationService,
    VerifyCommand,
)
from smsgate_server.store.codes import CodeStore
from smsgate_server.store.messages import MessageStore

# The server-wide defaults; tests replace what they exercise.
POLICY = CodePolicy.from_settings(Settings())

SIGNER = CodeSigner(b"k" * 32)
APP = App(key="ak_00000000000000000001", name="a")
PHONE = "+14155550123"
MINUTE, HOUR = 60.0, 3600.0


# -- generation ----------------------------------------------------------------


@given(st.integers(MIN_LENGTH, MAX_LENGTH), st.sampled_from(Alphabet))
def test_a_code_has_the_length_and_only_symbols_of_its_alphabet(
    length: int, alphabet: Alphabet
) -> None:
    code = generate_code(length, alphabet)
    assert len(code) == length
    assert set(code) <= set(alphabet.symbols)


@pytest.mark.parametrize("alphabet", list(Alphabet))
def test_every_symbol_of_an_alphabet_turns_up(alphabet: Alphabet) -> None:
    counts = Counter("".join(generate_code(MAX_LENGTH, alphabet) for _ in range(1000)))
    assert set(counts) == set(alphabet.symbols)
    # 10,000 uniform draws: each symbol about 400-1000 times; far below is a bias.
    assert min(counts.values()) > 10_000 / len(alphabet.symbols) / 2


@pytest.mark.parametrize("alphabet", list(Alphabet))
def test_every_position_of_a_code_is_uniform(alphabet: Alphabet) -> None:
    # A code is one draw written out symbol by symbol: a slip there would bias
    # one position (the first, the last) while the pooled counts looked fine.
    codes = [generate_code(MAX_LENGTH, alphabet) for _ in range(4000)]
    for position in range(MAX_LENGTH):
        counts = Counter(code[position] for code in codes)
        assert set(counts) == set(alphabet.symbols), position
        # About 160-400 each; half of that is over six standard deviations off.
        assert min(counts.values()) > 4000 / len(alphabet.symbols) / 2, (position, counts)


def test_alphanumeric_codes_have_no_look_alikes() -> None:
    symbols = Alphabet.ALPHANUMERIC.symbols
    assert not set(symbols) & set("0O1IL2Z5S8B")
    assert set(symbols) == set(string.digits + string.ascii_uppercase) - set(LOOK_ALIKES)
    assert Alphabet.NUMERIC.symbols == string.digits


@given(st.sampled_from(Alphabet), st.integers(MIN_LENGTH, MAX_LENGTH))
def test_typed_codes_are_normalised_to_how_they_were_generated(
    alphabet: Alphabet, length: int
) -> None:
    code = generate_code(length, alphabet)
    assert normalize_code(f"  {code.lower()}\t") == code


@pytest.mark.parametrize("length", [-1, 1, 3, 11, 100])
def test_lengths_outside_4_to_10_are_rejected(length: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_length(length)
    assert caught.value.violations[0].field == "length"


def test_length_zero_means_six() -> None:
    assert check_length(0) == 6
    assert [check_length(n) for n in (4, 10)] == [4, 10]


@pytest.mark.parametrize("validity_ms", [0, -1000, 600_001, 3_600_000])
def test_validity_outside_0_to_10_minutes_is_rejected(validity_ms: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_validity(validity_ms)
    assert caught.value.violations[0].field == "validity"


def test_validity_defaults_to_five_minutes_and_allows_ten() -> None:
    assert check_validity(None) == 300_000
    assert check_validity(600_000) == 600_000


@given(st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True))
def test_scopes_of_the_documented_characters_are_accepted(scope: str) -> None:
    assert check_scope(scope) == scope


@pytest.mark.parametrize("scope", ["", "Login", "log in", "a" * 65, "登录", "reset\n"])
def test_other_scopes_are_rejected(scope: str) -> None:
    with pytest.raises(InvalidArgument):
        check_scope(scope)


# -- keyed hashes and ids ----------------------------------------------------


def test_a_verification_id_opens_for_its_app_only() -> None:
    tag = SIGNER.phone_tag(APP.key, PHONE)
    text, parts = SIGNER.new_id(APP.key, tag)
    assert SIGNER.open_id(APP.key, text) == parts
    assert parts.tag == tag
    assert SIGNER.open_id("ak_00000000000000000002", text) is None
    assert CodeSigner(b"x" * 32).open_id(APP.key, text) is None


ISSUED_ID, _ = SIGNER.new_id(APP.key, SIGNER.phone_tag(APP.key, PHONE))


@given(st.integers(0, len(ISSUED_ID) - 1), st.integers(1, 15))
def test_any_change_to_a_verification_id_is_detected(i: int, delta: int) -> None:
    other = f"{(int(ISSUED_ID[i], 16) + delta) % 16:x}"
    assert SIGNER.open_id(APP.key, ISSUED_ID[:i] + other + ISSUED_ID[i + 1 :]) is None


@given(st.text(max_size=80))
def test_arbitrary_text_is_not_a_verification_id(text: str) -> None:
    assert SIGNER.open_id(APP.key, text) is None


def test_code_hashes_are_bound_to_app_and_phone() -> None:
    tag = SIGNER.phone_tag(APP.key, PHONE)
    stored = SIGNER.code_hash(APP.key, tag, "123456")
    assert len(stored) == 64 and "123456" not in stored
    assert stored == SIGNER.code_hash(APP.key, tag, "123456")
    assert stored != SIGNER.code_hash(APP.key, tag, "123457")
    assert stored != SIGNER.code_hash("ak_00000000000000000002", tag, "123456")
    assert tag != SIGNER.phone_tag("ak_00000000000000000002", PHONE)
    assert tag != SIGNER.phone_tag(APP.key, "+14155550124")


def test_configured_secrets_are_read_as_hex_or_as_text() -> None:
    assert parse_secret("00ff" * 8) == b"\x00\xff" * 8
    assert parse_secret(" correct horse battery staple ") == b"correct horse battery staple"
    with pytest.raises(ValueError):
        CodeSigner(b"short")


# -- the resend policy over time (injected clock, real Redis) ---------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service(
    redis_client: aioredis.Redis, clock: Clock, policy: CodePolicy | None = None
) -> VerificationService:
    store = MessageStore(
        redis_client,
        shards=2,
        event_retention_seconds=3600,
        message_retention_seconds=3600,
        idempotency_ttl_seconds=3600,
        receipt_timeout_seconds=3600,
        schedule_max_days=35,
        max_message_age_seconds=86_400,
        clock=clock,
    )
    return VerificationService(
        CodeStore(redis_client),
        SendingService(
            store,
            SendLimits.from_settings(Settings()),
            TokenSealer(b"k" * 32),
            texts=TextCipher(b"k" * 32),
        ),
        SIGNER,
        policy or POLICY,
        clock=clock,
    )


def caller(
    scope: str = "login", phone: str = PHONE, validity_ms: int | None = None
) -> GenerateCommand:
    return GenerateCommand(
        phone=phone, scope=scope, delivery=Delivery.CALLER, validity_ms=validity_ms
    )


async def test_a_code_expires_when_its_validity_has_passed(
    redis_client: aioredis.Redis, clock: Clock
) -> None:
    svc = service(redis_client, clock)
    issued = await svc.generate(APP, caller(validity_ms=120_000))
    clock.now += 119
    wrong = await svc.verify(APP, VerifyCommand(code="x", verification_id=issued.verification_id))
    assert wrong.verdict is Verdict.INCORRECT
    clock.now += 1
    late = await svc.verify(
        APP, VerifyCommand(code=issued.code, verification_id=issued.verification_id)
    )
    assert late.verdict is Verdict.EXPIRED_OR_NOT_FOUND


async def test_the_cooldown_ends_after_its_time(redis_client: aioredis.Redis, clock: Clock) -> None:
    svc = service(redis_client, clock, replace(POLICY, resend_cooldown_ms=60_000))
    first = await svc.generate(APP, caller())
    assert first.resend_ms == int(clock.now * 1000) + 60_000
    clock.now += 59
    with pytest.raises(RateLimited) as caught:
        await svc.generate(APP, caller())
    assert caught.value.retry_after == pytest.approx(1.0)
    clock.now += 1
    await svc.generate(APP, caller())


async def test_the_hourly_cap_is_a_sliding_hour(redis_client: aioredis.Redis, clock: Clock) -> None:
    policy = replace(POLICY, resend_cooldown_ms=0, per_number_hour=2, per_number_day=10)
    svc = service(redis_client, clock, policy)
    await svc.generate(APP, caller())
    clock.now += 30 * MINUTE
    await svc.generate(APP, caller())
    clock.now += 20 * MINUTE
    with pytest.raises(QuotaExceeded) as caught:
        await svc.generate(APP, caller(scope="register"))  # the caps count every scope
    assert [v.subject for v in caught.value.violations] == [f"phone:{PHONE}:hour"]
    clock.now += 10 * MINUTE  # the first code is now an hour old
    await svc.generate(APP, caller())


async def test_the_daily_cap_counts_the_last_24_hours(
    redis_client: aioredis.Redis, clock: Clock
) -> None:
    policy = replace(POLICY, resend_cooldown_ms=0, per_number_hour=5, per_number_day=3)
    svc = service(redis_client, clock, policy)
    for _ in range(3):
        await svc.generate(APP, caller())
        clock.now += 2 * HOUR
    with pytest.raises(QuotaExceeded) as caught:
        await svc.generate(APP, caller())
    assert [v.subject for v in caught.value.violations] == [f"phone:{PHONE}:day"]
    clock.now += 18 * HOUR  # 24 h after the first
    await svc.generate(APP, caller())
    # Another number of the same app has caps of its own.
    await svc.generate(APP, caller(phone="+14155550124"))


async def test_a_refused_code_does_not_count_against_the_apps_minute(
    redis_client: aioredis.Redis, clock: Clock
) -> None:
    clock.now = 60 * 28_333_333 + 40.0  # 20 s left in this minute
    svc = service(redis_client, clock, replace(POLICY, per_app_minute=2))
    await svc.generate(APP, caller())
    with pytest.raises(RateLimited):  # cooldown: given back
        await svc.generate(APP, caller())
    await svc.generate(APP, caller(phone="+14155550124"))
    with pytest.raises(RateLimited) as caught:
        await svc.generate(APP, caller(phone="+14155550125"))
    assert caught.value.reason == "APP_VERIFY_RATE_LIMITED"
    assert caught.value.retry_after == pytest.approx(20.0)
    clock.now += 20
    await svc.generate(APP, caller(phone="+14155550125"))


async def test_a_code_refused_for_the_apps_minute_leaves_the_number_untouched(
    redis_client: aioredis.Redis, clock: Clock
) -> None:
    # Why GenerateCode asks the app's counter before issuing, in a round trip of
    # its own: sending both at once would replace the live code, start a
    # cooldown and count a send even when the app's minute then refuses.
    clock.now = 60 * 28_333_334 + 1.0
    policy = replace(POLICY, per_app_minute=1, resend_cooldown_ms=0, per_number_hour=2)
    svc = service(redis_client, clock, policy)
    live = await svc.generate(APP, caller())
    with pytest.raises(RateLimited) as caught:
        await svc.generate(APP, caller())
    assert caught.value.reason == "APP_VERIFY_RATE_LIMITED"
    by_scope = await svc.verify(APP, VerifyCommand(code=live.code, phone=PHONE, scope="login"))
    assert by_scope.verdict is Verdict.VERIFIED
    clock.now += MINUTE
    await svc.generate(APP, caller())  # the refused code was not counted: 2 of 2
    clock.now += MINUTE
    with pytest.raises(QuotaExceeded):
        await svc.generate(APP, caller())
