"""The ``smsgate-server`` command as a real process: embedded Redis in a temporary
data directory, ports picked by the OS, health, signals, restarts, ``apps create``
and start-up errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smsgate.v1 import message_pb2, sms_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.config import Settings

from tests.support import bearer

SERVER = Path(sys.executable).parent / "smsgate-server"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DELIVERED = message_pb2.MessageStatus.MESSAGE_STATUS_DELIVERED


def server_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test server: no inherited SMSGATE_*, embedded Redis
    in ``data_dir``, ports 0, a fast simulator; ``settings`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGATE_")}
    env.update(
        SMSGATE_DATA_DIR=str(data_dir),
        SMSGATE_GRPC_ADDRESS="127.0.0.1:0",
        SMSGATE_HTTP_ADDRESS="127.0.0.1:0",
        SMSGATE_LOG_FORMAT="json",
        SMSGATE_SIM_LATENCY_MS="0",
        SMSGATE_SIM_RECEIPT_DELAY_MS="0",
        SMSGATE_SHUTDOWN_GRACE_SECONDS="2",
    )
    env.update({f"SMSGATE_{name.upper()}": value for name, value in settings.items()})
    return env


def redis_server_pids(data_dir: Path) -> list[int]:
    """Pids of live redis-server processes working in ``data_dir`` (Redis
    rewrites its command line, but it chdirs to its ``--dir``)."""
    wanted = data_dir.resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "redis-server":
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if state != "Z" and cwd == wanted:
            pids.append(int(proc.name))
    return pids


@dataclass
class ServerProcess:
    """One ``smsgate-server`` child process and what it has said so far."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    stdout_path: Path
    stderr_path: Path
    grpc_port: int = 0
    http_port: int = 0
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def printed(self, text: str, timeout: float = 5.0) -> bool:
        """Whether ``text`` appears on stdout within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines written to stderr so far."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "smsgate serving":
                    self.grpc_port = int(str(event["grpc_port"]))
                    self.http_port = int(str(event["http_port"]))
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError(f"server did not start:\n{self.stdout}\n{self.stderr}")

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.channels.append(ch)
        return ch

    def sms(self) -> sms_service_pb2_grpc.SmsServiceStub:
        return sms_service_pb2_grpc.SmsServiceStub(self.channel())

    def health(self) -> Any:
        # types-grpcio-health-checking declares no methods on HealthStub.
        return health_pb2_grpc.HealthStub(self.channel())

    def signal(self, sig: signal.Signals, *, group: bool = False) -> None:
        """Send ``sig`` to the server, or to its whole process group as a
        terminal's Ctrl-C does."""
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"server did not stop:\n{self.stderr}") from None

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Servers:
    """Runs ``smsgate-server`` processes for one test, each in its own process
    group, and makes sure they are all gone afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[ServerProcess] = []

    def spawn(self, data_dir: Path, **settings: str) -> ServerProcess:
        """Start a server without waiting for it."""
        n = len(self.started)
        out, err = self.workdir / f"server{n}.out", self.workdir / f"server{n}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [str(SERVER)],
                env=server_env(data_dir, **settings),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        server = ServerProcess(process, data_dir, out, err)
        self.started.append(server)
        return server

    def start(self, data_dir: Path, **settings: str) -> ServerProcess:
        """Start a server and wait until it serves."""
        server = self.spawn(data_dir, **settings)
        server.wait_serving()
        return server

    def run(self, data_dir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        """Run ``smsgate-server ARGS`` to completion."""
        return subprocess.run(
            [str(SERVER), *args],
            env=server_env(data_dir, **settings),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def close(self) -> None:
        for server in self.started:
            server.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    group = Servers(tmp_path)
    yield group
    group.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def dev_token(data_dir: Path) -> str:
    """The dev app's token; the server writes it just after it starts serving."""
    path = data_dir / "dev-app.json"
    deadline = time.monotonic() + 5
    while True:
        try:
            return str(json.loads(path.read_text())["token"])
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def wait_delivered(
    sms: sms_service_pb2_grpc.SmsServiceStub, token: str, message_id: str
) -> message_pb2.Message:
    deadline = time.monotonic() + 10
    while True:
        reply = sms.GetMessage(
            pb.GetMessageRequest(message_id=message_id), metadata=bearer(token), timeout=5
        )
        if reply.message.status == DELIVERED or time.monotonic() > deadline:
            return reply.message
        time.sleep(0.05)


def assert_no_errors(output: str) -> None:
    """No traceback and no error-level log line."""
    assert "Traceback" not in output, output
    for line in output.splitlines():
        if line.startswith("{"):
            assert json.loads(line).get("level") != "error", line


def assert_no_redis_left(data_dir: Path) -> None:
    deadline = time.monotonic() + 5
    while redis_server_pids(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_server_pids(data_dir) == []
    assert not (data_dir / "redis.url").exists()


# -- running ------------------------------------------------------------------


def test_server_answers_grpc_health_checks(servers: Servers, data_dir: Path) -> None:
    server = servers.start(data_dir)
    health = server.health()
    for service in ["", "smsgate.v1.SmsService"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == SERVING, service


def test_server_answers_healthz_on_the_http_port(servers: Servers, data_dir: Path) -> None:
    server = servers.start(data_dir)
    reply = httpx.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


def test_first_start_prints_a_working_dev_app_token(servers: Servers, data_dir: Path) -> None:
    server = servers.start(data_dir)
    token = dev_token(data_dir)
    assert server.printed(token)
    assert (data_dir / "dev-app.json").stat().st_mode & 0o077 == 0
    reply = server.sms().SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="hi"),
        metadata=bearer(token),
        timeout=5,
    )
    assert wait_delivered(server.sms(), token, reply.message.id).status == DELIVERED


# -- stopping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT", "ctrl-c-to-process-group"],
)
def test_signal_stops_the_server_and_its_redis_cleanly(
    servers: Servers, data_dir: Path, sig: signal.Signals, group: bool
) -> None:
    server = servers.start(data_dir)
    port = (data_dir / "redis.url").read_text().strip().rsplit(":", 1)[1].split("/")[0]
    pids = redis_server_pids(data_dir)
    assert len(pids) == 1
    assert f":{port}" in Path(f"/proc/{pids[0]}/cmdline").read_text()

    server.signal(sig, group=group)

    assert server.wait_exit() == 0
    assert_no_errors(server.stderr)
    assert_no_redis_left(data_dir)
    assert any(e.get("event") == "stopped" for e in server.events())


def test_health_turns_not_serving_when_shutdown_starts(servers: Servers, data_dir: Path) -> None:
    server = servers.start(data_dir)
    health = server.health()
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(watch).status == SERVING

    server.signal(signal.SIGTERM)

    assert next(watch).status == NOT_SERVING
    watch.cancel()
    assert server.wait_exit() == 0


def test_restart_reloads_accepted_messages_from_the_aof(servers: Servers, data_dir: Path) -> None:
    first = servers.start(data_dir)
    token = dev_token(data_dir)
    sms = first.sms()
    sent = sms.SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="before restart"),
        metadata=bearer(token),
        timeout=5,
    )
    wait_delivered(sms, token, sent.message.id)
    later = pb.SendSmsRequest(phone_number="+14155550123", text="later")
    later.send_at.FromSeconds(int(time.time()) + 3600)
    scheduled = sms.SendSms(later, metadata=bearer(token), timeout=5)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = servers.start(data_dir)

    assert second.printed(token)
    sms = second.sms()
    got = sms.GetMessage(
        pb.GetMessageRequest(message_id=sent.message.id), metadata=bearer(token), timeout=5
    )
    assert got.message.status == DELIVERED
    assert got.message.text == "before restart"
    got = sms.GetMessage(
        pb.GetMessageRequest(message_id=scheduled.message.id), metadata=bearer(token), timeout=5
    )
    assert got.message.status == message_pb2.MessageStatus.MESSAGE_STATUS_SCHEDULED


# -- apps create --------------------------------------------------------------


def _credentials(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    creds: dict[str, str] = json.loads(done.stdout)
    assert set(creds) == {"app_key", "app_secret", "token"}
    assert creds["token"] == f"{creds['app_key']}.{creds['app_secret']}"
    return creds


def test_apps_create_beside_a_running_server_makes_a_working_token(
    servers: Servers, data_dir: Path
) -> None:
    server = servers.start(data_dir)

    creds = _credentials(servers.run(data_dir, "apps", "create", "demo", "--json"))

    reply = server.sms().SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="from demo"),
        metadata=bearer(creds["token"]),
        timeout=5,
    )
    assert wait_delivered(server.sms(), creds["token"], reply.message.id).status == DELIVERED
    assert len(redis_server_pids(data_dir)) == 1


def test_apps_create_without_a_server_opens_redis_briefly(servers: Servers, data_dir: Path) -> None:
    creds = _credentials(servers.run(data_dir, "apps", "create", "demo", "--json"))

    assert_no_redis_left(data_dir)
    server = servers.start(data_dir)
    reply = server.sms().SendSms(
        pb.SendSmsRequest(phone_number="+14155550123", text="from demo"),
        metadata=bearer(creds["token"]),
        timeout=5,
    )
    assert reply.message.id


# -- start-up errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRPC_ADDRESS", "nonsense"),
        ("HTTP_ADDRESS", "127.0.0.1:99999"),
        ("SHARDS", "0"),
        ("LOG_LEVEL", "loud"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("SIM_FAILURE_RATE", "2"),
    ],
)
def test_bad_setting_exits_naming_the_variable(
    servers: Servers, data_dir: Path, name: str, value: str
) -> None:
    done = servers.run(data_dir, **{name: value})
    assert done.returncode != 0
    assert f"SMSGATE_{name}" in done.stderr
    assert_no_errors(done.stderr)
    assert redis_server_pids(data_dir) == []


def test_unreachable_redis_is_a_clear_start_up_error(servers: Servers, data_dir: Path) -> None:
    done = servers.run(data_dir, REDIS_URL="redis://127.0.0.1:1")
    assert done.returncode != 0
    assert "cannot reach Redis at redis://127.0.0.1:1" in done.stderr
    assert "SMSGATE_REDIS_URL" in done.stderr
    assert_no_errors(done.stderr)


@pytest.mark.parametrize("name", ["GRPC_ADDRESS", "HTTP_ADDRESS"])
def test_port_in_use_is_a_clear_start_up_error(servers: Servers, data_dir: Path, name: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = servers.run(data_dir, **{name: address})
    assert done.returncode != 0
    assert f"SMSGATE_{name}={address}" in done.stderr
    assert_no_errors(done.stderr)
    assert_no_redis_left(data_dir)


def test_second_server_on_the_same_data_dir_is_refused(servers: Servers, data_dir: Path) -> None:
    first = servers.start(data_dir)

    done = servers.run(data_dir)

    assert done.returncode != 0
    assert "another smsgate-server is using the data directory" in done.stderr
    assert "SMSGATE_DATA_DIR" in done.stderr
    assert_no_errors(done.stderr)
    health = first.health()
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING


# -- the README -----------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [
        f"SMSGATE_{name.upper()}"
        for name in Settings.model_fields
        if f"`SMSGATE_{name.upper()}`" not in text
    ]
    assert not missing, f"add these to the README's settings table: {missing}"


def test_readme_buf_curl_session_works_when_pasted(servers: Servers, tmp_path: Path) -> None:
    marker = "<!-- readme-session"
    text = README.read_text()
    block = text[text.index(marker) :].split("```sh\n", 1)[1].split("```", 1)[0]
    # The session runs at the repository root beside `make serve`: give it a
    # .venv and a .smsgate of its own, and the server's real port.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    server = servers.start(tmp_path / ".smsgate")
    block = block.replace("127.0.0.1:50051", f"127.0.0.1:{server.grpc_port}")

    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "smsgate.v1.SmsService/SendSms" in done.stdout
    assert '"status": "MESSAGE_STATUS_QUEUED"' in done.stdout
    assert done.stdout.rstrip().endswith("}")
    final = json.loads(done.stdout[done.stdout.rindex('{\n  "message"') :])
    assert final["message"]["status"] == "MESSAGE_STATUS_DELIVERED"
