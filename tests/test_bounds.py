"""Bounds before work: every request field has a maximum checked before it is
parsed, cached or sent to Redis; a bad request hears of every bad field at
once; the gRPC receive limit fits the largest valid BatchSend; and hostile
input does not grow the server's memory."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2, verification_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.api.limits import max_request_bytes
from smsgate_server.domain.errors import InvalidArgument, Reason
from smsgate_server.domain.phone import MAX_PHONE_CHARS, _parse
from smsgate_server.domain.validation import MAX_ID_CHARS, MAX_STATUSES, Violations
from smsgate_server.runtime import Running

from tests.processes import Servers
from tests.support import bearer, details_of

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub
    from smsgate.v1.verification_service_pb2_grpc import VerificationServiceAsyncStub

PHONE = "+14155550123"
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
# Phone numbers of this size, each distinct, through every RPC that takes one.
HUGE_PHONE_CHARS = 2**20
HUGE_PHONE_CALLS = 600
RSS_GROWTH_LIMIT = 50 * 2**20


@pytest.fixture
def verification(channel: grpc.aio.Channel) -> VerificationServiceAsyncStub:
    return verification_service_pb2_grpc.VerificationServiceStub(channel)


async def bad_request(call: Any) -> tuple[str, dict[str, str]]:
    """The reason and the field violations a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    return details.reason, details.fields


# --- one violation per bad field ----------------------------------------------------


async def test_send_sms_reports_every_bad_field(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.SendSmsRequest(
        phone_number="not a number",
        text=" ",
        send_time=Timestamp(seconds=1),
        request_id="no spaces allowed",
        sender_id="s" * 33,
        labels={"Bad Key": "v"},
    )
    reason, fields = await bad_request(sms.SendSms(request, metadata=bearer(token)))
    assert fields.keys() == {
        "phone_number",
        "text",
        "send_time",
        "request_id",
        "sender_id",
        "labels['Bad Key']",
    }
    assert reason == "INVALID_ARGUMENT"  # the violations have different reasons


async def test_one_bad_field_keeps_its_own_reason(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.SendSmsRequest(phone_number="+1", text="x")
    reason, fields = await bad_request(sms.SendSms(request, metadata=bearer(token)))
    assert (reason, set(fields)) == ("INVALID_PHONE_NUMBER", {"phone_number"})


async def test_batch_send_reports_every_bad_field(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.BatchSendRequest(request_id="bad id", sender_id="s" * 33)
    _, fields = await bad_request(sms.BatchSend(request, metadata=bearer(token)))
    assert fields.keys() == {"recipients", "text", "request_id", "sender_id"}


async def test_list_messages_reports_every_bad_field(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.ListMessagesRequest(
        page_size=-1,
        page_token="forged",
        statuses=[message_pb2.MESSAGE_STATUS_UNSPECIFIED],
        phone_number="x",
        batch_id="b" * (MAX_ID_CHARS + 1),
        start_time=Timestamp(seconds=20),
        end_time=Timestamp(seconds=10),
    )
    _, fields = await bad_request(sms.ListMessages(request, metadata=bearer(token)))
    assert fields.keys() == {
        "page_size",
        "page_token",
        "statuses",
        "phone_number",
        "batch_id",
        "end_time",
    }


async def test_watch_status_reports_every_bad_field(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.WatchStatusRequest(
        message_ids=["ok", "m" * (MAX_ID_CHARS + 1)],
        batch_id="b" * (MAX_ID_CHARS + 1),
        statuses=[QUEUED] * (MAX_STATUSES + 1),
    )

    async def watch() -> None:
        async for _ in sms.WatchStatus(request, metadata=bearer(token)):
            pass

    _, fields = await bad_request(watch())
    assert fields.keys() == {"message_ids[1]", "batch_id", "statuses"}


async def test_generate_code_reports_every_bad_field(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    request = vpb.GenerateCodeRequest(
        phone_number="x",
        scope="Not A Scope",
        length=99,
        alphabet=99,  # type: ignore[arg-type]  # proto3 enums are open
        delivery=vpb.CODE_DELIVERY_CALLER,
        sender_id="only with SMS",
    )
    _, fields = await bad_request(verification.GenerateCode(request, metadata=bearer(token)))
    assert fields.keys() == {"phone_number", "scope", "length", "alphabet", "sender_id"}


async def test_a_malformed_template_id_is_invalid_before_unimplemented(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    request = vpb.GenerateCodeRequest(phone_number=PHONE, scope="login", template_id="t" * 65)
    _, fields = await bad_request(verification.GenerateCode(request, metadata=bearer(token)))
    assert fields.keys() == {"template_id"}


async def test_verify_code_reports_every_bad_field(
    verification: VerificationServiceAsyncStub, token: str
) -> None:
    request = vpb.VerifyCodeRequest(
        code="1" * 1_000_000,
        verification_id="v" * (MAX_ID_CHARS + 1),
        phone_number="x",
        scope="Not A Scope",
    )
    _, fields = await bad_request(verification.VerifyCode(request, metadata=bearer(token)))
    assert fields.keys() == {"code", "verification_id", "phone_number", "scope"}


def test_violations_share_a_reason_only_when_they_all_have_it() -> None:
    def bad(field: str, reason: Reason) -> None:
        raise InvalidArgument.field(field, "bad", reason=reason)

    same = Violations()
    same.check(None, bad, "a", Reason.INVALID_PHONE_NUMBER)
    same.check(None, bad, "b", Reason.INVALID_PHONE_NUMBER)
    with pytest.raises(InvalidArgument) as caught:
        same.raise_any()
    assert caught.value.reason is Reason.INVALID_PHONE_NUMBER
    assert [v.field for v in caught.value.violations] == ["a", "b"]
    Violations().raise_any()  # nothing kept: nothing raised


# --- limits -------------------------------------------------------------------------


async def test_a_phone_number_over_the_limit_is_refused_before_parsing(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    cached = _parse.cache_info().currsize
    request = pb.SendSmsRequest(phone_number="+1" + "4" * (MAX_PHONE_CHARS - 1), text="x")
    reason, fields = await bad_request(sms.SendSms(request, metadata=bearer(token)))
    assert reason == "INVALID_PHONE_NUMBER"
    assert fields == {"phone_number": f"has more than {MAX_PHONE_CHARS} characters"}
    assert _parse.cache_info().currsize == cached


async def test_status_filters_have_a_maximum(sms: SmsServiceAsyncStub, token: str) -> None:
    request = pb.ListMessagesRequest(statuses=[QUEUED] * (MAX_STATUSES + 1))
    _, fields = await bad_request(sms.ListMessages(request, metadata=bearer(token)))
    assert fields.keys() == {"statuses"}


def largest_batch(recipients: int) -> pb.BatchSendRequest:
    """A BatchSend with every field at its documented maximum, in 4-byte characters:
    template content (larger than the longest text) and each recipient's own
    params (32 bytes x 8 = 256 bytes of names and values)."""
    wide = "\U0001f600"
    own = {f"{i}": wide * 7 + "ab" for i in range(8)}
    return pb.BatchSendRequest(
        recipients=[pb.BatchRecipient(phone_number=wide * MAX_PHONE_CHARS, params=own)]
        * recipients,
        template=message_pb2.TemplateContent(
            template_id="t" * 64,
            params={f"p{i:02d}" + "p" * 61: wide * 35 for i in range(32)},
            version=2**31 - 1,
            sign_name=wide * 16,
        ),
        send_time=Timestamp(seconds=2**40, nanos=999_999_999),
        request_id="r" * 128,
        sender_id=wide * 32,
        labels={f"k{i:02d}" + "k" * 60: wide * 256 for i in range(16)},
    )


async def test_the_receive_limit_fits_the_largest_valid_batch_send(server: Running) -> None:
    limits = server.settings
    request = largest_batch(limits.batch_max_recipients)
    limit = max_request_bytes(
        batch_max_recipients=limits.batch_max_recipients,
        max_text_segments=limits.max_text_segments,
        max_labels=limits.max_labels,
    )
    assert request.ByteSize() <= limit < 2 * request.ByteSize()


async def test_a_body_over_the_receive_limit_is_resource_exhausted(
    server: Running, channel: grpc.aio.Channel, token: str
) -> None:
    limit = max_request_bytes(
        batch_max_recipients=server.settings.batch_max_recipients,
        max_text_segments=server.settings.max_text_segments,
        max_labels=server.settings.max_labels,
    )
    send: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/smsgate.v1.SmsService/BatchSend"
    )
    # An unknown field (number 99) of limit + 1 bytes: well-formed, too large.
    body = b"\x9a\x06" + _varint(limit + 1) + b"\x00" * (limit + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(body, metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --- memory -------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def huge_phone_requests(i: int) -> list[tuple[str, bytes]]:
    """(method path, body) of each RPC taking a phone number, with a distinct
    1 MiB one."""
    phone = f"+{i}" + "4" * HUGE_PHONE_CHARS
    return [
        (
            "/smsgate.v1.SmsService/SendSms",
            pb.SendSmsRequest(phone_number=phone, text="x").SerializeToString(),
        ),
        (
            "/smsgate.v1.SmsService/ListMessages",
            pb.ListMessagesRequest(phone_number=phone).SerializeToString(),
        ),
        (
            "/smsgate.v1.VerificationService/GenerateCode",
            vpb.GenerateCodeRequest(phone_number=phone, scope="login").SerializeToString(),
        ),
        (
            "/smsgate.v1.VerificationService/VerifyCode",
            vpb.VerifyCodeRequest(phone_number=phone, scope="login", code="1").SerializeToString(),
        ),
        (
            "/smsgate.v1.SmsService/BatchSend",
            pb.BatchSendRequest(
                recipients=[pb.BatchRecipient(phone_number=phone)], text="x"
            ).SerializeToString(),
        ),
    ]


def test_distinct_huge_phone_numbers_leave_server_memory_bounded(servers: Servers) -> None:
    server = servers.start(servers.workdir / "data")
    assert server.printed("Development app token"), server.stdout
    token = json.loads((servers.workdir / "data" / "dev-app.json").read_text())["token"]
    channel = server.channel()
    for path, body in huge_phone_requests(0):  # first calls load code and pools
        _call(channel, path, body, token)
    before = rss_bytes(server.process.pid)
    codes = set()
    for i in range(1, HUGE_PHONE_CALLS + 1):
        # Each number distinct, the RPCs taking turns.
        path, body = huge_phone_requests(i)[i % 5]
        codes.add(_call(channel, path, body, token))
    grown = rss_bytes(server.process.pid) - before
    assert codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK}, codes
    assert grown < RSS_GROWTH_LIMIT, (
        f"server RSS grew by {grown / 2**20:.0f} MiB after {HUGE_PHONE_CALLS} distinct "
        f"1 MiB phone numbers"
    )


def _call(channel: grpc.Channel, path: str, body: bytes, token: str) -> grpc.StatusCode:
    identity: Callable[[bytes], bytes] = bytes
    try:
        channel.unary_unary(path, identity, identity)(body, metadata=bearer(token), timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# --- documented -------------------------------------------------------------------

PROTO = Path(__file__).parent.parent / "proto" / "smsgate" / "v1"
FIELD = re.compile(r"^\s*(repeated |map<[^>]+> |)(\w+) (\w+) = \d+;")
# "at most 64 characters", "up to 16", "1-128 characters", "1-64 letters".
STATED_LIMIT = re.compile(r"(?i)\bat most\b|\bup to\b|\b\d+-\d+ (characters|letters)\b")


def string_and_list_fields(proto: str, messages: set[str]) -> dict[str, str]:
    """``Message.field`` -> its comment, for every string, repeated or map field
    of ``messages`` in the .proto file ``proto``."""
    out: dict[str, str] = {}
    message, comment = "", ""
    for line in (PROTO / proto).read_text().splitlines():
        if line.startswith("message "):
            message = line.split()[1]
        stripped = line.strip()
        if stripped.startswith("//"):
            comment += stripped[2:] + " "
            continue
        match = FIELD.match(line)
        if match and message in messages and (match[1] or match[2] == "string"):
            out[f"{message}.{match[3]}"] = " ".join(comment.split())
        comment = ""
    return out


@pytest.mark.parametrize(
    ("proto", "messages"),
    [
        (
            "sms_service.proto",
            {
                "SendSmsRequest",
                "BatchRecipient",
                "BatchSendRequest",
                "GetMessageRequest",
                "ListMessagesRequest",
                "CancelMessageRequest",
                "CancelBatchRequest",
                "WatchStatusRequest",
            },
        ),
        ("verification_service.proto", {"GenerateCodeRequest", "VerifyCodeRequest"}),
    ],
)
def test_every_string_and_list_of_a_request_states_its_maximum(
    proto: str, messages: set[str]
) -> None:
    fields = string_and_list_fields(proto, messages)
    assert {m for m in messages if not any(f.startswith(m + ".") for f in fields)} == set()
    unstated = [name for name, comment in fields.items() if not STATED_LIMIT.search(comment)]
    assert unstated == []
