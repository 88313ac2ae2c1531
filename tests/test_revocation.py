"""Revoked apps: ``smsgate-server apps revoke KEY`` deletes an app, and every
server process on the Redis refuses its token at once, cached or not; a
process that was not listening when it happened drops its whole cache.
``apps rotate-secret KEY`` gives an app a new secret, and the old one is
refused the same way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.api.guard import GuardedServer, TokenCache
from smsgate_server.domain.apps import App
from smsgate_server.runtime import Running
from smsgate_server.store.keys import app_key

from tests.conftest import ServerFactory
from tests.processes import Servers
from tests.support import bearer, details_of
from tests.waiting import wait_until, wait_until_blocking

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

# Long enough that only the broadcast can explain a refusal within a test.
CACHE_SECONDS = 3600
LIST = pb.ListMessagesRequest(page_size=1)


async def answer(stub: SmsServiceAsyncStub, token: str) -> str:
    """The status code name a ListMessages call with ``token`` gets."""
    try:
        await stub.ListMessages(LIST, metadata=bearer(token))
    except grpc.aio.AioRpcError as err:
        assert err.code() != grpc.StatusCode.UNAUTHENTICATED or (
            details_of(err).reason == "INVALID_CREDENTIALS"
        )
        return err.code().name
    return "OK"


def blocking_answer(stub: SmsServiceStub, token: str) -> str:
    """``answer`` through a blocking stub (of a server process)."""
    try:
        stub.ListMessages(LIST, metadata=bearer(token), timeout=5)
    except grpc.RpcError as err:
        return str(err.code().name)
    return "OK"


@asynccontextmanager
async def cached_stubs(
    servers: list[Running], token: str
) -> AsyncIterator[list[SmsServiceAsyncStub]]:
    """A stub of each server, each server having ``token`` cached."""
    async with AsyncExitStack() as stack:
        stubs: list[SmsServiceAsyncStub] = []
        for server in servers:
            address = f"127.0.0.1:{server.grpc_port}"
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
            stubs.append(SmsServiceStub(channel))
        for stub in stubs:
            assert await answer(stub, token) == "OK"
        yield stubs


async def refused_by_all(stubs: list[SmsServiceAsyncStub], token: str, what: str) -> None:
    """Waits until every stub's call with ``token`` is refused as UNAUTHENTICATED."""
    for stub in stubs:
        await wait_until(
            lambda stub=stub: answer(stub, token),  # type: ignore[misc]
            lambda code: code == "UNAUTHENTICATED",
            what=what,
        )


def auth_cache(server: Running) -> TokenCache:
    assert isinstance(server.server, GuardedServer)
    return server.server.guard.cache


async def test_a_revoked_app_is_refused_by_every_replica_though_cached(
    make_server: ServerFactory,
) -> None:
    first = await make_server(auth_cache_seconds=CACHE_SECONDS)
    second = await make_server(auth_cache_seconds=CACHE_SECONDS)
    creds = await first.apps.create("leaving")
    async with cached_stubs([first, second], creds.token) as stubs:
        assert auth_cache(second).get(creds.app_key, creds.app_secret) is not None

        assert await first.apps.revoke(creds.app_key)

        await refused_by_all(stubs, creds.token, "the revoked token to be refused")
    assert not await first.apps.revoke(creds.app_key), "revoked twice"


async def test_a_rotated_secret_is_refused_by_every_replica_though_cached(
    make_server: ServerFactory,
) -> None:
    first = await make_server(auth_cache_seconds=CACHE_SECONDS)
    second = await make_server(auth_cache_seconds=CACHE_SECONDS)
    old = await first.apps.create("rotating")
    async with cached_stubs([first, second], old.token) as stubs:
        new = await first.apps.rotate_secret(old.app_key)

        assert new is not None
        assert (new.app_key, new.token != old.token) == (old.app_key, True)
        await refused_by_all(stubs, old.token, "the old secret to be refused")
        for stub in stubs:
            assert await answer(stub, new.token) == "OK"
    assert await first.apps.rotate_secret("ak_" + "0" * 20) is None, "no such app"


async def test_a_revocation_missed_while_unsubscribed_drops_the_whole_cache(
    make_server: ServerFactory,
) -> None:
    server = await make_server(auth_cache_seconds=CACHE_SECONDS)
    creds = await server.apps.create("gone-quietly")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        assert await answer(stub, creds.token) == "OK"
        # The app goes with no broadcast heard: deleted behind the server's back,
        # then its subscription is cut, as by a Redis outage.
        await server.redis.client.delete(app_key(creds.app_key))
        killed = await server.redis.client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        await wait_until(
            lambda: answer(stub, creds.token),
            lambda code: code == "UNAUTHENTICATED",
            what="the cache to be dropped when the subscription was made again",
        )


def test_a_look_up_that_raced_a_revocation_is_not_cached() -> None:
    cache = TokenCache(ttl=CACHE_SECONDS)
    app = App(key="ak_" + "0" * 20, name="racing")
    before = cache.revision  # the look-up in Redis starts
    cache.forget(app.key)  # the revocation is heard meanwhile
    cache.put(app.key, "as_secret", app, revision=before)
    assert cache.get(app.key, "as_secret") is None
    cache.put(app.key, "as_secret", app, revision=cache.revision)
    assert cache.get(app.key, "as_secret") == app


@pytest.mark.slow
def test_apps_revoke_refuses_the_token_on_the_running_server(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = servers.start(data_dir, AUTH_CACHE_SECONDS=str(CACHE_SECONDS))
    created = servers.run(data_dir, "apps", "create", "demo", "--json")
    creds = json.loads(created.stdout)
    stub = server.sms()

    assert blocking_answer(stub, creds["token"]) == "OK"
    done = servers.run(data_dir, "apps", "revoke", creds["app_key"])
    assert done.returncode == 0, done.stderr
    assert f"revoked {creds['app_key']}" in done.stdout
    wait_until_blocking(
        lambda: blocking_answer(stub, creds["token"]),
        lambda c: c == "UNAUTHENTICATED",
        what="the token to be refused",
    )

    again = servers.run(data_dir, "apps", "revoke", creds["app_key"])
    assert again.returncode == 1
    assert "no app has the key" in again.stderr


@pytest.mark.slow
def test_apps_rotate_secret_prints_a_new_token_and_refuses_the_old(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = servers.start(data_dir, AUTH_CACHE_SECONDS=str(CACHE_SECONDS))
    old = json.loads(servers.run(data_dir, "apps", "create", "demo", "--json").stdout)
    stub = server.sms()
    assert blocking_answer(stub, old["token"]) == "OK"
    done = servers.run(data_dir, "apps", "rotate-secret", old["app_key"], "--json")
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)
    assert new["app_key"] == old["app_key"]
    assert new["token"] == f"{new['app_key']}.{new['app_secret']}" != old["token"]
    wait_until_blocking(
        lambda: blocking_answer(stub, old["token"]),
        lambda c: c == "UNAUTHENTICATED",
        what="the old to be refused",
    )
    assert blocking_answer(stub, new["token"]) == "OK"

    text = servers.run(data_dir, "apps", "rotate-secret", old["app_key"])
    assert text.returncode == 0, text.stderr
    assert "app_secret: as_" in text.stdout and "(shown once" in text.stdout
    missing = servers.run(data_dir, "apps", "rotate-secret", "ak_" + "0" * 20)
    assert missing.returncode == 1
    assert "no app has the key" in missing.stderr
