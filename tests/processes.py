"""Real ``smsgate-server`` processes for tests: spawn with settings, wait until
serving, signal, and make sure none is left behind (used by the CLI and the
durability tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smsgate.v1 import message_pb2, sms_service_pb2_grpc

from tests.waiting import wait_until_blocking

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
        # As tests/conftest.py: the sending policy's caps and quiet hours are
        # on by default; tests of other features send one text to one number
        # many times, at any hour. tests/test_policy.py turns them on.
        SMSGATE_POLICY_SAME_CONTENT_SECONDS="0",
        SMSGATE_POLICY_PER_NUMBER_DAY="0",
        SMSGATE_POLICY_QUIET_HOURS="off",
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
        """True once ``text`` is on stdout; fails showing stdout after ``timeout`` seconds."""
        wait_until_blocking(
            lambda: self.stdout,
            lambda out: text in out,
            what=f"{text!r} on stdout",
            timeout=timeout,
            interval=0.02,
        )
        return True

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines written to stderr so far."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_serving(self) -> None:
        """Wait for the "smsgate serving" log event and take the ports from it."""

        def serving() -> dict[str, object] | None:
            return next((e for e in self.events() if e.get("event") == "smsgate serving"), None)

        event = wait_until_blocking(
            serving,
            lambda event: event is not None or self.process.poll() is not None,
            what="the server to log 'smsgate serving'",
            timeout=START_TIMEOUT,
            describe=lambda _: f"no such event; stdout:\n{self.stdout}\nstderr:\n{self.stderr}",
        )
        if event is None:
            raise AssertionError(
                f"server exited ({self.process.returncode}) before serving:\n"
                f"{self.stdout}\n{self.stderr}"
            )
        self.grpc_port = int(str(event["grpc_port"]))
        self.http_port = int(str(event["http_port"]))

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
