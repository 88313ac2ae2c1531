"""The Python client (``smsgate.AsyncClient``) against a live server: sending,
batches, reading and listing, typed errors with their details, codes,
templates, waiting for a status, and gRPC's retries with one request id."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import smsgate
from smsgate.v1 import (
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    verification_service_pb2,
)
from smsgate_server.runtime import Running

from tests.conftest import ServerFactory
from tests.test_tls import pki  # noqa: F401 - the certificates fixture
from tests.waiting import wait_until

S = smsgate.MessageStatus
NUMBER = "+14155550123"
README = Path(__file__).resolve().parent.parent / "README.md"


async def client_of(server: Running) -> smsgate.AsyncClient:
    token = (await server.apps.create("client-test")).token
    return smsgate.AsyncClient(f"127.0.0.1:{server.grpc_port}", token)


@pytest.fixture
async def client(server: Running) -> AsyncIterator[smsgate.AsyncClient]:
    async with await client_of(server) as c:
        yield c


async def test_a_sent_message_is_read_back_by_id(client: smsgate.AsyncClient) -> None:
    sent = await client.send(NUMBER, "Your order has shipped", labels={"order": "42"})
    got = await client.get(sent.id)
    assert (got.id, got.phone_number, got.text) == (sent.id, NUMBER, "Your order has shipped")
    assert dict(got.labels) == {"order": "42"}


async def test_a_send_without_request_id_gets_a_fresh_one_each_time(
    client: smsgate.AsyncClient,
) -> None:
    first = await client.send(NUMBER, "same text")
    second = await client.send(NUMBER, "same text")
    assert first.id != second.id


async def test_a_send_repeated_with_its_request_id_returns_the_first_message(
    client: smsgate.AsyncClient,
) -> None:
    first = await client.send(NUMBER, "once", request_id="order-42-shipped")
    again = await client.send(NUMBER, "once", request_id="order-42-shipped")
    assert again.id == first.id


async def test_a_batch_reports_each_recipient(client: smsgate.AsyncClient) -> None:
    reply = await client.send_batch(["+14155550100", "not a number", "+14155550101"], "Sale!")
    assert (reply.accepted_count, reply.rejected_count) == (2, 1)
    assert reply.results[1].error.reason == "INVALID_PHONE_NUMBER"
    listed = [m.id async for m in client.list(batch_id=reply.batch_id)]
    assert sorted(listed) == sorted(r.message_id for r in reply.results if r.message_id)


async def test_list_iterates_every_page(client: smsgate.AsyncClient) -> None:
    reply = await client.send_batch([f"+1415555{i:04d}" for i in range(7)], "paged")
    listed = [m.id async for m in client.list(batch_id=reply.batch_id, page_size=2)]
    assert sorted(listed) == sorted(r.message_id for r in reply.results)
    assert len(listed) == 7


async def test_a_scheduled_message_is_canceled(client: smsgate.AsyncClient) -> None:
    sent = await client.send(NUMBER, "later", send_time=datetime.now(UTC) + timedelta(hours=1))
    canceled = await client.cancel(sent.id)
    assert canceled.status == S.MESSAGE_STATUS_CANCELED


async def test_bad_input_is_invalid_argument_with_reason_and_field_violations(
    client: smsgate.AsyncClient,
) -> None:
    with pytest.raises(smsgate.InvalidArgument) as raised:
        await client.send("12", "hello")
    error = raised.value
    assert error.reason == "INVALID_PHONE_NUMBER"
    assert error.domain == "smsgate.v1"
    assert [v.field for v in error.field_violations] == ["phone_number"]
    assert error.field_violations[0].description


async def test_an_unknown_id_is_not_found(client: smsgate.AsyncClient) -> None:
    with pytest.raises(smsgate.NotFound) as raised:
        await client.get("no-such-message")
    assert raised.value.reason
    assert isinstance(raised.value, smsgate.Error)


async def test_a_wrong_token_is_unauthenticated(server: Running) -> None:
    async with smsgate.AsyncClient(f"127.0.0.1:{server.grpc_port}", "wrong") as client:
        with pytest.raises(smsgate.Unauthenticated) as raised:
            await client.send(NUMBER, "hi")
    assert raised.value.reason == "INVALID_CREDENTIALS"


async def test_the_rate_limit_is_resource_exhausted_with_retry_after(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_accept_per_second=1, app_accept_burst_seconds=1)
    async with await client_of(server) as client:
        await client.send(NUMBER, "first")
        with pytest.raises(smsgate.ResourceExhausted) as raised:
            await client.send(NUMBER, "second")
    assert raised.value.reason == "APP_RATE_LIMITED"
    assert raised.value.retry_after is not None and raised.value.retry_after > 0


async def test_the_held_messages_cap_is_resource_exhausted_with_quota_violations(
    make_server: ServerFactory,
) -> None:
    server = await make_server(app_max_held_messages=1, quota_check_seconds=0)
    async with await client_of(server) as client:
        later = datetime.now(UTC) + timedelta(hours=1)
        await client.send(NUMBER, "held", send_time=later)
        with pytest.raises(smsgate.ResourceExhausted) as raised:
            await client.send(NUMBER, "one too many", send_time=later)
    assert raised.value.reason == "APP_HELD_MESSAGES_CAP"
    assert raised.value.quota_violations and raised.value.quota_violations[0].subject


async def test_wait_returns_a_message_delivered_before_the_watch_opens(
    client: smsgate.AsyncClient,
) -> None:
    sent = await client.send(NUMBER, "fast")
    await wait_until(
        lambda: client.get(sent.id),
        lambda m: m.status == S.MESSAGE_STATUS_DELIVERED,
        what="the simulator to deliver",
    )
    done = await client.wait(sent.id, timeout=5)
    assert done.status == S.MESSAGE_STATUS_DELIVERED


async def test_send_and_wait_follows_a_scheduled_message_to_delivery(
    client: smsgate.AsyncClient,
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    done = await client.send_and_wait(NUMBER, "soon", send_time=soon, timeout=15)
    assert done.status == S.MESSAGE_STATUS_DELIVERED
    assert done.history[0].status == S.MESSAGE_STATUS_SCHEDULED


async def test_wait_until_a_status_that_never_comes_times_out(
    client: smsgate.AsyncClient,
) -> None:
    sent = await client.send(NUMBER, "later", send_time=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(TimeoutError):
        await client.wait(sent.id, timeout=0.5)


async def test_a_code_returned_to_the_caller_verifies_once(client: smsgate.AsyncClient) -> None:
    issued = await client.generate_code(
        NUMBER, "login", delivery=verification_service_pb2.CODE_DELIVERY_CALLER
    )
    assert issued.code
    first = await client.verify_code(issued.code, verification_id=issued.verification_id)
    again = await client.verify_code(issued.code, verification_id=issued.verification_id)
    assert first.result == verification_service_pb2.VERIFICATION_RESULT_VERIFIED
    assert again.result == verification_service_pb2.VERIFICATION_RESULT_EXPIRED_OR_NOT_FOUND


async def test_templates_are_created_read_listed_and_rendered(
    client: smsgate.AsyncClient,
) -> None:
    made = await client.create_template(
        "Order {order} has shipped",
        kind=template_service_pb2.TEMPLATE_KIND_NOTIFICATION,
        template_id="shipped",
    )
    assert (made.id, made.version, list(made.variables)) == ("shipped", 1, ["order"])
    assert (await client.get_template("shipped")).body == "Order {order} has shipped"
    assert [t.id async for t in client.list_templates(page_size=1)] == ["shipped"]
    preview = await client.render_template("shipped", params={"order": "42"}, phone_number=NUMBER)
    assert preview.text == "Order 42 has shipped"
    assert preview.segments == 1
    sent = await client.send(NUMBER, template_id="shipped", params={"order": "42"})
    assert sent.rendered_text == "Order 42 has shipped"


def test_from_env_reads_target_token_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    env = {
        "SMSGATE_TARGET": "sms.internal:443",
        "SMSGATE_TOKEN": "ak_x.as_y",
        "SMSGATE_TLS": "1",
        "SMSGATE_TLS_CA_FILE": str(ca),
        "SMSGATE_TLS_SERVER_NAME": "sms.example.com",
    }
    c = smsgate.Connection.from_env(env)
    assert (c.target, c.token) == ("sms.internal:443", "ak_x.as_y")
    assert c.tls == smsgate.TLS(root_certificates=ca.read_bytes(), server_name="sms.example.com")
    with pytest.raises(ValueError, match="SMSGATE_TOKEN"):
        smsgate.Connection.from_env({})


async def test_from_env_connects_with_mtls(
    make_server: ServerFactory,
    pki: dict[str, Path],  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await make_server(
        tls_cert_file=pki["server_crt"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca"],
    )
    for name, value in {
        "SMSGATE_TARGET": f"127.0.0.1:{server.grpc_port}",
        "SMSGATE_TOKEN": (await server.apps.create("tls")).token,
        "SMSGATE_TLS": "true",
        "SMSGATE_TLS_CA_FILE": str(pki["ca"]),
        "SMSGATE_TLS_CLIENT_CERT_FILE": str(pki["client_crt"]),
        "SMSGATE_TLS_CLIENT_KEY_FILE": str(pki["client_key"]),
        "SMSGATE_TLS_SERVER_NAME": "localhost",
    }.items():
        monkeypatch.setenv(name, value)
    async with smsgate.AsyncClient.from_env() as client:
        sent = await client.send(NUMBER, "over mTLS")
    assert sent.id


class _FlakySms(sms_service_pb2_grpc.SmsServiceServicer):
    """A stand-in SmsService that answers UNAVAILABLE twice, then accepts: the
    only way to make a real server fail on cue, for the client's retry policy."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def SendSms(
        self,
        request: sms_service_pb2.SendSmsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> sms_service_pb2.SendSmsResponse:
        self.request_ids.append(request.request_id)
        if len(self.request_ids) <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        reply = sms_service_pb2.SendSmsResponse()
        reply.message.id = "m1"
        return reply


async def test_unavailable_is_retried_by_grpc_with_the_same_request_id() -> None:
    # Only SendSms is served; the stubs declare every method abstract.
    flaky = _FlakySms()  # type: ignore[abstract]
    server = grpc.aio.server()
    sms_service_pb2_grpc.add_SmsServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with smsgate.AsyncClient(f"127.0.0.1:{port}", "token") as client:
            sent = await client.send(NUMBER, "retried")
    finally:
        await server.stop(None)
    assert sent.id == "m1"
    assert len(flaky.request_ids) == 3
    assert len(set(flaky.request_ids)) == 1 and flaky.request_ids[0]


async def test_the_readme_session_works_when_pasted(server: Running) -> None:
    text = README.read_text()
    block = text[text.index("<!-- readme-python") :].split("```python\n", 1)[1].split("```", 1)[0]
    env = {
        **os.environ,
        "SMSGATE_TARGET": f"127.0.0.1:{server.grpc_port}",
        "SMSGATE_TOKEN": (await server.apps.create("readme")).token,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", block, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert out.decode().splitlines() == [
        "MESSAGE_STATUS_DELIVERED",
        "INVALID_PHONE_NUMBER ['phone_number']",
    ]


def _key(e: smsgate.StatusEvent) -> tuple[str, int, int]:
    return (e.message_id, e.status, e.time.ToNanoseconds())


async def test_a_watch_with_a_token_file_resumes_after_the_last_event_handled(
    client: smsgate.AsyncClient, tmp_path: Path
) -> None:
    token_file = tmp_path / "watch.token"
    handled: list[smsgate.StatusEvent] = []

    async def first_program() -> None:
        # Handles six events, then stops before asking for a seventh (a crash):
        # the token saved is the fifth's, so the sixth comes again.
        async for event in client.watch(token_file=token_file):
            handled.append(event)
            if len(handled) == 6:
                break

    task = asyncio.create_task(first_program())

    async def probe() -> int:
        await client.send(NUMBER, "probe")
        return len(handled)

    await wait_until(probe, lambda n: n > 0, what="the watch's first event", interval=0.2)
    batch = await client.send_batch(["+14155550100", "+14155550101"], "watched")
    await asyncio.wait_for(task, 10)
    assert token_file.read_text() == handled[4].resume_token
    ids = [r.message_id for r in batch.results]
    for message_id in ids:
        await wait_until(
            lambda: client.get(message_id),  # noqa: B023 - awaited in this iteration
            lambda m: m.status in smsgate.TERMINAL,
            what="the batch delivered",
        )
    wanted = {
        _key(smsgate.StatusEvent(message_id=m.id, status=h.status, time=h.time))
        for m in [await client.get(i) for i in ids]
        for h in m.history
    }

    confirmed = {_key(e) for e in handled[:5]}
    again: set[tuple[str, int, int]] = set()

    async def second_program() -> None:
        async for event in client.watch(token_file=token_file):
            assert _key(event) not in confirmed | again, "an event came twice"
            again.add(_key(event))
            # Order holds per message, not across shards: the sixth event may
            # come after the batch's, so wait for both.
            if wanted <= confirmed | again and _key(handled[5]) in again:
                return

    await asyncio.wait_for(second_program(), 10)
    assert _key(handled[5]) in again
