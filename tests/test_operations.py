"""Operations that do not surprise: a taken port, a Redis that would lose data,
a misspelt setting, a changed shard count, liveness and readiness, and one
``/metrics`` view over every server process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from smsgate_server.runtime import start
from smsgate_server.store.embedded_redis import EmbeddedRedis

from tests.conftest import server_settings
from tests.processes import Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a taken gRPC port ------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_second_server_on_a_taken_grpc_port_is_refused(
    servers: Servers, tmp_path: Path, processes: str
) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = servers.start(tmp_path / "first", GRPC_ADDRESS=address, PROCESSES=processes)

    second = servers.spawn(tmp_path / "second", GRPC_ADDRESS=address, PROCESSES=processes)

    assert second.wait_exit() != 0
    assert f"cannot listen on SMSGATE_GRPC_ADDRESS={address}" in second.stderr
    assert first.process.poll() is None


# -- liveness and readiness ------------------------------------------------------


async def probe(client: httpx.AsyncClient, port: int) -> dict[str, int]:
    """The status code of each probe endpoint."""
    codes = {}
    for path in ("/livez", "/readyz", "/healthz"):
        codes[path] = (await client.get(f"http://127.0.0.1:{port}{path}")).status_code
    return codes


async def test_readyz_fails_while_redis_is_down_and_livez_does_not(tmp_path: Path) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis", publish_url=False)
    url = await asyncio.to_thread(own_redis.start)
    running = await start(server_settings(url, tmp_path / "data"))
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            assert await probe(client, running.http_port) == {
                "/livez": 200,
                "/readyz": 200,
                "/healthz": 200,
            }

            await asyncio.to_thread(own_redis.stop)

            assert await probe(client, running.http_port) == {
                "/livez": 200,
                "/readyz": 503,
                "/healthz": 503,
            }
    finally:
        await running.stop()


# -- unknown variables -----------------------------------------------------------


def test_a_misspelt_setting_is_named_at_start_with_the_closest_known_one(
    servers: Servers, tmp_path: Path
) -> None:
    server = servers.start(tmp_path / "data", SHARD="8", COLOUR="blue")

    warnings = [e for e in server.events() if str(e["event"]).startswith("unknown SMSGATE_*")]
    assert len(warnings) == 1, server.stderr
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["variables"] == [
        "SMSGATE_COLOUR",
        "SMSGATE_SHARD (did you mean SMSGATE_SHARDS?)",
    ]
