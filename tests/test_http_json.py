"""The API over HTTP/JSON (the Connect protocol) on the HTTP side port, against
a live server: every unary RPC once, WatchStatus as a Connect server stream,
and the protocol's answers to what is wrong (bad JSON, no token, unknown
method, wrong content type, oversized body), each with Connect's error JSON."""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import struct
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.api.connect import JSON_SIZE_FACTOR
from smsgate_server.api.limits import max_request_bytes
from smsgate_server.runtime import SERVICE_NAMES, Running

from tests.conftest import ServerFactory
from tests.support import readme_block, run_shell
from tests.waiting import wait_until

ENVELOPE = struct.Struct(">BI")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def http(server: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=30
    ) as client:
        yield client


async def call(
    http: httpx.AsyncClient, method: str, body: Any, token: str | None
) -> httpx.Response:
    """POST ``body`` as JSON to /smsgate.v1.<method>."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return await http.post(f"/smsgate.v1.{method}", content=json.dumps(body), headers=headers)


async def ok(http: httpx.AsyncClient, method: str, body: dict[str, Any], token: str) -> Any:
    reply = await call(http, method, body, token)
    assert reply.status_code == 200, (method, reply.text)
    assert reply.headers["content-type"] == "application/json"
    return reply.json()


def details(error: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The error's details by type, each checked: its base64 value decodes to
    the message its debug rendering shows."""
    out = {}
    for detail in error.get("details", []):
        value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
        cls = {
            "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
            "google.rpc.BadRequest": error_details_pb2.BadRequest,
            "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
        }.get(detail["type"])
        if cls is not None:
            assert MessageToDict(cls.FromString(value)) == detail["debug"]
        out[detail["type"]] = detail.get("debug", {})
    return out


def methods(*, streaming: bool) -> set[str]:
    """``Service/Method`` of every smsgate RPC, unary or server-streaming."""
    pool = descriptor_pool.Default()
    return {
        f"{name.removeprefix('smsgate.v1.')}/{m.name}"
        for name in SERVICE_NAMES
        for m in pool.FindServiceByName(name).methods
        if m.server_streaming == streaming
    }


async def test_every_unary_rpc_answers_over_http_json(http: httpx.AsyncClient, token: str) -> None:
    called: set[str] = set()

    async def rpc(method: str, body: dict[str, Any]) -> Any:
        called.add(method)
        return await ok(http, method, body, token)

    sign = {"signName": {"name": "Acme", "isDefault": True}}
    assert (await rpc("SignService/CreateSignName", sign))["signName"]["isDefault"]
    await ok(http, "SignService/CreateSignName", {"signName": {"name": "Other"}}, token)
    await rpc("SignService/SetDefaultSignName", {"name": "Acme"})
    listed = await rpc("SignService/ListSignNames", {})
    assert {s["name"] for s in listed["signNames"]} == {"Acme", "Other"}
    await rpc("SignService/DeleteSignName", {"name": "Other"})

    template = {
        "id": "order_shipped",
        "kind": "TEMPLATE_KIND_NOTIFICATION",
        "body": "您的订单{order}已发货",
        "signName": "Acme",
    }
    created = await rpc("TemplateService/CreateTemplate", {"template": template})
    assert created["template"]["variables"] == ["order"]
    got = await rpc("TemplateService/GetTemplate", {"templateId": "order_shipped"})
    assert got["template"]["body"] == "您的订单{order}已发货"
    updated = await rpc(
        "TemplateService/UpdateTemplate",
        {
            "template": {"id": "order_shipped", "displayName": "Shipped"},
            "updateMask": "displayName",
        },
    )
    assert (updated["template"]["displayName"], updated["template"]["version"]) == ("Shipped", 2)
    listed = await rpc("TemplateService/ListTemplates", {})
    assert [t["id"] for t in listed["templates"]] == ["order_shipped"]
    rendered = await rpc(
        "TemplateService/RenderTemplate",
        {
            "templateId": "order_shipped",
            "params": {"order": "A-1"},
            "phoneNumber": "+8613800138000",
        },
    )
    assert rendered["text"] == "【Acme】您的订单A-1已发货"
    await rpc("TemplateService/DeleteTemplate", {"templateId": "order_shipped"})

    sent = await rpc("SmsService/SendSms", {"phoneNumber": "+8613800138000", "text": "hi"})
    message_id = sent["message"]["id"]
    assert sent["message"]["status"] == "MESSAGE_STATUS_QUEUED"
    got = await rpc("SmsService/GetMessage", {"messageId": message_id})
    assert got["message"]["phoneNumber"] == "+8613800138000"
    listed = await rpc("SmsService/ListMessages", {})
    assert message_id in [m["id"] for m in listed["messages"]]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    scheduled = await ok(
        http,
        "SmsService/SendSms",
        {"phoneNumber": "+14155550123", "text": "later", "sendTime": later},
        token,
    )
    canceled = await rpc("SmsService/CancelMessage", {"messageId": scheduled["message"]["id"]})
    assert canceled["message"]["status"] == "MESSAGE_STATUS_CANCELED"
    batch = await rpc(
        "SmsService/BatchSend",
        {
            "text": "later",
            "sendTime": later,
            "recipients": [{"phoneNumber": "+14155550101"}, {"phoneNumber": "12"}],
        },
    )
    assert (batch["acceptedCount"], batch["rejectedCount"]) == (1, 1)
    assert batch["results"][1]["error"]["reason"] == "INVALID_PHONE_NUMBER"
    canceled = await rpc("SmsService/CancelBatch", {"batchId": batch["batchId"]})
    assert canceled["canceledCount"] == 1

    code = await rpc(
        "VerificationService/GenerateCode",
        {"phoneNumber": "+14155550123", "scope": "login", "delivery": "CODE_DELIVERY_CALLER"},
    )
    verified = await rpc(
        "VerificationService/VerifyCode",
        {"verificationId": code["verificationId"], "phoneNumber": "+14155550123",
         "scope": "login", "code": code["code"]},
    )  # fmt: skip
    assert verified["result"] == "VERIFICATION_RESULT_VERIFIED"

    assert (await rpc("OptOutService/AddOptOut", {"phoneNumber": "+14155550199"}))["added"]
    checked = await rpc("OptOutService/CheckOptOut", {"phoneNumber": "+14155550199"})
    assert checked["optedOut"]
    listed = await rpc("OptOutService/ListOptOuts", {})
    assert listed["phoneNumbers"] == ["+14155550199"]
    assert (await rpc("OptOutService/RemoveOptOut", {"phoneNumber": "+14155550199"}))["removed"]

    assert await rpc("InboundService/ListReplies", {}) == {}

    today = datetime.now(UTC).date().isoformat()
    usage = await rpc("UsageService/GetUsage", {"startDate": today, "endDate": today})
    assert isinstance(usage, dict)

    assert called == methods(streaming=False)


async def test_a_message_sent_over_http_is_delivered(http: httpx.AsyncClient, token: str) -> None:
    sent = await ok(http, "SmsService/SendSms", {"phoneNumber": "+14155550123", "text": "x"}, token)
    message_id = sent["message"]["id"]

    got = await wait_until(
        lambda: ok(http, "SmsService/GetMessage", {"messageId": message_id}, token),
        lambda got: got["message"]["status"] == "MESSAGE_STATUS_DELIVERED",
        what=f"message {message_id} to be delivered",
        describe=lambda got: str(got["message"]["status"]),
    )
    assert got["message"]["provider"] == "simulator"


async def test_an_invalid_field_is_invalid_argument_naming_it(
    http: httpx.AsyncClient, token: str
) -> None:
    reply = await call(http, "SmsService/SendSms", {"phoneNumber": "12", "text": "x"}, token)

    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == "invalid_argument"
    found = details(error)
    assert found["google.rpc.ErrorInfo"] == {
        "reason": "INVALID_PHONE_NUMBER",
        "domain": "smsgate.v1",
    }
    violations = found["google.rpc.BadRequest"]["fieldViolations"]
    assert [v["field"] for v in violations] == ["phone_number"]


async def test_bad_json_is_invalid_argument_once_authenticated(
    http: httpx.AsyncClient, token: str
) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}

    reply = await http.post("/smsgate.v1.SmsService/SendSms", content=b"{not json", headers=headers)

    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == "invalid_argument"
    assert details(error)["google.rpc.ErrorInfo"]["reason"] == "MALFORMED_REQUEST"


async def test_bad_json_without_a_token_is_unauthenticated(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/smsgate.v1.SmsService/SendSms",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )

    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthenticated"


async def test_an_unknown_json_field_is_named_not_ignored(
    http: httpx.AsyncClient, token: str
) -> None:
    reply = await call(
        http, "SmsService/SendSms", {"phone": "+8613800138000", "content": "hello"}, token
    )

    assert reply.status_code == 400
    violations = details(reply.json())["google.rpc.BadRequest"]["fieldViolations"]
    assert [v["field"] for v in violations] == ["phone"]
    assert "phoneNumber" in violations[0]["description"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": {"templateId": "x", "parms": {}}}, "template.parms"),
        ({"phoneNumber": "+14155550123", "text": "x", "sendTime": "tomorrow"}, "sendTime"),
        ({"phoneNumber": 14155550123, "text": "x"}, "phoneNumber"),
        ([{"phoneNumber": "+14155550123"}], ""),
    ],
)
async def test_a_body_that_is_not_the_message_names_where(
    http: httpx.AsyncClient, token: str, body: Any, field: str
) -> None:
    reply = await call(http, "SmsService/SendSms", body, token)

    assert reply.status_code == 400
    found = details(reply.json())
    assert found["google.rpc.ErrorInfo"]["reason"] == "MALFORMED_REQUEST"
    violations = found["google.rpc.BadRequest"]["fieldViolations"]
    assert [v.get("field", "") for v in violations] == [field]


async def test_an_app_over_its_rate_is_429_with_retry_info(make_server: ServerFactory) -> None:
    server = await make_server(app_accept_burst_seconds=1)
    slow = (await server.apps.create("slow", accept_per_second=2)).token
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=30
    ) as http:
        body = {"phoneNumber": "+14155550123", "text": "x"}
        for _ in range(2):
            await ok(http, "SmsService/SendSms", body, slow)

        reply = await call(http, "SmsService/SendSms", body, slow)

    assert reply.status_code == 429
    error = reply.json()
    assert error["code"] == "resource_exhausted"
    found = details(error)
    assert found["google.rpc.ErrorInfo"]["reason"] == "APP_RATE_LIMITED"
    assert found["google.rpc.RetryInfo"]["retryDelay"].endswith("s")


@pytest.mark.parametrize(
    ("header", "value", "status", "code"),
    [
        ("connect-protocol-version", "2", 400, "invalid_argument"),
        ("content-encoding", "gzip", 501, "unimplemented"),
        ("connect-timeout-ms", "soon", 400, "invalid_argument"),
    ],
)
async def test_protocol_headers_it_cannot_honour_are_refused(
    http: httpx.AsyncClient, token: str, header: str, value: str, status: int, code: str
) -> None:
    reply = await http.post(
        "/smsgate.v1.SmsService/GetMessage",
        content=b"{}",
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            header: value,
        },
    )

    assert reply.status_code == status
    assert reply.json()["code"] == code


async def test_every_stream_runs_until_its_timeout(http: httpx.AsyncClient, token: str) -> None:
    streams = methods(streaming=True)
    assert "SmsService/WatchStatus" in streams
    for method in streams:
        reply = await http.post(
            f"/smsgate.v1.{method}",
            content=envelope({}),
            headers=stream_headers(token) | {"connect-timeout-ms": "200"},
        )

        assert reply.status_code == 200
        received = envelopes(reply.content)
        # Messages (WatchReplies opens with its start token), then the end.
        assert [flags for flags, _ in received] == [0] * (len(received) - 1) + [2], method
        assert received[-1][1]["error"]["code"] == "deadline_exceeded", (method, received)


async def test_a_missing_token_is_unauthenticated(http: httpx.AsyncClient) -> None:
    reply = await call(http, "SmsService/SendSms", {"phoneNumber": "+14155550123"}, None)

    assert reply.status_code == 401
    error = reply.json()
    assert error["code"] == "unauthenticated"
    assert details(error)["google.rpc.ErrorInfo"]["reason"] == "MISSING_CREDENTIALS"


@pytest.mark.parametrize("path", ["/smsgate.v1.SmsService/Nope", "/smsgate.v1.Nope/SendSms"])
async def test_an_unknown_method_is_404_unimplemented(
    http: httpx.AsyncClient, token: str, path: str
) -> None:
    reply = await http.post(path, content=b"{}", headers={"content-type": "application/json"})

    assert reply.status_code == 404
    assert reply.json()["code"] == "unimplemented"


async def test_get_is_not_allowed(http: httpx.AsyncClient) -> None:
    reply = await http.get("/smsgate.v1.SmsService/GetMessage")

    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"


async def test_a_body_that_is_not_json_or_proto_is_415(http: httpx.AsyncClient, token: str) -> None:
    reply = await http.post(
        "/smsgate.v1.SmsService/SendSms",
        content=b"phone=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert reply.status_code == 415
    assert reply.headers["accept-post"] == "application/json, application/proto"


async def test_a_protobuf_body_is_answered_in_protobuf(http: httpx.AsyncClient, token: str) -> None:
    request = pb.SendSmsRequest(phone_number="+14155550123", text="binary")

    reply = await http.post(
        "/smsgate.v1.SmsService/SendSms",
        content=request.SerializeToString(),
        headers={"content-type": "application/proto", "authorization": f"Bearer {token}"},
    )

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/proto"
    assert pb.SendSmsResponse.FromString(reply.content).message.text == "binary"


def body_limit(server: Running) -> int:
    s = server.settings
    return JSON_SIZE_FACTOR * max_request_bytes(
        batch_max_recipients=s.batch_max_recipients,
        max_text_segments=s.max_text_segments,
        max_labels=s.max_labels,
    )


async def test_a_body_over_the_limit_is_resource_exhausted(
    server: Running, http: httpx.AsyncClient, token: str
) -> None:
    limit = body_limit(server)

    async def chunks() -> AsyncIterator[bytes]:
        # No content-length: the limit holds while reading, too.
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    for content in (b" " * (limit + 1), chunks()):
        reply = await http.post(
            "/smsgate.v1.SmsService/SendSms",
            content=content,
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 429
        assert reply.json()["code"] == "resource_exhausted"


def envelope(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    return ENVELOPE.pack(0, len(data)) + data


async def read_envelopes(reply: httpx.Response) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """(flags, JSON) of each envelope of a Connect stream."""
    buffer = b""
    async for chunk in reply.aiter_bytes():
        buffer += chunk
        while len(buffer) >= ENVELOPE.size:
            flags, length = ENVELOPE.unpack_from(buffer)
            if len(buffer) < ENVELOPE.size + length:
                break
            yield flags, json.loads(buffer[ENVELOPE.size : ENVELOPE.size + length])
            buffer = buffer[ENVELOPE.size + length :]


def envelopes(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(flags, JSON) of each envelope of a whole Connect stream body."""
    found = []
    while body:
        flags, length = ENVELOPE.unpack_from(body)
        found.append((flags, json.loads(body[ENVELOPE.size : ENVELOPE.size + length])))
        body = body[ENVELOPE.size + length :]
    return found


def stream_headers(token: str | None) -> dict[str, str]:
    headers = {"content-type": "application/connect+json", "connect-protocol-version": "1"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def test_watch_status_streams_until_delivered(
    server: Running, http: httpx.AsyncClient, token: str
) -> None:
    sent = await ok(http, "SmsService/SendSms", {"phoneNumber": "+14155550123", "text": "x"}, token)
    message_id = sent["message"]["id"]
    seen: list[str] = []

    async with http.stream(
        "POST",
        "/smsgate.v1.SmsService/WatchStatus",
        content=envelope({"messageIds": [message_id]}),
        headers=stream_headers(token),
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/connect+json"
        async for flags, item in read_envelopes(reply):
            assert flags == 0, item
            assert item["event"]["messageId"] == message_id
            seen.append(item["event"]["status"])
            if seen[-1] == "MESSAGE_STATUS_DELIVERED":
                break

    assert seen[-1] == "MESSAGE_STATUS_DELIVERED", seen
    assert server.hub is not None
    # The client left: its subscription ends with it.
    await wait_until(
        lambda: _count(server),
        lambda n: n == 0,
        what="the watch to be unsubscribed",
        describe=str,
    )


async def _count(server: Running) -> int:
    assert server.hub is not None
    return server.hub.subscriber_count


async def test_shutdown_ends_a_stream_with_unavailable(make_server: ServerFactory) -> None:
    server = await make_server()
    token = (await server.apps.create("a")).token
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as http,
        http.stream(
            "POST",
            "/smsgate.v1.SmsService/WatchStatus",
            content=envelope({}),
            headers=stream_headers(token),
        ) as reply,
    ):
        await wait_until(
            lambda: _count(server), lambda n: n == 1, what="the watch to subscribe", describe=str
        )
        stopping = asyncio.create_task(server.stop())
        received = [item async for item in read_envelopes(reply)]
        await stopping

    assert [flags for flags, _ in received] == [2]
    assert received[0][1]["error"]["code"] == "unavailable"


async def test_the_api_is_off_the_side_port_with_http_api_false(
    make_server: ServerFactory,
) -> None:
    server = await make_server(http_api=False)
    token = (await server.apps.create("a")).token
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=30
    ) as http:
        reply = await call(http, "SmsService/SendSms", {"phoneNumber": "+14155550123"}, token)
        probe = await http.get("/livez")

    assert reply.status_code == 404
    assert "code" not in reply.text
    assert probe.status_code == 200


async def test_a_failed_stream_ends_with_its_error(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/smsgate.v1.SmsService/WatchStatus",
        content=envelope({"messageIds": ["x"]}),
        headers=stream_headers(None),
    )

    assert reply.status_code == 200
    flags, length = ENVELOPE.unpack_from(reply.content)
    assert (flags, length) == (2, len(reply.content) - ENVELOPE.size)
    error = json.loads(reply.content[ENVELOPE.size :])["error"]
    assert error["code"] == "unauthenticated"
    assert details(error)["google.rpc.ErrorInfo"]["reason"] == "MISSING_CREDENTIALS"


async def test_a_connect_client_sends_and_reads_the_error_details(
    server: Running, token: str
) -> None:
    """buf curl speaks Connect (connect-go): unary calls in its own encoding,
    and an error it decodes, details included."""

    async def buf_curl(body: dict[str, Any]) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{server.http_port}/smsgate.v1.SmsService/SendSms"
        command = [str(Path(sys.executable).parent / "buf"), "curl", "--protocol", "connect"]
        command += ["--schema", "proto", "-H", f"authorization: Bearer {token}"]
        command += ["-d", json.dumps(body), url]
        return await run_shell(shlex.join(command), cwd=ROOT)

    code, out, err = await buf_curl({"phoneNumber": "+14155550123", "text": "via connect"})
    assert code == 0, err
    assert json.loads(out)["message"]["text"] == "via connect"

    code, out, err = await buf_curl({"phoneNumber": "12", "text": "x"})
    assert code != 0
    error = json.loads(err)
    assert error["code"] == "invalid_argument"
    bad = [d for d in error["details"] if d["type"] == "google.rpc.BadRequest"]
    assert bad[0]["debug"]["fieldViolations"][0]["field"] == "phone_number"


async def test_readme_curl_session_works_when_pasted(
    server: Running, token: str, tmp_path: Path
) -> None:
    block = readme_block("<!-- readme-session: curl")
    # The session runs at the repository root beside `make serve`: give it a
    # .venv, the protos, a .smsgate with the token, and the server's real port.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "proto").symlink_to(ROOT / "proto")
    (tmp_path / ".smsgate").mkdir()
    (tmp_path / ".smsgate" / "dev-app.json").write_text(json.dumps({"token": token}))
    block = block.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")

    returncode, out, err = await run_shell(block, cwd=tmp_path)

    assert returncode == 0, out + err
    sent, got, error, status, streamed = out.split("\n", 4)
    message_id = json.loads(sent)["message"]["id"]
    assert json.loads(got)["message"]["status"] == "MESSAGE_STATUS_DELIVERED"
    assert status == "HTTP 400"
    fields = details(json.loads(error))["google.rpc.BadRequest"]["fieldViolations"]
    assert [f["field"] for f in fields] == ["phone_number"]
    # buf curl (a Connect client) printed the snapshot: delivered already.
    events = [e["event"] for e in json.loads("[" + streamed.replace("}\n{", "},\n{") + "]")]
    assert events, (out, err)
    assert [(e["messageId"], e["status"]) for e in events][-1:] == [
        (message_id, "MESSAGE_STATUS_DELIVERED")
    ]
