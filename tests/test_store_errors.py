"""Redis trouble reaches callers of the store as the domain's Unavailable, and
only Redis trouble does (store/errors.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from smsgate_server.domain.errors import Unavailable
from smsgate_server.store.apps import AppStore
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.keys import apps_index

from tests.cluster import LocalCluster


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def gone() -> AsyncIterator[RedisConnection]:
    """Clients of a Redis that is not there."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    connection = RedisConnection(client=Redis.from_url(url), reader=Redis.from_url(url))
    yield connection
    await connection.aclose()


async def test_connect_to_an_unreachable_redis_is_unavailable_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    with pytest.raises(Unavailable) as caught:
        await connect(url, pool_size=4)
    assert "cannot reach Redis at redis://:***@127.0.0.1" in caught.value.message
    assert "hunter2" not in caught.value.message


async def test_a_store_call_on_a_redis_that_is_gone_is_unavailable(
    gone: RedisConnection,
) -> None:
    with pytest.raises(Unavailable) as caught:
        await AppStore(gone.client).count()
    assert caught.value.reason == "UNAVAILABLE"


async def test_a_redis_that_is_gone_is_not_healthy(gone: RedisConnection) -> None:
    assert await gone.healthy() is False


async def test_a_healthy_redis_is_healthy(redis_url: str) -> None:
    connection = await connect(redis_url, pool_size=4)
    try:
        assert await connection.healthy() is True
    finally:
        await connection.aclose()


async def test_a_redis_error_that_is_a_bug_is_not_mapped(redis_url: str) -> None:
    connection = await connect(redis_url, pool_size=4)
    try:
        await connection.client.set(apps_index(), "not a set")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await AppStore(connection.client).count()
    finally:
        await connection.aclose()


async def test_a_store_call_on_a_cluster_that_is_gone_is_unavailable(tmp_path: Path) -> None:
    """Every node of the cluster stopped after the client read its layout:
    the cluster client cannot re-read it, and the store says UNAVAILABLE (not
    a bug's traceback per call)."""
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas_per_master=0)
    url = cluster.start()
    connection = await connect(url, pool_size=4)
    try:
        await AppStore(connection.client).count()
        cluster.stop()
        for _ in range(3):  # the first call may fail on a connection, later ones on the layout
            with pytest.raises(Unavailable):
                await AppStore(connection.client).count()
    finally:
        cluster.stop()
        await connection.aclose()
