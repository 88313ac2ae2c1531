"""WatchReplies: replies posted to the side port in a vendor's format reach an
open stream of their app (and no other app's), a resumed stream sends every
reply after its token once, and a foreign or forged token is refused."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import httpx
import pytest
import smsgate
from smsgate.v1 import inbound_service_pb2 as ipb
from smsgate.v1 import inbound_service_pb2_grpc
from smsgate_server.domain.errors import RateLimited, Reason
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.runtime import Running
from smsgate_server.services.reply_watch import ReplyHub, ReplyWatch
from smsgate_server.store.connection import connect
from smsgate_server.store.replies import ReplyStore

from tests.conftest import ServerFactory
from tests.support import Details, bearer, details_of
from tests.waiting import wait_until

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    from smsgate.v1.inbound_service_pb2_grpc import InboundServiceAsyncStub

TOKEN = "tok-0123456789abcdef"
CN = "+8613800138000"
# What watch_replies() is (an async generator), to close it.
Replies = AsyncGenerator[ipb.Reply, None]


@dataclass
class Apps:
    """A server whose Tencent accounts send replies to app A and app B."""

    server: Running
    inbound: InboundServiceAsyncStub
    tokens: dict[str, str]

    @property
    def meta(self) -> dict[str, tuple[tuple[str, str], ...]]:
        return {app: bearer(token) for app, token in self.tokens.items()}

    async def reply(self, account: str, text: str, mobile: str = "13800138000") -> None:
        """Post a Tencent reply callback to the account's inbound endpoint."""
        body = {"nationcode": "86", "mobile": mobile, "text": text, "time": 1457336869}
        url = f"http://127.0.0.1:{self.server.http_port}/inbound/{account}/{TOKEN}"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, json=body)
        assert (response.status_code, response.json()) == (200, {"result": 0, "errmsg": "OK"})

    async def metric(self, sample: str) -> float:
        """The value of one sample (name and labels) on the server's /metrics."""
        url = f"http://127.0.0.1:{self.server.http_port}/metrics"
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(url)).text
        prefix = sample + " "
        return sum(
            float(row.removeprefix(prefix)) for row in text.splitlines() if row.startswith(prefix)
        )

    def watch(self, app: str, token: str = "") -> Any:
        return self.inbound.WatchReplies(
            ipb.WatchRepliesRequest(resume_token=token), metadata=self.meta[app]
        )


@pytest.fixture
async def apps(make_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Apps]:
    first = await make_server()
    a, b = await first.apps.create("a"), await first.apps.create("b")
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "".join(
            f'[providers.{name}]\ntype = "tencent"\nsecret_id = "id"\nsecret_key = "key"\n'
            f'sdk_app_id = "1400000000"\nreceipt_token = "{TOKEN}"\n'
            f'inbound_app = "{creds.app_key}"\n'
            for name, creds in (("tencent", a), ("tencent_b", b))
        )
    )
    server = await make_server(providers_file=providers)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        inbound: InboundServiceAsyncStub = inbound_service_pb2_grpc.InboundServiceStub(channel)
        yield Apps(server, inbound, {"a": a.token, "b": b.token})


async def started(call: Any) -> str:
    """The start token of a freshly opened watch (its first response)."""
    first = await call.read()
    assert not first.HasField("reply"), first
    assert first.resume_token
    return str(first.resume_token)


async def texts(call: Any, n: int) -> list[tuple[str, str]]:
    """The next ``n`` replies of a watch, as (text, resume token)."""
    out: list[tuple[str, str]] = []
    for _ in range(n):
        response = await asyncio.wait_for(call.read(), 10)
        assert response is not grpc.aio.EOF, f"stream ended after {out}"
        out.append((response.reply.text, response.resume_token))
    return out


async def refused(call: Any) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return details_of(caught.value)


async def test_a_stop_reply_shows_up_on_an_open_watch_as_opted_out(apps: Apps) -> None:
    stopped = 'smsgate_replies_total{opted_out="true",provider="tencent"}'
    before = await apps.metric(stopped)
    call = apps.watch("a")
    await started(call)
    assert await apps.metric("smsgate_reply_watch_subscriptions") >= 1

    await apps.reply("tencent", "退订")

    response = await asyncio.wait_for(call.read(), 10)
    reply = response.reply
    assert (reply.phone_number, reply.text, reply.provider, reply.opted_out) == (
        CN,
        "退订",
        "tencent",
        True,
    )
    assert reply.receive_time.ToMilliseconds() > 0
    assert await apps.metric(stopped) == before + 1
    call.cancel()


@pytest.mark.cluster
async def test_a_resumed_watch_sends_every_later_reply_once(apps: Apps) -> None:
    call = apps.watch("a")
    start = await started(call)
    for i in range(3):
        await apps.reply("tencent", f"r{i}")
    (first, token), *_ = await texts(call, 3)
    assert first == "r0"
    call.cancel()
    for i in range(3, 5):
        await apps.reply("tencent", f"r{i}")

    resumed = apps.watch("a", token)
    await started(resumed)
    assert [t for t, _ in await texts(resumed, 4)] == ["r1", "r2", "r3", "r4"]
    # Nothing repeated between the catch-up and the live replies: the next is new.
    await apps.reply("tencent", "r5")
    assert [t for t, _ in await texts(resumed, 1)] == ["r5"]
    resumed.cancel()

    from_start = apps.watch("a", start)
    await started(from_start)
    assert [t for t, _ in await texts(from_start, 6)] == [f"r{i}" for i in range(6)]
    from_start.cancel()


async def test_a_reply_taken_by_another_replica_reaches_the_watch(
    apps: Apps, make_server: ServerFactory
) -> None:
    other = await make_server(providers_file=apps.server.settings.providers_file)
    call = apps.watch("a")
    await started(call)

    url = f"http://127.0.0.1:{other.http_port}/inbound/tencent/{TOKEN}"
    body = {"nationcode": "86", "mobile": "13800138000", "text": "via b", "time": 1}
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(url, json=body)).status_code == 200

    assert [t for t, _ in await texts(call, 1)] == ["via b"]
    call.cancel()


async def test_an_app_sees_only_its_own_replies(apps: Apps) -> None:
    watch_a, watch_b = apps.watch("a"), apps.watch("b")
    await started(watch_a)
    await started(watch_b)

    await apps.reply("tencent", "for a")
    await apps.reply("tencent_b", "for b", mobile="13900139000")

    assert [t for t, _ in await texts(watch_b, 1)] == ["for b"]
    assert [t for t, _ in await texts(watch_a, 1)] == ["for a"]
    watch_a.cancel()
    watch_b.cancel()


async def test_a_stopping_server_ends_the_stream_with_unavailable(apps: Apps) -> None:
    call = apps.watch("a")
    await started(call)

    await apps.server.stop()

    details = await refused(call)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")


@pytest.mark.parametrize("token", ["x", "not-a-token-at-all", "A" * 40])
async def test_a_forged_token_is_invalid_argument(apps: Apps, token: str) -> None:
    details = await refused(apps.watch("a", token))

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_RESUME_TOKEN"
    assert "resume_token" in details.fields


async def test_another_apps_token_is_invalid_argument(apps: Apps) -> None:
    call = apps.watch("a")
    token = await started(call)
    call.cancel()

    details = await refused(apps.watch("b", token))

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_RESUME_TOKEN"
    assert "resume_token" in details.fields


async def test_the_python_client_follows_replies_and_resumes_from_its_token_file(
    apps: Apps, tmp_path: Path
) -> None:
    path = tmp_path / "replies.token"
    target = f"127.0.0.1:{apps.server.grpc_port}"
    async with smsgate.AsyncClient(target, apps.tokens["a"]) as client:
        replies = cast(Replies, client.watch_replies(token_file=path))
        first = asyncio.create_task(anext(replies))
        # The start token is saved once the stream is live.
        await wait_until(lambda: _exists(path), what="the start token saved")
        await apps.reply("tencent", "c0")
        assert (await asyncio.wait_for(first, 10)).text == "c0"
        await apps.reply("tencent", "c1")
        await apps.reply("tencent", "c2")
        # Asking for c1 saves c0's token: c0 is done with, c1 not yet.
        assert (await asyncio.wait_for(anext(replies), 10)).text == "c1"
        await replies.aclose()

        again = cast(Replies, client.watch_replies(token_file=path))
        assert [(await asyncio.wait_for(anext(again), 10)).text for _ in range(2)] == ["c1", "c2"]
        await again.aclose()


async def test_the_sync_python_client_follows_replies_too(apps: Apps, tmp_path: Path) -> None:
    path = tmp_path / "replies.token"
    target = f"127.0.0.1:{apps.server.grpc_port}"
    with smsgate.Client(target, apps.tokens["a"]) as client:
        replies = client.watch_replies(token_file=path)
        first = asyncio.create_task(asyncio.to_thread(next, replies))
        await wait_until(lambda: _exists(path), what="the start token saved")
        await apps.reply("tencent", "sync")
        assert (await asyncio.wait_for(first, 10)).text == "sync"


async def test_the_cli_prints_a_json_line_per_reply(apps: Apps, tmp_path: Path) -> None:
    path = tmp_path / "replies.token"
    env = {
        **os.environ,
        "SMSGATE_TARGET": f"127.0.0.1:{apps.server.grpc_port}",
        "SMSGATE_TOKEN": apps.tokens["a"],
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsgate",
        "--json",
        "replies",
        "--count",
        "1",
        "--token-file",
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: _exists(path), what="the CLI's start token saved")
        await apps.reply("tencent", "TD")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert proc.returncode == 0, err.decode()
    [line] = out.decode().splitlines()
    reply = json.loads(line)
    assert (reply["phone_number"], reply["text"], reply["opted_out"]) == (CN, "TD", True)


async def test_an_app_holds_at_most_so_many_watches_per_process(redis_url: str) -> None:
    connection = await connect(redis_url, pool_size=8)
    hub = ReplyHub(ReplyStore(connection.client, connection.reader), TokenSealer(b"s" * 32))
    hub.max_per_app = 1
    try:
        first = await hub.open("capped-app", "")
        with pytest.raises(RateLimited) as refused:
            await hub.open("capped-app", "")
        assert refused.value.reason is Reason.TOO_MANY_CONCURRENT_QUERIES
        other = await hub.open("another-app", "")
        first.close()
        (await hub.open("capped-app", "")).close()
        other.close()
    finally:
        await hub.close()
        await connection.aclose()


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def test_a_slow_subscriber_is_cut_off_and_resumes_without_a_gap(redis_url: str) -> None:
    connection = await connect(redis_url, pool_size=8)
    store = ReplyStore(connection.client, connection.reader)
    hub = ReplyHub(store, TokenSealer(b"s" * 32), buffer=2)
    app = "slow-app"
    try:
        watch = await hub.open(app, "")
        start = watch.start_token()
        for i in range(6):
            await store.add(app, phone=CN, text=f"s{i}", provider="tencent", opted_out=False)
        # Nobody reads the stream: the hub's offers overflow its buffer of 2.
        await wait_until(lambda: _ended(watch), what="the subscriber cut off")
        stream = watch.replies()
        # The catch-up still sends what came, from the app's stream itself;
        # then the stream ends, asking the client to resume.
        assert [(await anext(stream))[0].text for _ in range(6)] == [f"s{i}" for i in range(6)]
        with pytest.raises(RateLimited) as ended:
            await anext(stream)
        assert ended.value.reason is Reason.SUBSCRIBER_TOO_SLOW
        watch.close()

        again = await hub.open(app, start)
        replies = again.replies()
        assert [(await anext(replies))[0].text for _ in range(6)] == [f"s{i}" for i in range(6)]
        again.close()
        assert hub.subscriber_count == 0
    finally:
        await hub.close()
        await connection.aclose()


async def _ended(watch: ReplyWatch) -> bool:
    return watch.sub.ended
