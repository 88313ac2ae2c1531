"""Operations that do not surprise: a taken port, a Redis that would lose data,
a misspelt setting, liveness and readiness, and one
``/metrics`` view over every server process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from smsgate.v1 import message_pb2, sms_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.config import Settings, unknown_variables
from smsgate_server.runtime import StartError, start
from smsgate_server.store.embedded_redis import EmbeddedRedis, find_redis_server

from tests.conftest import server_settings
from tests.processes import ServerProcess, Servers
from tests.support import bearer
from tests.waiting import wait_until, wait_until_blocking

SENDING = message_pb2.MessageStatus.MESSAGE_STATUS_SENDING


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


async def test_readyz_fails_from_the_first_moment_of_shutdown_while_livez_answers(
    redis_url: str, tmp_path: Path
) -> None:
    # A send that takes the simulator 3 s keeps the dispatcher, and so the
    # shutdown, busy for its grace period while the side port still answers.
    running = await start(
        server_settings(redis_url, tmp_path / "data", sim_latency_ms=3000, shutdown_grace_seconds=3)
    )
    token = (await running.apps.create("probe")).token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        sms = sms_service_pb2_grpc.SmsServiceStub(channel)
        sent = await sms.SendSms(
            pb.SendSmsRequest(phone_number="+14155550123", text="slow"), metadata=bearer(token)
        )

        async def status() -> int:
            got = await sms.GetMessage(
                pb.GetMessageRequest(message_id=sent.message.id), metadata=bearer(token)
            )
            return got.message.status

        await wait_until(status, lambda s: s == SENDING, what="the message to be SENDING")
    stopping = asyncio.create_task(running.stop())
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            codes = await wait_until(
                lambda: probe(client, running.http_port),
                lambda codes: codes["/readyz"] != 200,
                what="/readyz to fail once shutdown starts",
            )
        assert codes == {"/livez": 200, "/readyz": 503, "/healthz": 503}
        assert not stopping.done()
    finally:
        await stopping


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


# -- a Redis that would lose data ------------------------------------------------


@contextlib.contextmanager
def raw_redis(workdir: Path, *args: str) -> Iterator[str]:
    """A redis-server started with exactly ``args`` (no AOF unless asked); its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        wait_until_blocking(
            lambda: _pings(client), what=f"redis-server {args} to answer", interval=0.02
        )
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


NO_PERSISTENCE = ("--appendonly", "no", "--save", "")


@pytest.mark.parametrize(
    ("args", "loss"),
    [
        (NO_PERSISTENCE, "it persists nothing"),
        (
            ("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"),
            "maxmemory-policy is allkeys-lru",
        ),
        (
            ("--appendonly", "yes", "--maxmemory-policy", "volatile-ttl"),
            "maxmemory-policy is volatile-ttl",
        ),
    ],
    ids=["no-persistence", "allkeys-lru", "volatile-ttl"],
)
async def test_a_redis_that_would_lose_data_is_refused_naming_the_override(
    tmp_path: Path, args: tuple[str, ...], loss: str
) -> None:
    with (
        raw_redis(tmp_path / "redis", *args) as url,
        pytest.raises(StartError, match=loss) as refused,
    ):
        running = await start(server_settings(url, tmp_path / "data"))
        await running.stop()  # not reached when the start is refused
    assert "SMSGATE_REDIS_ALLOW_VOLATILE=true" in str(refused.value)


async def test_allow_volatile_starts_on_a_redis_without_persistence_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with raw_redis(tmp_path / "redis", *NO_PERSISTENCE) as url:
        running = await start(server_settings(url, tmp_path / "data", redis_allow_volatile=True))
        await running.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("starting anyway (SMSGATE_REDIS_ALLOW_VOLATILE)" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (("--appendonly", "no"), "RDB snapshots only"),
        (("--appendonly", "yes", "--rename-command", "CONFIG", ""), "cannot check Redis"),
    ],
    ids=["snapshots-only", "config-disabled"],
)
async def test_a_redis_that_cannot_be_checked_or_snapshots_only_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, args: tuple[str, ...], warning: str
) -> None:
    with raw_redis(tmp_path / "redis", *args) as url:
        running = await start(server_settings(url, tmp_path / "data"))
        await running.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(warning in w for w in warnings), warnings


async def test_the_embedded_redis_passes_the_durability_check_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedded = server_settings("", tmp_path / "data")
    assert embedded.embedded_redis
    running = await start(embedded)
    await running.stop()
    assert not [
        r for r in caplog.records if "Redis" in r.getMessage() and r.levelno >= logging.WARNING
    ]


# -- one /metrics view -------------------------------------------------------------


def rpc_count(http_port: int, method: str) -> float:
    """``smsgate_rpcs_total`` of ``method`` (every code) in one scrape of ``http_port``."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "smsgate_rpcs_total" and sample.labels["method"] == method
    )


def start_two_processes(servers: Servers, data_dir: Path) -> tuple[ServerProcess, list[int]]:
    """A server of two processes, both serving; and their HTTP ports."""
    server = servers.start(data_dir, GRPC_ADDRESS=f"127.0.0.1:{free_port()}", PROCESSES="2")
    serving = wait_until_blocking(
        lambda: [e for e in server.events() if e.get("event") == "smsgate serving"],
        lambda events: len(events) == 2,
        what="both processes to serve",
    )
    return server, [int(str(event["http_port"])) for event in serving]


def test_one_scrape_counts_the_calls_of_every_process(servers: Servers, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server, http_ports = start_two_processes(servers, data_dir)
    done = servers.run(data_dir, "apps", "create", "metrics", "--json")
    token = json.loads(done.stdout)["token"]
    calls = 20
    for n in range(calls):
        # A connection each: the kernel spreads connections, not calls, over
        # the processes sharing the port.
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            sms = sms_service_pb2_grpc.SmsServiceStub(channel)
            sms.SendSms(
                pb.SendSmsRequest(phone_number="+14155550123", text=f"call {n}"),
                metadata=bearer(token),
                timeout=5,
            )

    # Every process's side port serves the merged view.
    for port in http_ports:
        assert rpc_count(port, "SendSms") == calls


def test_the_metrics_directory_is_removed_on_exit_and_orphans_at_start(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    finished = subprocess.Popen(["true"])
    finished.wait()
    orphan = data_dir / f"metrics-{finished.pid}"
    orphan.mkdir(parents=True)
    (orphan / "counter_1.db").write_bytes(b"\0" * 8)

    server, _ = start_two_processes(servers, data_dir)

    assert not orphan.exists()
    assert (data_dir / f"metrics-{server.process.pid}").is_dir()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert list(data_dir.glob("metrics-*")) == []


def test_the_clients_variables_are_not_reported_as_unknown() -> None:
    root = Path(__file__).resolve().parent.parent
    sources = [
        *(root / "clients" / "python" / "smsgate").glob("*.py"),
        *(root / "clients" / "typescript" / "src").rglob("*.ts"),
    ]
    named = {
        name
        for source in sources
        for name in re.findall(r"SMSGATE_[A-Z0-9_]+", source.read_text())
        # The clients' docs name some server settings too.
        if name.removeprefix("SMSGATE_").lower() not in Settings.model_fields
    }
    assert named, "no client reads an SMSGATE_* variable any more: update CLIENT_VARIABLES"
    assert unknown_variables(dict.fromkeys(named, "x")) == []
    assert unknown_variables({"SMSGATE_TEST_TWILIO_TOKEN": "x"}) == []
