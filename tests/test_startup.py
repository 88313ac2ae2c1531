"""Start-up unwinds: a failure at any step releases what the steps before it
acquired (no asyncio task, listening socket, Redis client or redis-server is
left), and a start after it works."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from smsgate_server.config import Settings
from smsgate_server.runtime import StartError, StartStep, start

from tests.waiting import wait_until

T = TypeVar("T")

# A resource start-up forgot would otherwise be closed quietly by the garbage collector.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


class InjectedFailure(Exception):
    """Raised by the step hook to fail start-up at one step."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether any socket on this machine listens on ``port`` (from /proc/net)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                return True
    return False


def redis_children() -> set[int]:
    """Pids of redis-server processes this test process started."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after it.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm.startswith("redis-server"):
            found.add(int(entry.name))
    return found


def redis_client_count(url: str) -> int:
    """Connections to the Redis at ``url``, not counting the one asking."""
    with redis.Redis.from_url(url) as client:
        return len(client.client_list()) - 1


async def until(read: Callable[[], T], want: T, what: str) -> None:
    """Wait for ``read()`` to return ``want``; fail with what it last returned."""

    async def observe() -> T:
        return read()

    await wait_until(observe, lambda seen: seen == want, what=f"{what}: {want!r}", interval=0.02)


def fail_at(step: StartStep) -> Callable[[StartStep], Any]:
    async def hook(reached: StartStep) -> None:
        if reached is step:
            raise InjectedFailure(step)

    return hook


@pytest.fixture
def ports() -> tuple[int, int]:
    """A gRPC and an HTTP port, free now."""
    return free_port(), free_port()


def settings_for(data_dir: Path, ports: tuple[int, int], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "grpc_address": f"127.0.0.1:{ports[0]}",
        "http_address": f"127.0.0.1:{ports[1]}",
        "data_dir": data_dir,
        "sim_latency_ms": 0,
        "sim_receipt_delay_ms": 0,
        "shutdown_grace_seconds": 1,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)


class Baseline:
    """What this process holds before a start: asyncio tasks and redis-server children."""

    def __init__(self) -> None:
        self.tasks = asyncio.all_tasks()
        self.children = redis_children()

    async def check(self) -> None:
        """Fail if a task or a redis-server child appeared since."""
        assert asyncio.all_tasks() - self.tasks == set()
        await until(redis_children, self.children, "redis-server children of this process")


async def released(
    settings: Settings, baseline: Baseline, clients_before: int | None = None
) -> None:
    """Nothing left listening, no task, Redis client or redis-server; and a start works."""
    await baseline.check()
    for address in (settings.grpc_address, settings.http_address):
        port = int(address.rsplit(":", 1)[1])
        await until(functools.partial(listening, port), False, f"a listener on port {port}")
    if clients_before is not None:
        assert settings.redis_url is not None
        url = settings.redis_url
        await until(lambda: redis_client_count(url), clients_before, "Redis connections")
    running = await start(settings)
    await running.stop()


@pytest.mark.parametrize("step", list(StartStep))
async def test_a_failure_at_each_step_of_an_embedded_start_releases_everything(
    step: StartStep, tmp_path: Path, ports: tuple[int, int]
) -> None:
    baseline = Baseline()
    settings = settings_for(tmp_path / "data", ports)
    with pytest.raises(InjectedFailure):
        await start(settings, after_step=fail_at(step))
    await released(settings, baseline)


@pytest.mark.parametrize("step", [s for s in StartStep if s is not StartStep.EMBEDDED_REDIS])
async def test_a_failure_at_each_step_with_an_external_redis_closes_its_clients(
    step: StartStep,
    redis_url: str,
    tmp_path: Path,
    ports: tuple[int, int],
) -> None:
    baseline = Baseline()
    settings = settings_for(tmp_path / "data", ports, redis_url=redis_url)
    before = redis_client_count(redis_url)
    with pytest.raises(InjectedFailure):
        await start(settings, after_step=fail_at(step))
    await released(settings, baseline, before)


async def test_a_start_passes_every_step_in_order(tmp_path: Path, ports: tuple[int, int]) -> None:
    seen: list[StartStep] = []

    async def record(step: StartStep) -> None:
        seen.append(step)

    running = await start(settings_for(tmp_path / "data", ports), after_step=record)
    await running.stop()
    assert seen == list(StartStep)


async def test_unreachable_redis_is_a_start_error_that_leaves_nothing(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    baseline = Baseline()
    settings = settings_for(
        tmp_path / "data", ports, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with pytest.raises(StartError, match="cannot reach Redis"):
        await start(settings)
    await baseline.check()


async def test_a_taken_grpc_port_is_a_start_error_that_leaves_nothing(
    redis_url: str, tmp_path: Path, ports: tuple[int, int]
) -> None:
    baseline = Baseline()
    settings = settings_for(tmp_path / "data", ports, redis_url=redis_url)
    before = redis_client_count(redis_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        with pytest.raises(StartError, match="SMSGATE_GRPC_ADDRESS"):
            await start(settings)
    await released(settings, baseline, before)


async def test_a_taken_http_port_is_a_start_error_that_leaves_nothing(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    baseline = Baseline()
    settings = settings_for(tmp_path / "data", ports)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        with pytest.raises(StartError, match="SMSGATE_HTTP_ADDRESS"):
            await start(settings)
    await released(settings, baseline)


async def test_an_unknown_provider_is_a_start_error_naming_the_known_ones(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    baseline = Baseline()
    settings = settings_for(tmp_path / "data", ports, provider="smoke-signals")
    with pytest.raises(StartError, match=r"SMSGATE_PROVIDER='smoke-signals'.*known: simulator"):
        await start(settings)
    await released(settings.model_copy(update={"provider": "simulator"}), baseline)


async def test_a_data_directory_in_use_is_a_start_error_that_spares_the_running_server(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    first = await start(settings_for(tmp_path / "data", ports))
    try:
        with pytest.raises(StartError, match="another smsgate-server is using the data directory"):
            await start(settings_for(tmp_path / "data", (free_port(), free_port())))
        assert await first.redis.healthy()
    finally:
        await first.stop()
