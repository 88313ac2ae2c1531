"""The ``smsgate-server`` command as a real process: embedded Redis in a temporary
data directory, ports picked by the OS, health, signals, restarts, ``apps create``
and start-up errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import smsgate
import smsgate_server
from grpc_health.v1 import health_pb2
from smsgate.v1 import message_pb2, sms_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate_server.config import Settings

from tests.processes import (
    DELIVERED,
    NOT_SERVING,
    SERVING,
    Servers,
    redis_server_pids,
)
from tests.support import bearer
from tests.waiting import wait_until_blocking


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def dev_token(data_dir: Path) -> str:
    """The dev app's token; the server writes it just after it starts serving."""
    path = data_dir / "dev-app.json"

    def token() -> str:
        try:
            return str(json.loads(path.read_text())["token"])
        except (FileNotFoundError, json.JSONDecodeError):
            return ""

    return wait_until_blocking(token, what=f"a token in {path}", timeout=5, interval=0.02)


def wait_delivered(
    sms: sms_service_pb2_grpc.SmsServiceStub, token: str, message_id: str
) -> message_pb2.Message:
    def message() -> message_pb2.Message:
        return sms.GetMessage(
            pb.GetMessageRequest(message_id=message_id), metadata=bearer(token), timeout=5
        ).message

    return wait_until_blocking(
        message,
        lambda m: m.status == DELIVERED,
        what=f"message {message_id} to be delivered",
        describe=lambda m: message_pb2.MessageStatus.Name(m.status),
    )


def assert_no_errors(output: str) -> None:
    """No traceback and no error-level log line."""
    assert "Traceback" not in output, output
    for line in output.splitlines():
        if line.startswith("{"):
            assert json.loads(line).get("level") != "error", line


def assert_no_redis_left(data_dir: Path) -> None:
    wait_until_blocking(
        lambda: redis_server_pids(data_dir),
        lambda pids: not pids,
        what=f"the redis-server of {data_dir} to exit",
        timeout=5,
        describe=lambda pids: f"pids {pids}",
    )
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
    later.send_time.FromSeconds(int(time.time()) + 3600)
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


def test_apps_list_shows_every_app_until_it_is_revoked(servers: Servers, data_dir: Path) -> None:
    first = _credentials(servers.run(data_dir, "apps", "create", "shop", "--json"))
    second = _credentials(
        servers.run(data_dir, "apps", "create", "bank", "--default-region", "CN", "--json")
    )

    listed = servers.run(data_dir, "apps", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["app_key"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {k: (r["name"], r["default_region"]) for k, r in rows.items()} == {
        first["app_key"]: ("shop", ""),
        second["app_key"]: ("bank", "CN"),
    }
    assert all(r["create_time"].endswith("+00:00") for r in rows.values())
    assert "app_secret" not in listed.stdout and first["app_secret"] not in listed.stdout

    assert servers.run(data_dir, "apps", "revoke", first["app_key"]).returncode == 0
    text = servers.run(data_dir, "apps", "list").stdout
    assert first["app_key"] not in text
    assert text.split()[0] == second["app_key"] and text.split()[-1] == "bank"


def test_version_names_the_server_and_client_packages(servers: Servers, data_dir: Path) -> None:
    ran = servers.run(data_dir, "--version")
    assert ran.returncode == 0, ran.stderr
    expected = f"smsgate-server {smsgate_server.__version__} (client smsgate {smsgate.__version__})"
    assert ran.stdout.strip() == expected


# -- start-up errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRPC_ADDRESS", "nonsense"),
        ("HTTP_ADDRESS", "127.0.0.1:99999"),
        ("SHARDS", "-1"),
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
