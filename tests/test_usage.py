"""Cost and usage, against a real server and Redis: GetUsage adds up exactly the
messages that were sent (per message, from GetMessage), each costing its
segments x its provider's price for its country; bad date ranges are refused
naming the field, one app never sees another's usage, the same counts are
Prometheus counters, and a wrong price table stops the start naming its key."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import phonenumbers
import pytest
import smsgate
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import usage_service_pb2 as upb
from smsgate.v1 import usage_service_pb2_grpc
from smsgate_server.domain.country_prefixes import region_by_prefix
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.phone import region_of
from smsgate_server.domain.prices import MAX_PRICE, format_micros, to_micros
from smsgate_server.providers.prices import PricesError, load_prices
from smsgate_server.runtime import Running, StartError
from smsgate_server.services.usage import UsageMetrics, UsageService
from smsgate_server.store import scripts
from smsgate_server.store.usage import UsageStore

from tests.chaos import free_port
from tests.conftest import ServerFactory
from tests.pipeline_support import TERMINAL, Client, shipped_template, wait_for_statuses
from tests.processes import Servers
from tests.support import bearer, details_of, readme_block, run_shell
from tests.test_routes_pipeline import (
    SIGN_REFUSED,
    batch_send,
    cn_numbers,
    vendors,
)
from tests.waiting import wait_until_blocking

if TYPE_CHECKING:  # the async stub types exist only in the .pyi
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.usage_service_pb2_grpc import UsageServiceAsyncStub

S = mpb.MessageStatus
COUNTED = {S.MESSAGE_STATUS_SENT, *TERMINAL}
MOBILE = phonenumbers.PhoneNumberType.MOBILE
PROVIDERS = """
[providers.tencent]
type = "tencent"
secret_id = "AKIDexample"
secret_key = "not-used"
sdk_app_id = "1400000001"
"""
# Micro-units per segment the test's simulator charges, by region.
PRICES = {"US": 7_500, "CA": 9_000, "CN": 50_000}
DEFAULT_PRICE = 10_000
PRICE_TABLE = """
[prices.simulator]
currency = "USD"
default = "0.01"
US = "0.0075"
CA = "0.009"
CN = "0.05"
"""
US = [f"+1415555{2600 + i}" for i in range(4)]
CA = "+14165550123"
CN = "+8613800138000"
GB = "+447400123456"
# The simulator's scripted numbers: refused (invalid, unsubscribed), accepted
# with no receipt ever, accepted and then undelivered.
REFUSED = ["+12025550101", "+12025550102"]
NO_RECEIPT = "+12025550105"
UNDELIVERED = "+12025550106"
TWO_SEGMENTS = "x" * 200


def providers_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(PROVIDERS + text, encoding="utf-8")
    return path


@pytest.fixture
async def server(make_server: ServerFactory, tmp_path: Path) -> Running:
    return await make_server(providers_file=providers_file(tmp_path, PRICE_TABLE), max_attempts=1)


@pytest.fixture
def usage(channel: grpc.aio.Channel) -> UsageServiceAsyncStub:
    return usage_service_pb2_grpc.UsageServiceStub(channel)


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def yesterday() -> str:
    # The start of the default range: a test that runs across midnight (UTC)
    # still finds the rows of the day it started.
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


async def send(sms: SmsServiceAsyncStub, token: str, phone: str, text: str = "hello") -> str:
    reply = await sms.SendSms(
        pb.SendSmsRequest(phone_number=phone, text=text), metadata=bearer(token)
    )
    return reply.message.id


async def get_usage(
    usage: UsageServiceAsyncStub, token: str, start: str = "", end: str = ""
) -> upb.GetUsageResponse:
    request = upb.GetUsageRequest(start_date=start or yesterday(), end_date=end or today())
    return await usage.GetUsage(request, metadata=bearer(token))


def price(region: str) -> int:
    return PRICES.get(region, DEFAULT_PRICE)


def micros(cost: str) -> int:
    return int(Decimal(cost) * 1_000_000)


@pytest.mark.cluster
async def test_usage_adds_up_the_messages_sent_with_their_cost(
    sms: SmsServiceAsyncStub, usage: UsageServiceAsyncStub, token: str
) -> None:
    phones = [*US, CA, CN, GB, *REFUSED, NO_RECEIPT, UNDELIVERED]
    ids = [await send(sms, token, p) for p in phones]
    ids.append(await send(sms, token, US[0], TWO_SEGMENTS))
    no_receipt = ids[phones.index(NO_RECEIPT)]
    ended = await wait_for_statuses(sms, token, [i for i in ids if i != no_receipt], TERMINAL)
    sent = await wait_for_statuses(sms, token, [no_receipt], {S.MESSAGE_STATUS_SENT})
    messages = {**ended, **sent}

    # What each message's own record says it should add to the usage:
    # (date, status, provider, region, currency, measure) -> amount.
    expected: Counter[tuple[str, int, str, str, str, str]] = Counter()
    for m in messages.values():
        region = region_of(m.phone_number)
        taken = any(h.status == S.MESSAGE_STATUS_SENT for h in m.history)
        # The message records its own estimated cost once a provider took it.
        if taken:
            assert (micros(m.estimated_cost), m.cost_currency_code) == (
                m.segments * price(region),
                "USD",
            )
        else:
            assert (m.estimated_cost, m.cost_currency_code) == ("", "")
        for h in m.history:
            if h.status in COUNTED:
                day = h.time.ToDatetime(dt.UTC).date().isoformat()
                row = (day, int(h.status), m.provider, region, "USD" if taken else "")
                expected[(*row, "messages")] += 1
                expected[(*row, "segments")] += m.segments
                expected[(*row, "cost")] += m.segments * price(region) if taken else 0

    reply = await get_usage(usage, token)
    got: Counter[tuple[str, int, str, str, str, str]] = Counter()
    for r in reply.rows:
        row = (r.date, int(r.status), r.provider, r.region_code, r.currency_code)
        got[(*row, "messages")] += r.messages
        got[(*row, "segments")] += r.segments
        got[(*row, "cost")] += micros(r.cost)
    assert +got == +expected
    # Every status is there: delivered, undelivered, failed, and sent awaiting a receipt.
    assert {row.status for row in reply.rows} == {
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_DELIVERED,
        S.MESSAGE_STATUS_UNDELIVERED,
        S.MESSAGE_STATUS_FAILED,
    }
    took = [m for m in messages.values() if m.status != S.MESSAGE_STATUS_FAILED]
    assert [(t.currency_code, t.messages, t.segments, micros(t.cost)) for t in reply.totals] == [
        (
            "USD",
            len(took),
            sum(m.segments for m in took),
            sum(m.segments * price(region_of(m.phone_number)) for m in took),
        )
    ]


async def test_a_two_segment_message_costs_twice_a_one_segment_one(
    sms: SmsServiceAsyncStub, usage: UsageServiceAsyncStub, token: str
) -> None:
    def sent_row(reply: upb.GetUsageResponse) -> upb.UsageRow:
        (row,) = [r for r in reply.rows if r.status == S.MESSAGE_STATUS_SENT]
        return row

    one = await send(sms, token, US[0])
    await wait_for_statuses(sms, token, [one], TERMINAL)
    first = sent_row(await get_usage(usage, token))
    two = await send(sms, token, US[1], TWO_SEGMENTS)
    (message,) = (await wait_for_statuses(sms, token, [two], TERMINAL)).values()
    both = sent_row(await get_usage(usage, token))

    assert message.segments == 2
    assert (first.segments, first.cost) == (1, "0.0075")
    assert (both.messages, both.segments, both.cost) == (2, 3, "0.0225")


async def test_another_app_sees_none_of_it(
    server: Running, sms: SmsServiceAsyncStub, usage: UsageServiceAsyncStub, token: str
) -> None:
    sent = await send(sms, token, US[0])
    await wait_for_statuses(sms, token, [sent], TERMINAL)
    other = (await server.apps.create("other-app")).token

    assert (await get_usage(usage, token)).rows
    reply = await get_usage(usage, other)
    assert list(reply.rows) == [] and list(reply.totals) == []


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("", "2026-01-31", "start_date"),
        ("2026-01-01", "", "end_date"),
        ("2026-1-1", "2026-01-31", "start_date"),
        ("2026-01-01", "2026-02-30", "end_date"),
        ("2026-01-31", "2026-01-01", "end_date"),
        ("2026-01-01", "2026-04-04", "end_date"),
    ],
)
async def test_a_bad_date_range_is_refused_naming_the_field(
    usage: UsageServiceAsyncStub, token: str, start: str, end: str, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage.GetUsage(
            upb.GetUsageRequest(start_date=start, end_date=end), metadata=bearer(token)
        )

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert list(details_of(caught.value).fields) == [field]


async def test_ninety_three_days_are_one_range(usage: UsageServiceAsyncStub, token: str) -> None:
    reply = await get_usage(usage, token, "2026-01-01", "2026-04-03")

    assert list(reply.rows) == []


@pytest.mark.cluster
async def test_the_counts_are_prometheus_counters_and_expire_with_their_retention(
    server: Running, sms: SmsServiceAsyncStub, token: str
) -> None:
    ids = [await send(sms, token, p) for p in [US[0], US[1], UNDELIVERED]]
    await wait_for_statuses(sms, token, ids, TERMINAL)
    store = UsageStore(server.redis.client, shards=server.store.shards)
    await UsageMetrics(store).refresh()

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{server.http_port}/metrics")).text
    labels = 'country="US",provider="simulator",status="delivered"'
    assert f"smsgate_usage_messages_total{{{labels}}} 2.0" in text
    assert f"smsgate_usage_segments_total{{{labels}}} 2.0" in text
    sent = 'country="US",currency="USD",provider="simulator",status="sent"'
    assert f"smsgate_usage_cost_total{{{sent}}} 0.0225" in text
    # Each day's counts go when the retention (400 days by default) has passed.
    keys = [k async for k in server.redis.client.scan_iter(match="sg:{sg*}:u:*")]
    assert keys
    for key in keys:
        assert 399 * 86_400 < await server.redis.client.ttl(key) <= 401 * 86_400


async def test_a_bad_price_table_refuses_to_start_naming_the_key(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    bad = PRICE_TABLE.replace('CN = "0.05"', "CN = 0.05")

    with pytest.raises(StartError, match=r"prices\.simulator\.CN: write the price as a string"):
        await make_server(providers_file=providers_file(tmp_path, bad))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[prices.aliyun]\ncurrency = "CNY"\n', r"prices\.aliyun: no provider 'aliyun'"),
        ('[prices.tencent]\ndefault = "0.04"\n', r"prices\.tencent\.currency: required"),
        ('[prices.tencent]\ncurrency = "CNY"\nXX = "1"\n', r"prices\.tencent\.XX: neither"),
        ('[prices.tencent]\ncurrency = "CNY"\nCN = "0.0000001"\n', r"CN: must have at most 6"),
        ('[prices.tencent]\ncurrency = "CNY"\nCN = "-1"\n', r"CN: must be a price of 0 or more"),
        ('[prices.tencent]\ncurrency = "CNY"\nCN = "abc"\n', r"CN: 'abc' is not a decimal"),
        ('[prices.tencent]\ncurrency = "yuan"\n', r"prices\.tencent\.currency: required"),
    ],
)
def test_a_wrong_price_names_its_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(PricesError, match=message):
        load_prices(providers_file(tmp_path, table))


def test_prices_are_exact_micro_units_per_provider_and_region(tmp_path: Path) -> None:
    table = load_prices(providers_file(tmp_path, PRICE_TABLE))

    assert table.micros("simulator", "CN") == 50_000
    assert table.micros("simulator", "FR") == DEFAULT_PRICE
    assert table.micros("tencent", "CN") == 0
    assert table.currency("simulator") == "USD"
    assert load_prices(None).micros("simulator", "US") == 0


# Regions phonenumbers tells from the main region of their calling code only by
# whole-number patterns: the scripts count them as that main region.
COUNTED_AS_MAIN = {"GG": "GB", "JE": "GB", "CC": "AU", "CX": "AU", "EH": "MA", "YT": "RE",
                   "BL": "GP", "MF": "GP"}  # fmt: skip


def test_the_scripts_find_the_country_phonenumbers_finds() -> None:
    wrong = {}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            expected = phonenumbers.region_code_for_number(example) or "ZZ"
            found = region_by_prefix(e164)
            if found != expected and COUNTED_AS_MAIN.get(expected) != found:
                wrong[e164] = (expected, found)
    assert wrong == {}


def test_every_process_of_a_multi_process_server_serves_the_usage_counters(
    servers: Servers, tmp_path: Path
) -> None:
    port = free_port()
    server = servers.start(tmp_path / "data", GRPC_ADDRESS=f"127.0.0.1:{port}", PROCESSES="2")
    serving = wait_until_blocking(
        lambda: [e for e in server.events() if e.get("event") == "smsgate serving"],
        lambda events: len(events) == 2,
        what="both processes to serve",
    )

    for event in serving:
        port = int(str(event["http_port"]))
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # Merged from the processes' files, plus this process's reading of Redis.
        assert "# TYPE smsgate_usage_messages_total counter" in text
        assert "# TYPE smsgate_rpc_seconds histogram" in text


async def test_the_readme_usage_session_works_when_pasted(
    server: Running, sms: SmsServiceAsyncStub, token: str
) -> None:
    sent = await send(sms, token, US[0], TWO_SEGMENTS)
    await wait_for_statuses(sms, token, [sent], TERMINAL)
    env = {
        "PATH": os.environ["PATH"],
        "BUF": str(Path(sys.executable).parent / "buf"),
        "ADDR": f"http://127.0.0.1:{server.grpc_port}",
        "TOKEN": token,
    }

    code, out, err = await run_shell(readme_block("<!-- readme-session: usage"), env=env)

    assert code == 0, out + err
    reply = json.loads(out)
    assert reply["totals"] == [
        {"currencyCode": "USD", "messages": "1", "segments": "2", "cost": "0.015"}
    ]
    assert {(r["status"], r["regionCode"], r["cost"]) for r in reply["rows"]} == {
        ("MESSAGE_STATUS_SENT", "US", "0.015"),
        ("MESSAGE_STATUS_DELIVERED", "US", "0.015"),
    }


async def test_the_python_clients_read_the_usage(
    server: Running, sms: SmsServiceAsyncStub, token: str
) -> None:
    sent = await send(sms, token, CN)
    await wait_for_statuses(sms, token, [sent], TERMINAL)
    target = f"127.0.0.1:{server.grpc_port}"
    day = dt.datetime.now(dt.UTC).date()

    async with smsgate.AsyncClient(target, token) as client:
        async_reply = await client.get_usage(day - dt.timedelta(days=1), day)

    def read_blocking() -> upb.GetUsageResponse:
        with smsgate.Client(target, token) as client:
            return client.get_usage(day - dt.timedelta(days=1), day.isoformat())

    # In a thread: the event loop goes on serving the in-process server.
    blocking_reply = await asyncio.to_thread(read_blocking)
    for reply in (async_reply, blocking_reply):
        assert [(t.currency_code, t.messages, t.segments, t.cost) for t in reply.totals] == [
            ("USD", 1, 1, "0.05")
        ]


async def test_lib_lua_finds_the_country_the_prefix_table_gives(redis_url: str) -> None:
    # lib.lua's own country_of, run by Redis on example numbers of every region.
    lib = (Path(scripts.__file__).parent / "lua" / "lib.lua").read_text()
    country_of = lib[
        lib.index("local function country_of") : lib.index("local function count_usage")
    ]
    numbers = sorted(
        {
            phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            for region in phonenumbers.SUPPORTED_REGIONS
            if (example := phonenumbers.example_number_for_type(region, MOBILE)) is not None
        }
        | {"+1", "+999", ""}
    )
    source = (
        scripts.country_prelude()
        + country_of
        + "local out = {}\nfor i, p in ipairs(ARGV) do out[i] = country_of(p) end\nreturn out\n"
    )
    client = Redis.from_url(redis_url)
    try:
        found = [r.decode() for r in await client.eval(source, 0, *numbers)]
    finally:
        await client.aclose()

    assert len(numbers) > 200
    assert dict(zip(numbers, found, strict=True)) == {n: region_by_prefix(n) for n in numbers}


async def test_after_a_failover_the_usage_is_the_provider_that_took_it_at_its_price(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    prices = (
        '[prices.tencent]\ncurrency = "CNY"\nCN = "0.04"\n'
        '[prices.aliyun]\ncurrency = "CNY"\ndefault = "0.05"\nCN = "0.045"\n'
    )
    async with vendors() as fakes:
        # Tencent refuses every call about the account: all fail over to Aliyun.
        fakes.tencent.call_error = SIGN_REFUSED
        routes = '[[routes]]\ndestination = "CN"\nproviders = ["tencent", "aliyun"]\n'
        server = await make_server(
            providers_file=fakes.providers_file(tmp_path / "providers.toml", routes + prices)
        )
        token = (await server.apps.create("usage-app")).token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            client = Client(channel, token)
            await shipped_template(client)
            ids = await batch_send(client, cn_numbers(10))
            taken = {S.MESSAGE_STATUS_SENT, *TERMINAL}
            messages = await wait_for_statuses(client.sms, token, ids, taken)
            reply = await get_usage(usage_service_pb2_grpc.UsageServiceStub(channel), token)

    assert {m.provider for m in messages.values()} == {"aliyun"}
    assert {(m.estimated_cost, m.cost_currency_code) for m in messages.values()} == {
        ("0.045", "CNY")
    }
    sent = [r for r in reply.rows if r.status == S.MESSAGE_STATUS_SENT]
    assert [(r.provider, r.region_code, r.messages, r.cost, r.currency_code) for r in sent] == [
        ("aliyun", "CN", 10, "0.45", "CNY")
    ]
    # Tencent refused before taking anything: no row of its own, nothing spent there.
    assert all(r.provider == "aliyun" for r in reply.rows)
    assert [(t.currency_code, t.messages, t.cost) for t in reply.totals] == [("CNY", 10, "0.45")]


@given(st.decimals(min_value=0, max_value=MAX_PRICE, places=6, allow_nan=False))
def test_a_price_round_trips_exactly_through_micro_units(price: Decimal) -> None:
    micros = to_micros(price)

    assert Decimal(format_micros(micros)) == price
    assert Decimal(format_micros(micros * 3)) == price * 3


@given(st.text(max_size=12), st.text(max_size=12))
def test_any_date_text_is_a_day_or_a_violation_naming_its_field(start: str, end: str) -> None:
    # A store of no shards: the request is checked, and nothing is read.
    service = UsageService(UsageStore(Redis(), shards=0))
    try:
        asyncio.run(service.get("ak", start, end))
    except InvalidArgument as exc:
        assert [v.field for v in exc.violations] in (["start_date"], ["end_date"])
