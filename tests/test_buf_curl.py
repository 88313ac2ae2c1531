"""``buf curl`` against a live server, the way the README shows it: reflection
lists the services, SendSms with a bearer token, GetMessage until DELIVERED,
and the README's template session (sign, create, preview, send one and a
batch with per-recipient params, a code through the app's own template)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from smsgate_server.runtime import Running

from tests.support import readme_block, run_shell
from tests.waiting import wait_until

BUF = Path(sys.executable).parent / "buf"


async def buf_curl(*args: str) -> tuple[int, str, str]:
    """Run ``buf curl --protocol grpc --http2-prior-knowledge ARGS``; the event
    loop keeps serving the in-process server meanwhile."""
    process = await asyncio.create_subprocess_exec(
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def call(server: Running, method: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    code, out, err = await buf_curl(
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps(body),
        f"http://127.0.0.1:{server.grpc_port}/smsgate.v1.SmsService/{method}",
    )
    assert code == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def test_reflection_lists_every_smsgate_service(server: Running) -> None:
    code, out, err = await buf_curl("--list-methods", f"http://127.0.0.1:{server.grpc_port}")
    assert code == 0, err
    methods = set(out.split())
    assert {
        "smsgate.v1.SmsService/SendSms",
        "smsgate.v1.SmsService/GetMessage",
        "smsgate.v1.SmsService/CancelMessage",
        "smsgate.v1.VerificationService/GenerateCode",
        "smsgate.v1.TemplateService/RenderTemplate",
        "grpc.health.v1.Health/Check",
    } <= methods


async def test_send_sms_then_get_message_until_delivered(server: Running, token: str) -> None:
    sent = await call(
        server, "SendSms", token, {"phone_number": "+14155550123", "text": "hello from buf"}
    )
    assert sent["message"]["status"] == "MESSAGE_STATUS_QUEUED"
    message_id = sent["message"]["id"]

    got = await wait_until(
        lambda: call(server, "GetMessage", token, {"message_id": message_id}),
        lambda got: got["message"]["status"] == "MESSAGE_STATUS_DELIVERED",
        what=f"message {message_id} to be delivered",
        describe=lambda got: str(got["message"]["status"]),
    )
    assert got["message"]["phoneNumber"] == "+14155550123"


async def test_missing_token_is_unauthenticated_with_error_info(server: Running) -> None:
    code, _, err = await buf_curl(
        "-d",
        '{"phone_number": "+14155550123", "text": "x"}',
        f"http://127.0.0.1:{server.grpc_port}/smsgate.v1.SmsService/SendSms",
    )
    assert code != 0
    error = json.loads(err)
    assert error["code"] == "unauthenticated"
    assert "google.rpc.ErrorInfo" in [d["type"] for d in error["details"]]


async def test_readme_template_session_works_when_pasted(server: Running, token: str) -> None:
    marker = "<!-- readme-session: templates"
    block = readme_block(marker)
    preview = readme_block(marker, "json")
    # The block continues the first session, which set BUF, ADDR and TOKEN.
    env = {
        "PATH": os.environ["PATH"],
        "BUF": str(BUF),
        "ADDR": f"http://127.0.0.1:{server.grpc_port}",
        "TOKEN": token,
    }
    returncode, out, err = await run_shell(block, env=env)
    assert returncode == 0, out + err
    sign, created, rendered, sent, batch, _, code = json.loads(
        "[" + out.replace("}\n{", "},\n{") + "]"
    )
    assert sign["signName"]["isDefault"]
    assert created["template"]["variables"] == ["order"]
    assert rendered == json.loads(preview)
    message = sent["message"]
    assert message["renderedText"] == rendered["text"]
    assert message["template"] == {
        "templateId": "order_shipped",
        "params": {"order": "A-1001"},
        "version": 1,
        "signName": "Acme",
    }
    assert (batch["acceptedCount"], batch["rejectedCount"]) == (2, 1)
    assert batch["results"][2]["error"]["reason"] == "INVALID_TEMPLATE_PARAMS"
    assert code["messageId"]
