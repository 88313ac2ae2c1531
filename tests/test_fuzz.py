"""Hostile input to every RPC: requests built field by field from the protobuf
descriptors, well-formed wire garbage, mutated real ids and tokens, odd
credentials, bodies that are not protobuf and connections that are not HTTP/2.
Every call gets a real answer (never UNKNOWN or INTERNAL) and the server's
memory stays bounded.

One ``smsgate-server`` process (embedded Redis) serves the whole module; the
tests at the end compare its RSS with where it started. ``CHAOS_FUZZ_EXAMPLES``
sets the examples per test (``make chaos`` runs many more than ``make test``).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smsgate.v1 import (
    message_pb2,
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    usage_service_pb2,
    verification_service_pb2,
    verification_service_pb2_grpc,
)

from tests.processes import ServerProcess, Servers

EXAMPLES = int(os.environ.get("CHAOS_FUZZ_EXAMPLES", "15"))
# A valid WatchStatus request streams until the client leaves: give it this long.
STREAM_SECONDS = 0.3
# How much the server may grow over the module (the bound for hostile input).
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
RAW_CONNECTIONS = 1_000
# Distinct 1 MiB phone numbers: retained, they would exceed the limit above.
HUGE_INPUTS = 100
NOT_AN_ANSWER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

PHONES = ["+14155550123", "+14155550124"]
TEMPLATE_BODY = "Hello {name}, your code is {code}"
FD = descriptor.FieldDescriptor
SERVICES = [
    sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"],
    verification_service_pb2.DESCRIPTOR.services_by_name["VerificationService"],
    template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"],
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"],
]
METHODS = [method for service in SERVICES for method in service.methods]
METHOD_IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]
METHOD = {m.name: m for m in METHODS}

# Bodies no protobuf parser accepts, each for its own reason.
UNDECODABLE = {
    "truncated-varint": b"\x08\xff\xff\xff",
    "length-past-end": b"\x0a\x10abc",
    "wire-type-7": b"\x0f\x00",
    "field-number-0": b"\x00\x01",
    "end-group-alone": b"\x0c",
    "text-not-protobuf": b"GET / HTTP/1.1\r\n\r\n",
}


# --- building requests from descriptors ---------------------------------------------

ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "+",
    "+14155550123",
    "+8613800138000",
    "\u202e+1415\u202c5550123",
    "\ufeff",
    "🙂" * 3,
    "%s%n{0}",
    "'; DROP TABLE messages; --",
    "{sg0}",
    "a:b:c",
    "\n\r\t",
]
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
# Repeat counts of a list's value: mostly none, sometimes past the limits of
# message ids (1,000) and recipients (10,000), as long as the body stays small.
REPEATS = (1,) * 8 + (1_001, 10_001)
LONG_LIST_BYTES = 2 * 2**20
# Protobuf strings are UTF-8: lone surrogates cannot be encoded by the client.
CHARACTERS = st.characters(exclude_categories=["Cs"])


def texts() -> st.SearchStrategy[str]:
    """Short odd unicode, hand-picked troublemakers, and very long strings."""
    return st.one_of(
        st.text(CHARACTERS, max_size=40),
        st.sampled_from(ODD_STRINGS),
        st.builds(lambda c, n: c * n, CHARACTERS, st.sampled_from([129, 4_096, 70_000])),
        st.builds(lambda n: "+1" + "4" * n, st.sampled_from([20, 1_000, 70_000])),
    )


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Extremes and their neighbours more often than chance would pick them."""
    edges = sorted({low, low + 1, -1 if low < 0 else low, 0, 1, 2, high - 1, high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def scalar(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """A value for one (non-repeated view of a) field."""
    if field.type == FD.TYPE_STRING:
        return texts()
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.floats(width=32 if field.type == FD.TYPE_FLOAT else 64)
    if field.enum_type is not None:
        # Proto3 enums are open: out-of-range numbers reach the server as they are.
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), integers(-(2**31), 2**31 - 1))
    if field.message_type is not None:
        return messages(field.message_type, depth + 1)
    low, high = INT_RANGES[field.type]
    return integers(low, high)


def encoded_size(value: object) -> int:
    """Roughly how many bytes ``value`` takes on the wire."""
    if isinstance(value, Message):
        return value.ByteSize()
    return len(value.encode()) if isinstance(value, str) else 8


@st.composite
def messages(draw: st.DrawFn, desc: descriptor.Descriptor, depth: int = 0) -> Message:
    """A message of type ``desc`` with a random subset of its fields set."""
    msg = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if depth > 3 or not draw(st.booleans()):
            continue
        target = getattr(msg, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            items = draw(st.dictionaries(scalar(key, depth), scalar(value, depth), max_size=20))
            for k, v in items.items():
                if value.type == FD.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            values = draw(st.lists(scalar(field, depth), max_size=20))
            # Now and then one value many times, past the documented list limits.
            repeat = draw(st.sampled_from(REPEATS))
            if values and repeat > 1 and encoded_size(values[0]) * repeat < LONG_LIST_BYTES:
                values = values[:1] * repeat
            if field.type == FD.TYPE_MESSAGE:
                for v in values:
                    target.add().CopyFrom(v)
            else:
                target.extend(values)
        elif field.type == FD.TYPE_MESSAGE:
            target.CopyFrom(draw(scalar(field, depth)))
        else:
            setattr(msg, field.name, draw(scalar(field, depth)))
    return msg


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


@st.composite
def wire_bodies(draw: st.DrawFn) -> bytes:
    """Well-formed wire format with random field numbers, wire types and
    payloads: unknown fields, and known fields of the wrong type."""
    body = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        number = draw(st.integers(1, 20) | st.sampled_from([2**29 - 1, 19_000]))
        wire_type = draw(st.sampled_from([0, 1, 2, 5]))
        body += tag(number, wire_type)
        if wire_type == 0:
            body += varint(draw(st.integers(0, 2**64 - 1)))
        elif wire_type == 2:
            payload = draw(st.binary(max_size=64) | st.builds(bytes, wire_bodies()))
            body += varint(len(payload)) + payload
        else:
            body += draw(st.binary(min_size=8, max_size=8))[: 8 if wire_type == 1 else 4]
    return bytes(body)


def bad_utf8_body(desc: descriptor.Descriptor) -> bytes | None:
    """A body whose first reachable string field holds bytes that are not UTF-8."""
    for field in desc.fields:
        if field.type == FD.TYPE_STRING:
            return tag(field.number, 2) + b"\x02\xff\xfe"
        sub = field.message_type
        if sub is not None and not sub.GetOptions().map_entry:
            inner = bad_utf8_body(sub)
            if inner is not None:
                return tag(field.number, 2) + varint(len(inner)) + inner
    return None


def undecodable(method: descriptor.MethodDescriptor) -> list[tuple[str, bytes]]:
    """Every undecodable body for ``method``, checked against the local parser."""
    bodies = list(UNDECODABLE.items())
    bad_utf8 = bad_utf8_body(method.input_type)
    if bad_utf8 is not None:
        bodies.append(("string-not-utf8", bad_utf8))
    request_type = message_factory.GetMessageClass(method.input_type)
    for _, body in bodies:
        with pytest.raises(DecodeError):
            request_type.FromString(body)
    return bodies


# --- the server under test ---------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Target:
    """The module's server, a channel to it, the dev app's token and the RSS it
    started with."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.server = server
        self.token = token
        self.channel = server.channel()
        self.start_rss = rss_bytes(server.process.pid)

    def call(
        self,
        method: descriptor.MethodDescriptor,
        body: bytes,
        *,
        auth: bool,
        authorization: str | None = None,
    ) -> grpc.StatusCode:
        """Send ``body`` as it is to ``method`` (with the app's token, or the
        given ``authorization`` value); the status it ends with."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        if authorization is None:
            authorization = f"Bearer {self.token}"
        metadata = (("authorization", authorization),) if auth else ()
        identity: Callable[[bytes], bytes] = bytes
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(path, identity, identity)
                for _ in stream(body, metadata=metadata, timeout=STREAM_SECONDS):
                    pass
            else:
                self.channel.unary_unary(path, identity, identity)(
                    body, metadata=metadata, timeout=30
                )
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("fuzz")
    group = Servers(workdir)
    try:
        server = group.start(workdir / "data", sim_latency_ms="0")
        assert server.printed("Development app token"), server.stdout
        token = json.loads((workdir / "data" / "dev-app.json").read_text())["token"]
        yield Target(server, str(token))
    finally:
        group.close()


@dataclass(frozen=True)
class Samples:
    """Real ids and tokens the server issued, to mutate."""

    message_id: str
    batch_id: str
    page_token: str
    resume_token: str
    verification_id: str
    template_id: str

    def uses(self) -> list[tuple[str, Callable[[str], Message], str]]:
        """(RPC, request built around a value, the real value it expects)."""
        sms, verification = sms_service_pb2, verification_service_pb2
        templates = template_service_pb2
        return [
            ("GetMessage", lambda v: sms.GetMessageRequest(message_id=v), self.message_id),
            ("CancelMessage", lambda v: sms.CancelMessageRequest(message_id=v), self.message_id),
            ("CancelBatch", lambda v: sms.CancelBatchRequest(batch_id=v), self.batch_id),
            ("ListMessages", lambda v: sms.ListMessagesRequest(batch_id=v), self.batch_id),
            ("ListMessages", lambda v: sms.ListMessagesRequest(page_token=v), self.page_token),
            ("WatchStatus", lambda v: sms.WatchStatusRequest(message_ids=[v]), self.message_id),
            ("WatchStatus", lambda v: sms.WatchStatusRequest(batch_id=v), self.batch_id),
            ("WatchStatus", lambda v: sms.WatchStatusRequest(resume_token=v), self.resume_token),
            (
                "VerifyCode",
                lambda v: verification.VerifyCodeRequest(verification_id=v, code="123456"),
                self.verification_id,
            ),
            (
                "GetTemplate",
                lambda v: templates.GetTemplateRequest(template_id=v),
                self.template_id,
            ),
            (
                "RenderTemplate",
                lambda v: templates.RenderTemplateRequest(template_id=v),
                self.template_id,
            ),
            ("SendSms", lambda v: template_send(v, {}), self.template_id),
        ]


@pytest.fixture(scope="module")
def samples(target: Target) -> Samples:
    metadata = (("authorization", f"Bearer {target.token}"),)
    sms = sms_service_pb2_grpc.SmsServiceStub(target.channel)
    batch = sms.BatchSend(
        sms_service_pb2.BatchSendRequest(
            recipients=[sms_service_pb2.BatchRecipient(phone_number=PHONES[i]) for i in range(2)],
            text="samples",
        ),
        metadata=metadata,
    )
    page = sms.ListMessages(sms_service_pb2.ListMessagesRequest(page_size=1), metadata=metadata)
    code = verification_service_pb2_grpc.VerificationServiceStub(target.channel).GenerateCode(
        verification_service_pb2.GenerateCodeRequest(
            phone_number=PHONES[0],
            scope="login",
            delivery=verification_service_pb2.CODE_DELIVERY_CALLER,
        ),
        metadata=metadata,
    )
    template = (
        template_service_pb2_grpc.TemplateServiceStub(target.channel)
        .CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template=template_service_pb2.Template(
                    id="fuzz",
                    kind=template_service_pb2.TEMPLATE_KIND_NOTIFICATION,
                    body=TEMPLATE_BODY,
                )
            ),
            metadata=metadata,
        )
        .template
    )
    return Samples(
        message_id=batch.results[0].message_id,
        batch_id=batch.batch_id,
        page_token=page.next_page_token,
        resume_token=first_resume_token(sms, metadata),
        verification_id=code.verification_id,
        template_id=template.id,
    )


def template_send(template_id: str, params: dict[str, str]) -> sms_service_pb2.SendSmsRequest:
    return sms_service_pb2.SendSmsRequest(
        phone_number=PHONES[0],
        template=message_pb2.TemplateContent(template_id=template_id, params=params),
    )


def first_resume_token(sms: Any, metadata: tuple[tuple[str, str], ...]) -> str:
    """The token of the first event a fresh WatchStatus sees; messages are sent
    until one arrives, as the subscription may start after the first sends."""
    stream = sms.WatchStatus(sms_service_pb2.WatchStatusRequest(), metadata=metadata, timeout=30)
    seen = threading.Event()

    def send() -> None:
        for _ in range(100):
            if seen.is_set():
                return
            sms.SendSms(
                sms_service_pb2.SendSmsRequest(phone_number=PHONES[1], text="token"),
                metadata=metadata,
            )
            time.sleep(0.1)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        token = str(next(iter(stream)).event.resume_token)
    finally:
        seen.set()
        stream.cancel()
        sender.join()
    return token


@st.composite
def mutations(draw: st.DrawFn, value: str) -> str:
    """``value`` with a few edits: characters replaced, cut, doubled or added."""
    out = value
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["replace", "cut", "double", "append", "case"]))
        i = draw(st.integers(0, max(0, len(out) - 1)))
        if edit == "replace":
            out = out[:i] + draw(st.characters(codec="ascii") | CHARACTERS) + out[i + 1 :]
        elif edit == "cut":
            out = out[:i]
        elif edit == "double":
            out = out + out
        elif edit == "append":
            out = out + draw(texts())
        else:
            out = out.swapcase()
    return out


def credential_values() -> st.SearchStrategy[str]:
    """Authorization values of every shape gRPC lets through (printable ASCII)."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    prefixes = st.sampled_from(["", "Bearer ", "bearer ", "Bearer  ", " Bearer ", "Basic "])
    return st.one_of(
        st.builds(lambda p, t: p + t, prefixes, printable),
        st.builds(lambda p, n: p + "a." * n, prefixes, st.sampled_from([1, 100, 3_000])),
        st.builds(lambda p: p + "ak_" + "0" * 20 + "." + "f" * 64, prefixes),
    )


def assert_answered(
    code: grpc.StatusCode, method: descriptor.MethodDescriptor, body: bytes
) -> None:
    assert code not in NOT_AN_ANSWER, (
        f"{method.name} answered {code.name} to a {len(body)}-byte body: {body[:120]!r}"
    )


# --- the tests ----------------------------------------------------------------------

FUZZ = settings(
    max_examples=EXAMPLES,
    # The same examples on every `make test`; `make chaos` explores new ones.
    derandomize="CHAOS_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@FUZZ
@given(data=st.data())
def test_fuzzed_requests_get_a_real_answer(
    target: Target, method: descriptor.MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(messages(method.input_type), label="request")
    body = request.SerializeToString()
    assert_answered(target.call(method, body, auth=True), method, body)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@FUZZ
@given(body=wire_bodies(), auth=st.booleans())
def test_wire_valid_garbage_gets_a_real_answer(
    target: Target, method: descriptor.MethodDescriptor, body: bytes, auth: bool
) -> None:
    request_type = message_factory.GetMessageClass(method.input_type)
    try:
        request_type.FromString(body)
    except DecodeError:
        return  # a string field that is not UTF-8: an undecodable body, the finding below
    assert_answered(target.call(method, body, auth=auth), method, body)


@FUZZ
@given(data=st.data())
def test_mutated_ids_and_tokens_get_a_real_answer(
    target: Target, samples: Samples, data: st.DataObject
) -> None:
    rpc, build, sample = data.draw(st.sampled_from(samples.uses()), label="use")
    value = data.draw(mutations(sample), label="value")
    request = build(value)
    body = request.SerializeToString()
    assert_answered(target.call(METHOD[rpc], body, auth=True), METHOD[rpc], body)


@FUZZ
@given(params=st.dictionaries(texts(), texts(), max_size=8), data=st.data())
def test_fuzzed_params_of_a_real_template_get_a_real_answer(
    target: Target, samples: Samples, params: dict[str, str], data: st.DataObject
) -> None:
    # The template's own variables, with odd values, beside odd names.
    params.update(data.draw(st.dictionaries(st.sampled_from(["name", "code"]), texts())))
    rpc, request = data.draw(
        st.sampled_from(
            [
                ("SendSms", template_send(samples.template_id, params)),
                (
                    "RenderTemplate",
                    template_service_pb2.RenderTemplateRequest(
                        template_id=samples.template_id, params=params
                    ),
                ),
                (
                    "RenderTemplate",
                    template_service_pb2.RenderTemplateRequest(body=TEMPLATE_BODY, params=params),
                ),
            ]
        ),
        label="call",
    )
    body = request.SerializeToString()
    assert_answered(target.call(METHOD[rpc], body, auth=True), METHOD[rpc], body)


@FUZZ
@given(credentials=credential_values())
def test_fuzzed_credentials_get_a_real_answer(target: Target, credentials: str) -> None:
    method = METHOD["GetMessage"]
    body = sms_service_pb2.GetMessageRequest(message_id="x").SerializeToString()
    code = target.call(method, body, auth=True, authorization=credentials)
    assert code not in NOT_AN_ANSWER, f"{code.name} for authorization {credentials[:120]!r}"


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no-auth"])
@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_undecodable_bodies_are_invalid_argument(
    target: Target, method: descriptor.MethodDescriptor, auth: bool
) -> None:
    # Refusing them before auth is as good an answer as parsing them after it.
    allowed = {grpc.StatusCode.INVALID_ARGUMENT} | (
        set() if auth else {grpc.StatusCode.UNAUTHENTICATED}
    )
    answers = {kind: target.call(method, body, auth=auth) for kind, body in undecodable(method)}
    assert {kind: code for kind, code in answers.items() if code not in allowed} == {}


def test_undecodable_bodies_are_not_logged_one_by_one(target: Target) -> None:
    method = sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"].methods_by_name["SendSms"]
    calls = 20
    before = len(target.server.events())
    for _ in range(calls):
        target.call(method, UNDECODABLE["truncated-varint"], auth=True)
    logged = target.server.events()[before:]
    assert len(logged) < calls, f"{len(logged)} log events for {calls} bad bodies: {logged[-1]}"


def test_raw_connections_with_garbage_leave_the_server_serving(target: Target) -> None:
    """Bytes that are not HTTP/2 (or a broken HTTP/2 start), some connections
    reset, some held open, and a real call still gets its answer."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    openings = [
        b"GET / HTTP/1.1\r\nHost: smsgate\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS hello
        preface + b"\xff" * 64,
        preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\xff\xff\xff\x01\x04\x00\x00\x00\x01",
    ]
    held = []
    try:
        for i in range(RAW_CONNECTIONS):
            conn = socket.create_connection(("127.0.0.1", target.server.grpc_port))
            conn.sendall(openings[i % len(openings)])
            if i % 4:
                # Linger 0: close with a reset, as a client that vanishes.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                held.append(conn)
        request = sms_service_pb2.GetMessageRequest(message_id="x").SerializeToString()
        code = target.call(METHOD["GetMessage"], request, auth=True)
        assert code == grpc.StatusCode.NOT_FOUND, f"with {len(held)} connections held open"
    finally:
        for conn in held:
            conn.close()


def test_server_memory_stays_bounded_after_fuzzing(target: Target) -> None:
    """Runs after the tests above: RSS after every fuzzed call against the start."""
    grown = rss_bytes(target.server.process.pid) - target.start_rss
    assert grown < RSS_GROWTH_LIMIT, f"server RSS grew by {grown / 2**20:.0f} MiB"


def test_distinct_huge_phone_numbers_leave_memory_bounded(target: Target) -> None:
    send = sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"].methods_by_name["SendSms"]
    before = rss_bytes(target.server.process.pid)
    for i in range(HUGE_INPUTS):
        request = sms_service_pb2.SendSmsRequest(phone_number=f"+{i}" + "4" * 2**20, text="x")
        target.call(send, request.SerializeToString(), auth=True)
    grown = rss_bytes(target.server.process.pid) - before
    assert grown < RSS_GROWTH_LIMIT, (
        f"server RSS grew by {grown / 2**20:.0f} MiB after {HUGE_INPUTS} 1 MiB phone numbers"
    )
