"""``python -m bench``: starts Redis, the echo ceiling and smsgate as separate
processes, drives each scenario from separate client processes, prints a
table with every figure beside the echo ceiling, and writes JSON to
``bench/out/results-<timestamp>.json``.

Order of a run: Redis; echo server -> echo rows (one per concurrency used)
-> echo stopped; smsgate server -> probe each RPC (UNIMPLEMENTED = skipped)
-> scenarios -> server stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smsgate.v1 import message_pb2, sms_service_pb2, verification_service_pb2
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc
from smsgate.v1 import verification_service_pb2_grpc as ver_grpc
from smsgate_server.config import Settings
from smsgate_server.domain.apps import parse_token
from smsgate_server.domain.ids import shard_of_id
from smsgate_server.store.embedded_redis import EmbeddedRedis
from smsgate_server.store.keys import ShardKeys, shard_count_key

from bench.load import ClientResult, ClientSpec, run_client
from bench.procstat import TreeSample, cpu_percent, sample_tree
from bench.scenarios import TEXT, batch_request, phone

__all__ = ["Profile", "Row", "main"]

OUT_DIR = Path(__file__).parent / "out"
DELIVERED = message_pb2.MESSAGE_STATUS_DELIVERED


@dataclass(frozen=True, slots=True)
class Profile:
    """Durations and sizes of one run (full, --quick or --smoke)."""

    name: str
    warmup: float
    duration: float
    clients: int
    e2e_messages: int
    watch_subscribers: int
    watch_rate: float
    scenarios: tuple[str, ...]
    # The footprint scenario: Redis bytes per message measured after this many
    # messages have been delivered.
    footprint_messages: int = 20_000
    # The growth scenario: ListMessages of an app with 10 messages and with this many.
    growth_messages: int = 100_000
    # The resume scenario: status events a WatchStatus resumes over (a
    # 10-minute gap at 1,000 events/s is 600,000).
    resume_events: int = 60_000


ALL = (
    "sendsms",
    "sendsms-api",
    "sendsms-policy",
    "getmessage",
    "batchsend",
    "e2e",
    "verify",
    "watch",
    "noisy",
    "footprint",
    "growth",
    "resume",
)
PROFILES = {
    "full": Profile("full", 3.0, 15.0, 2, 20_000, 100, 500.0, ALL, 50_000, 1_000_000, 600_000),
    "quick": Profile("quick", 1.0, 5.0, 2, 5_000, 20, 300.0, ALL, 20_000, 100_000, 60_000),
    "smoke": Profile(
        "smoke", 0.3, 1.0, 1, 200, 2, 50.0, ("sendsms", "sendsms-api"), 1_000, 1_000, 1_000
    ),
}
CONCURRENCY = {
    "sendsms": 64,
    # SendSms to an api-role process while a worker-role process dispatches.
    "sendsms-api": 64,
    # SendSms to distinct numbers of an app whose sending policy keeps its caps.
    "sendsms-policy": 64,
    "getmessage": 64,
    "batchsend": 4,
    "e2e": 64,
    "verify": 32,
    "watch": 8,
    # The neighbour's GetMessage workers; the noisy app runs NOISY_CLIENTS loops.
    "noisy": 4,
    # BatchSends of 1,000 in flight while the footprint's messages are accepted.
    "footprint": 4,
    # ListMessages callers of the growth scenario: one, as an app may list one
    # page at a time (SMSGATE_APP_MAX_CONCURRENT_QUERIES).
    "growth": 1,
    # One WatchStatus resuming.
    "resume": 1,
}
UNITS = {
    "echo": "req",
    "sendsms": "req",
    "sendsms-api": "req",
    "sendsms-policy": "req",
    "getmessage": "req",
    "batchsend": "recipient",
    "e2e": "delivered",
    "verify": "pair",
    "watch": "event",
    "noisy": "req",
    "listmessages": "req",
    "footprint": "byte/msg",
    "growth": "req",
    "resume": "event",
}
# The noisy-neighbour scenario: app A holds this many messages and this many
# client processes loop ListMessages (no filter) over them.
NOISY_MESSAGES = 40_000
NOISY_CLIENTS = 4


@dataclass(slots=True)
class Row:
    """One line of the results table."""

    scenario: str
    unit: str
    concurrency: int
    clients: int
    rate: float = 0.0
    requests: int = 0
    units: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    # The first message a client saw of each code.
    error_details: dict[str, str] = field(default_factory=dict)
    server_cpu_pct: float = 0.0
    server_rss_mb: float = 0.0
    redis_cpu_pct: float = 0.0
    # sendsms-api: the worker-role process beside the measured api process.
    worker_cpu_pct: float = 0.0
    echo_rate_ratio: float | None = None
    echo_p99_ratio: float | None = None
    # noisy: the neighbour's GetMessage p99 under noise over its p99 idle.
    neighbour_p99_ratio: float | None = None
    skipped: str = ""
    note: str = ""


# --- processes -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server at {target} did not become SERVING in {timeout}s")


class Servers:
    """Redis, the echo server and the smsgate server of one run."""

    def __init__(self, root: Path, *, uvloop: bool, server_env: dict[str, str]) -> None:
        self.root = root
        self.uvloop = uvloop
        self.server_env = server_env
        self.redis = EmbeddedRedis(root / "redis", publish_url=False)
        self.echo: subprocess.Popen[bytes] | None = None
        self.smsgate: subprocess.Popen[bytes] | None = None
        # A worker-role process beside an api-role smsgate (sendsms-api).
        self.worker: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.grpc_port = 0

    def start_redis(self) -> str:
        return self.redis.start()

    @property
    def redis_pid(self) -> int:
        assert self.redis.process is not None
        return self.redis.process.pid

    def start_echo(self, *, via_redis: bool = False, grouped: bool = False) -> tuple[str, int]:
        port = free_port()
        cmd = [sys.executable, "-m", "bench.echo_server", str(port)]
        if via_redis:
            cmd += ["--redis", self.redis.url]
            if grouped:
                cmd.append("--group")
        if self.uvloop:
            cmd.append("--uvloop")
        self.echo = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
        assert self.echo.stdout is not None
        if self.echo.stdout.readline().strip() != b"ready":
            raise RuntimeError("echo server did not start")
        return f"127.0.0.1:{port}", self.echo.pid

    def stop_echo(self) -> None:
        if self.echo is not None:
            self.echo.terminate()
            self.echo.wait(10)
            self.echo = None

    def _env(self, grpc_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SMSGATE_REDIS_URL": self.redis.url,
                "SMSGATE_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
                "SMSGATE_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
                "SMSGATE_DATA_DIR": str(self.root / "data"),
                "SMSGATE_SIM_LATENCY_MS": "0",
                "SMSGATE_SIM_RECEIPT_DELAY_MS": "0",
                "SMSGATE_LOG_LEVEL": "WARNING",
                "SMSGATE_CREATE_DEV_APP": "false",
                "SMSGATE_UVLOOP": "true" if self.uvloop else "false",
                # Pairs/s is the point of the verify scenario: lift the per-app limit.
                "SMSGATE_VERIFY_PER_MINUTE": "1000000",
                # Throughput is the point of the accept scenarios: lift the per-app rate.
                "SMSGATE_APP_ACCEPT_PER_SECOND": "10000000",
                # The scenarios send one text to each of 1,000 numbers over and over,
                # which the sending policy's per-number caps refuse: lift them too
                # (the policy's one script call per send is measured on its own).
                "SMSGATE_POLICY_SAME_CONTENT_SECONDS": "0",
                "SMSGATE_POLICY_PER_NUMBER_DAY": "0",
            }
        )
        env.update(self.server_env)
        return env

    def _spawn(self, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        binary = shutil.which("smsgate-server", path=str(Path(sys.executable).parent))
        if binary is None:
            raise RuntimeError("smsgate-server is not installed in this environment")
        log = (self.root / log_name).open("wb")
        return subprocess.Popen(
            [binary], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def start_smsgate(self, role: str = "all") -> tuple[str, int]:
        """The smsgate server in ``role`` (``all``: it dispatches too; ``api``:
        start_worker dispatches); the bench app is created on the first start."""
        port = free_port()
        self.grpc_port = port
        env = self._env(port)
        env["SMSGATE_ROLE"] = role
        if not self.token:
            self.token = self.create_app("bench")
        self.smsgate = self._spawn(env, f"server-{role}.log")
        target = f"127.0.0.1:{port}"
        try:
            _wait_serving(target, 30)
        except RuntimeError:
            print((self.root / f"server-{role}.log").read_text()[-2000:], file=sys.stderr)
            raise
        return target, self.smsgate.pid

    def start_worker(self) -> int:
        """A worker-role process on the same Redis and data directory (so the
        same server secret); its pid."""
        port = free_port()
        env = self._env(port)
        env["SMSGATE_ROLE"] = "worker"
        self.worker = self._spawn(env, "server-worker.log")
        try:
            # A worker serves the overall health status only.
            _wait_serving(f"127.0.0.1:{port}", 30)
        except RuntimeError:
            print((self.root / "server-worker.log").read_text()[-2000:], file=sys.stderr)
            raise
        return self.worker.pid

    def create_app(self, name: str) -> str:
        """A new app on the bench Redis (server running or not); its token."""
        created = self.admin("apps", "create", name, "--json")
        return str(json.loads(created)["token"])

    def admin(self, *args: str) -> str:
        """``smsgate-server ARGS`` (an admin command) on the bench Redis; its output."""
        binary = shutil.which("smsgate-server", path=str(Path(sys.executable).parent))
        assert binary is not None
        done = subprocess.run(
            [binary, *args],
            env=self._env(self.grpc_port),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return done.stdout.decode()

    def stop_smsgate(self) -> None:
        """Stop the smsgate server and the worker process, if any."""
        for proc in (self.smsgate, self.worker):
            if proc is not None:
                proc.terminate()
        for proc in (self.smsgate, self.worker):
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.smsgate = self.worker = None

    def stop(self) -> None:
        self.stop_echo()
        self.stop_smsgate()
        self.redis.stop()


# --- running clients -----------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass(slots=True)
class Measured:
    """Client results plus what the harness sampled meanwhile."""

    results: list[ClientResult]
    server_cpu_pct: float
    server_rss_max: int
    redis_cpu_pct: float
    window: float
    worker_cpu_pct: float = 0.0
    # Script runs (EVALSHA/EVAL) Redis counted in the window (with redis_url).
    redis_scripts: int = 0


def run_clients(
    ctx: SpawnContext,
    specs: list[ClientSpec],
    *,
    server_pid: int,
    redis_pid: int | None,
    window: tuple[float, float] | None,
    timeout: float,
    profile_to: Path | None = None,
    worker_pid: int | None = None,
    redis_url: str = "",
) -> Measured:
    """Start one process per spec, start them together, sample the server (and
    a worker-role process beside it) during the measured window
    (``(warmup, duration)``; None = from start to finish)."""
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=run_client, args=(s, ready, go, start, results), daemon=True)
        for s in specs
    ]
    for p in procs:
        p.start()
    try:
        for _ in specs:
            try:
                index, problem = ready.get(timeout=60)
            except queue.Empty:
                raise RuntimeError("a client did not get ready in 60s") from None
            if problem:
                failure = results.get(timeout=30).failure
                raise RuntimeError(f"client {index} failed to set up: {problem}\n{failure}")
        begin = time.monotonic() + 0.2
        start.value = begin
        go.set()
        open_at, close_at = (
            (begin + window[0], begin + window[0] + window[1]) if window else (begin, 0.0)
        )
        time.sleep(max(open_at - time.monotonic(), 0))
        s0 = sample_tree(server_pid)
        r0 = sample_tree(redis_pid) if redis_pid else None
        w0 = sample_tree(worker_pid) if worker_pid else None
        c0 = _scripts_run(redis_url)
        spy = _py_spy(server_pid, window[1], profile_to) if profile_to and window else None
        t0 = time.monotonic()
        rss_max = s0.rss_bytes
        collected: list[ClientResult] = []
        deadline = time.monotonic() + timeout
        s1: TreeSample | None = None
        r1: TreeSample | None = None
        w1: TreeSample | None = None
        c1 = c0
        t1 = 0.0
        while len(collected) < len(specs):
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not finish in time")
            with contextlib.suppress(queue.Empty):
                collected.append(results.get(timeout=0.25))
            now = time.monotonic()
            if s1 is None and (window is None or now < close_at):
                rss_max = max(rss_max, sample_tree(server_pid).rss_bytes)
            if s1 is None and window is not None and now >= close_at:
                s1, t1 = sample_tree(server_pid), now
                r1 = sample_tree(redis_pid) if redis_pid else None
                w1 = sample_tree(worker_pid) if worker_pid else None
                c1 = _scripts_run(redis_url)
        if s1 is None:
            s1, t1 = sample_tree(server_pid), time.monotonic()
            r1 = sample_tree(redis_pid) if redis_pid else None
            w1 = sample_tree(worker_pid) if worker_pid else None
            c1 = _scripts_run(redis_url)
        rss_max = max(rss_max, s1.rss_bytes)
        if spy is not None:
            spy.wait(30)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    failures = [r.failure for r in collected if r.failure]
    if failures:
        raise RuntimeError("a client process failed:\n" + failures[0])
    elapsed = t1 - t0
    return Measured(
        results=collected,
        server_cpu_pct=cpu_percent(s0, s1, elapsed),
        server_rss_max=rss_max,
        redis_cpu_pct=cpu_percent(r0, r1, elapsed) if r0 and r1 else 0.0,
        window=elapsed,
        worker_cpu_pct=cpu_percent(w0, w1, elapsed) if w0 and w1 else 0.0,
        redis_scripts=c1 - c0,
    )


def _scripts_run(url: str) -> int:
    """Script runs (EVALSHA and EVAL) the Redis at ``url`` has counted; 0 without one."""
    if not url:
        return 0
    with redis.Redis.from_url(url) as r:
        stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def _py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample the server with py-spy (if installed) into a collapsed-stack file."""
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        print("py-spy not found; --py-spy ignored", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1))]
    cmd += ["--rate", "250", "--format", "raw", "--nonblocking", "--subprocesses", "-o", str(out)]
    cmd += shlex.split(os.environ.get("BENCH_PY_SPY_ARGS", ""))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fill(row: Row, m: Measured, latencies: list[float], units: int, seconds: float) -> Row:
    latencies.sort()
    errors: dict[str, int] = {}
    for r in m.results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    row.requests = len(latencies)
    row.units = units
    row.rate = units / seconds if seconds > 0 else 0.0
    row.p50_ms = _percentile(latencies, 0.50) * 1000
    row.p90_ms = _percentile(latencies, 0.90) * 1000
    row.p99_ms = _percentile(latencies, 0.99) * 1000
    row.max_ms = (latencies[-1] if latencies else 0.0) * 1000
    row.errors = sum(errors.values())
    row.error_codes = errors
    for r in m.results:
        for code, detail in r.error_details.items():
            row.error_details.setdefault(code, detail)
    row.server_cpu_pct = m.server_cpu_pct
    row.server_rss_mb = m.server_rss_max / 2**20
    row.redis_cpu_pct = m.redis_cpu_pct
    row.worker_cpu_pct = m.worker_cpu_pct
    return row


@dataclass(slots=True)
class Run:
    """Shared state of one benchmark run."""

    ctx: SpawnContext
    profile: Profile
    clients: int
    target: str = ""
    token: str = ""
    server_pid: int = 0
    redis_pid: int | None = None
    py_spy_dir: Path | None = None
    # Set: timed rows count the script runs per unit on this Redis.
    redis_url: str = ""

    def specs(self, scenario: str, concurrency: int, **kw: Any) -> list[ClientSpec]:
        n = min(self.clients, concurrency)
        return [
            ClientSpec(
                scenario=scenario,
                target=self.target,
                token=self.token,
                index=i,
                concurrency=c,
                warmup=self.profile.warmup,
                duration=self.profile.duration,
                **kw,
            )
            for i, c in enumerate(_split(concurrency, n))
        ]

    def timed(
        self,
        scenario: str,
        concurrency: int,
        name: str | None = None,
        *,
        worker_pid: int | None = None,
    ) -> Row:
        specs = self.specs(scenario, concurrency)
        m = run_clients(
            self.ctx,
            specs,
            server_pid=self.server_pid,
            redis_pid=self.redis_pid,
            window=(self.profile.warmup, self.profile.duration),
            timeout=self.profile.warmup + self.profile.duration + 120,
            profile_to=(
                self.py_spy_dir / f"{name or scenario}.txt"
                if self.py_spy_dir and scenario != "echo"
                else None
            ),
            worker_pid=worker_pid,
            redis_url=self.redis_url,
        )
        lat = [x for r in m.results for x in r.latencies]
        units = sum(r.units for r in m.results)
        row = Row(name or scenario, UNITS[scenario], concurrency, len(specs))
        _fill(row, m, lat, units, self.profile.duration)
        if row.rate > 0:
            # CPU per unit: what contention on a shared machine disturbs least.
            row.note = f"server CPU {row.server_cpu_pct * 1e4 / row.rate:.0f} us/{row.unit}"
            if worker_pid:
                row.note += (
                    f"; worker process CPU {row.worker_cpu_pct:.0f}% "
                    f"({row.worker_cpu_pct * 1e4 / row.rate:.0f} us/{row.unit})"
                )
            if m.redis_scripts and row.requests:
                # Over calls, not units: how far concurrent calls shared a script run.
                row.note += (
                    f"; {m.redis_scripts / row.requests:.2f} Redis script runs per call "
                    "(every process's)"
                )
        return row


def settle(server_pid: int, max_wait: float) -> float:
    """Wait until the server is idle (dispatch drained the previous scenario's
    backlog): CPU under 15% over half a second. Returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < max_wait:
        before = sample_tree(server_pid)
        time.sleep(0.5)
        if cpu_percent(before, sample_tree(server_pid), 0.5) < 15:
            break
    return time.monotonic() - began


# --- probes ----------------------------------------------------------------


async def _probe_async(target: str, token: str) -> dict[str, str]:
    """Call each RPC once: '' = built, else why the scenario is skipped."""
    md = (("authorization", f"Bearer {token}"),)
    out: dict[str, str] = {}
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_grpc.SmsServiceStub(ch)
        ver: Any = ver_grpc.VerificationServiceStub(ch)

        async def check(name: str, call: Callable[[], Any]) -> None:
            try:
                await asyncio.wait_for(call(), timeout=10)
                out[name] = ""
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    out[name] = f"UNIMPLEMENTED: {exc.details()}"
                elif exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE):
                    out[name] = f"{exc.code().name}: {exc.details()}"
                else:
                    out[name] = ""  # the RPC exists; it just disliked the probe

        async def first_event() -> None:
            call = sms.WatchStatus(sms_service_pb2.WatchStatusRequest(), metadata=md)
            try:
                await asyncio.wait_for(call.read(), timeout=1.0)
            except TimeoutError:
                pass  # open and quiet: built
            finally:
                call.cancel()

        await check(
            "sendsms",
            lambda: sms.SendSms(
                sms_service_pb2.SendSmsRequest(phone_number=phone(99, 1), text=TEXT), metadata=md
            ),
        )
        await check(
            "getmessage",
            lambda: sms.GetMessage(
                sms_service_pb2.GetMessageRequest(message_id="0" * 26), metadata=md
            ),
        )
        await check("batchsend", lambda: sms.BatchSend(batch_request(99, 999, 1), metadata=md))
        await check("watch", first_event)
        await check(
            "verify",
            lambda: ver.GenerateCode(
                verification_service_pb2.GenerateCodeRequest(
                    phone_number=phone(99, 1, "136"),
                    scope="probe",
                    delivery=verification_service_pb2.CODE_DELIVERY_CALLER,
                ),
                metadata=md,
            ),
        )
    out["e2e"] = out["sendsms"] or out["getmessage"]
    return out


# --- the composite scenarios ---------------------------------------------


async def _poll_delivered(target: str, token: str, ids: list[str], timeout: float) -> float:
    """Wait until every id is DELIVERED (tail first, then a sweep); the time seen."""
    md = (("authorization", f"Bearer {token}"),)
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_grpc.SmsServiceStub(ch)
        sem = asyncio.Semaphore(16)

        async def done(mid: str) -> bool:
            async with sem:
                reply = await sms.GetMessage(
                    sms_service_pb2.GetMessageRequest(message_id=mid), metadata=md
                )
            return bool(reply.message.status == DELIVERED)

        remaining = ids[-64:]
        seen_at = time.monotonic()
        checked_all = False
        while time.monotonic() < deadline:
            flags = await asyncio.gather(*(done(m) for m in remaining))
            remaining = [m for m, ok in zip(remaining, flags, strict=True) if not ok]
            seen_at = time.monotonic()
            if not remaining:
                if checked_all:
                    return seen_at
                remaining, checked_all = list(ids), True
                continue
            await asyncio.sleep(0.02)
    raise RuntimeError(f"{len(remaining)} messages not DELIVERED after {timeout}s")


def run_e2e(run: Run, watch_built: bool, batch: int) -> Row:
    """Accept N messages (by BatchSend when built, so accepting is not what
    limits), and time until every one is DELIVERED."""
    specs = run.specs("e2e", CONCURRENCY["e2e"], mode="count", batch=batch)
    unit = batch or 1
    counts = [k * unit for k in _split(run.profile.e2e_messages // unit, len(specs))]
    n = sum(counts)
    for i, c in enumerate(counts):
        specs[i] = replace(specs[i], count=c)
    if watch_built:
        watcher = ClientSpec(
            scenario="watch",
            target=run.target,
            token=run.token,
            index=len(specs),
            concurrency=1,
            warmup=0,
            duration=120,
            mode="watch-count",
            count=n,
            statuses=(DELIVERED,),
        )
        specs.append(watcher)
    m = run_clients(
        run.ctx, specs, server_pid=run.server_pid, redis_pid=run.redis_pid, window=None, timeout=300
    )
    senders = [r for r in m.results if r.index < len(specs) - (1 if watch_built else 0)]
    begin = min(r.first_start for r in senders)
    accepted_at = max(r.last_end for r in senders)
    ids = [i for r in senders for i in r.ids]
    watched = next((r for r in m.results if r.index == len(specs) - 1), None)
    if watch_built and watched is not None and watched.units >= len(ids):
        done_at = watched.last_end
        how = "WatchStatus" + (
            f", resumed {watched.resumes}x after SUBSCRIBER_TOO_SLOW" if watched.resumes else ""
        )
    else:
        if watched is not None:
            # The watcher fell behind or was cut off: it does not decide.
            m.results.remove(watched)
            how_note = f"; watcher saw {watched.units}, ended by {watched.errors or 'nothing'}"
        else:
            how_note = ""
        done_at = asyncio.run(_poll_delivered(run.target, run.token, ids, 120))
        how = "GetMessage polling" + how_note
    lat = [x for r in senders for x in r.latencies]
    row = Row("e2e", UNITS["e2e"], CONCURRENCY["e2e"], len(senders))
    _fill(row, m, lat, len(ids), done_at - begin)
    row.note = (
        f"{len(ids)} msgs; accepted at {len(ids) / (accepted_at - begin):.0f}/s; "
        f"all delivered after {done_at - begin:.2f}s ({how}); "
        f"latency = {'BatchSend of ' + str(batch) if batch else 'SendSms'}"
    )
    return row


def run_watch(run: Run) -> Row:
    p = run.profile
    subs = p.watch_subscribers
    watchers = run.specs("watch", subs, mode="watch", statuses=(DELIVERED,))
    sender = ClientSpec(
        scenario="sendsms",
        target=run.target,
        token=run.token,
        index=len(watchers),
        concurrency=CONCURRENCY["watch"],
        warmup=p.warmup,
        duration=p.duration,
        rate=p.watch_rate,
    )
    m = run_clients(
        run.ctx,
        [*watchers, sender],
        server_pid=run.server_pid,
        redis_pid=run.redis_pid,
        window=(p.warmup, p.duration),
        timeout=p.warmup + p.duration + 120,
    )
    got = [r for r in m.results if r.index < len(watchers)]
    sent = next(r for r in m.results if r.index == len(watchers))
    lat = [x for r in got for x in r.latencies]
    row = Row("watch", UNITS["watch"], subs, len(watchers))
    _fill(row, m, lat, sum(r.units for r in got), p.duration)
    row.note = (
        f"{subs} subscribers (DELIVERED only), {sent.units / p.duration:.0f} msg/s sent; "
        "latency = event lag (receive - event time)"
    )
    return row


def run_sendsms_api(run: Run, servers: Servers) -> tuple[Row, Row]:
    """SendSms against a server in role ``api`` while a process in role
    ``worker`` (same Redis) dispatches what it accepts: the layout the goal
    names. Then again with the worker stopped (SIGSTOP) for the run, as if it
    had cores of its own: the api process's own ceiling on this machine (what
    it accepted meanwhile waits in Redis and is dispatched after SIGCONT).
    The role-``all`` server is stopped meanwhile and started again after, so
    no third process dispatches or shares the cores."""
    servers.stop_smsgate()
    try:
        target, api_pid = servers.start_smsgate(role="api")
        worker_pid = servers.start_worker()
        split = replace(run, target=target, server_pid=api_pid)
        row = split.timed("sendsms-api", CONCURRENCY["sendsms-api"], worker_pid=worker_pid)
        row.note += "; role api, one worker-role process dispatching"
        os.kill(worker_pid, signal.SIGSTOP)
        try:
            alone = split.timed("sendsms-api", CONCURRENCY["sendsms-api"], "sendsms-api-alone")
        finally:
            os.kill(worker_pid, signal.SIGCONT)
        alone.note += "; role api, its worker process stopped during the run (as if on other cores)"
    finally:
        servers.stop_smsgate()
        run.target, run.server_pid = servers.start_smsgate()
    return row, alone


def run_sendsms_policy(run: Run, servers: Servers) -> Row:
    """SendSms of an app whose sending policy keeps the shipped caps (the run
    lifts them server-wide), to a new number each call: one policy script per
    send, as in production; compare with the sendsms row of the same run."""
    token = servers.create_app("policy")
    key = parse_token(token)
    assert key is not None
    defaults = Settings.model_fields
    servers.admin(
        "apps",
        "set-policy",
        key[0],
        "--same-content-seconds",
        str(defaults["policy_same_content_seconds"].default),
        "--per-number-day",
        str(defaults["policy_per_number_day"].default),
    )
    row = replace(run, token=token).timed("sendsms-policy", CONCURRENCY["sendsms-policy"])
    row.note += (
        f"; app policy: same content {defaults['policy_same_content_seconds'].default} s, "
        f"{defaults['policy_per_number_day'].default} per number a day; a new number per call"
    )
    return row


async def _seed(target: str, token: str, n: int) -> None:
    """Accept ``n`` messages for the app of ``token``, by BatchSend of 10,000."""
    md = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_grpc.SmsServiceStub(ch)
        for k in range(math.ceil(n / 10_000)):
            size = min(10_000, n - k * 10_000)
            await sms.BatchSend(batch_request(98, k, size), metadata=md, timeout=120)


def run_noisy(run: Run, servers: Servers) -> Row:
    """App B's GetMessage p99 idle, then while NOISY_CLIENTS processes of app A
    loop ListMessages (no filter) over NOISY_MESSAGES messages; the ratio."""
    p = run.profile
    noisy_token, neighbour_token = servers.create_app("noisy"), servers.create_app("neighbour")
    asyncio.run(_seed(run.target, noisy_token, NOISY_MESSAGES))
    settle(run.server_pid, 120)

    def spec(scenario: str, token: str, index: int, concurrency: int) -> ClientSpec:
        return ClientSpec(scenario, run.target, token, index, concurrency, p.warmup, p.duration)

    neighbour = spec("getmessage", neighbour_token, 0, CONCURRENCY["noisy"])
    window = (p.warmup, p.duration)
    timeout = p.warmup + p.duration + 120
    kw: dict[str, Any] = {"server_pid": run.server_pid, "redis_pid": run.redis_pid}
    idle = run_clients(run.ctx, [neighbour], window=window, timeout=timeout, **kw)
    noisy = [spec("listmessages", noisy_token, 1 + i, 1) for i in range(NOISY_CLIENTS)]
    loud = run_clients(run.ctx, [neighbour, *noisy], window=window, timeout=timeout, **kw)

    idle_p99 = _percentile(sorted(idle.results[0].latencies), 0.99) * 1000
    got = [r for r in loud.results if r.index == 0]
    lists = [r for r in loud.results if r.index != 0]
    row = Row("noisy", UNITS["noisy"], CONCURRENCY["noisy"], len(got))
    _fill(row, replace(loud, results=got), got[0].latencies, got[0].units, p.duration)
    row.neighbour_p99_ratio = _ratio(row.p99_ms, idle_p99)
    refused: dict[str, int] = {}
    for r in lists:
        for code, count in r.errors.items():
            refused[code] = refused.get(code, 0) + count
    row.note = (
        f"app B GetMessage p99 {idle_p99:.2f} ms idle -> {row.p99_ms:.2f} ms while "
        f"{NOISY_CLIENTS} clients of app A loop ListMessages on {NOISY_MESSAGES:,} messages: "
        f"{row.neighbour_p99_ratio or 0:.2f}x; A's ListMessages "
        f"{sum(r.ops for r in lists) / p.duration:.0f}/s answered, refused {refused or 'none'}"
    )
    return row


# --- footprint ---------------------------------------------------------------

# Key kinds of a shard (``sg:{sgN}:<kind>:...``) measured by the footprint
# scenario; every key of these kinds is summed with MEMORY USAGE.
_SHARD_KEY = re.compile(rb"^sg:\{sg\d+\}:([a-z]+)")


def _by_kind(r: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(bytes, keys) per shard key kind, over every shard key in Redis."""
    size: dict[str, int] = {}
    count: dict[str, int] = {}
    batch: list[tuple[str, bytes]] = []

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        for _, key in batch:
            pipe.memory_usage(key, samples=0)
        for (kind, _), used in zip(batch, pipe.execute(), strict=True):
            size[kind] = size.get(kind, 0) + int(used or 0)
            count[kind] = count.get(kind, 0) + 1
        batch.clear()

    for key in r.scan_iter(match="sg:{sg*", count=5000):
        m = _SHARD_KEY.match(key)
        if m:
            batch.append((m[1].decode(), key))
            if len(batch) >= 2000:
                flush()
    flush()
    return size, count


async def _accept(target: str, token: str, n: int, *, batched: bool) -> list[str]:
    """Accept ``n`` messages for the app of ``token``: BatchSends of 1,000 (4 in
    flight) or SendSms calls (64 in flight). Their ids."""
    md = (("authorization", f"Bearer {token}"),)
    ids: list[str] = []
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_grpc.SmsServiceStub(ch)
        if batched:
            sem = asyncio.Semaphore(CONCURRENCY["footprint"])

            async def batch(k: int) -> None:
                async with sem:
                    size = min(1000, n - k * 1000)
                    reply = await sms.BatchSend(
                        batch_request(97, k, size), metadata=md, timeout=120
                    )
                ids.extend(r.message_id for r in reply.results if r.message_id)

            await asyncio.gather(*(batch(k) for k in range(math.ceil(n / 1000))))
        else:

            async def worker(w: int) -> None:
                for i in range(w, n, 64):
                    request = sms_service_pb2.SendSmsRequest(phone_number=phone(96, i), text=TEXT)
                    for _ in range(100):
                        try:
                            reply = await sms.SendSms(request, metadata=md, timeout=60)
                            break
                        except grpc.aio.AioRpcError as exc:
                            # The accept rate's lease ran short for a moment: as a client does.
                            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                                raise
                            await asyncio.sleep(0.01)
                    ids.append(reply.message.id)

            await asyncio.gather(*(worker(w) for w in range(64)))
    return ids


def _shards(r: redis.Redis) -> int:
    return int(r.get(shard_count_key()) or 0)


def _wait_ended(r: redis.Redis, app: str, timeout: float) -> None:
    """Wait until no message of ``app`` is live (every one reached a terminal
    status: the scripts count them in each shard's ``live:<app>``)."""
    keys = [ShardKeys(i).live(app) for i in range(_shards(r))]
    deadline = time.monotonic() + timeout
    live = -1
    while time.monotonic() < deadline:
        live = sum(int(v or 0) for v in r.mget(keys))
        if live == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{live} messages of the footprint app still live after {timeout}s")


def run_footprint(run: Run, servers: Servers, *, batched: bool) -> Row:
    """Redis bytes per message retained once delivered: INFO used_memory before
    and after accepting N messages and waiting until every one has ended, with
    the bytes of each key kind (MEMORY USAGE) in the note."""
    n = run.profile.footprint_messages if batched else run.profile.footprint_messages // 4
    token = servers.create_app("footprint-batch" if batched else "footprint-single")
    parsed = parse_token(token)
    assert parsed is not None
    r = redis.Redis.from_url(servers.redis.url)
    try:
        settle(run.server_pid, 60)
        size0, count0 = _by_kind(r)
        used0 = int(r.info("memory")["used_memory"])
        began = time.monotonic()
        ids = asyncio.run(_accept(run.target, token, n, batched=batched))
        _wait_ended(r, parsed[0], 300)
        took = time.monotonic() - began
        used1 = int(r.info("memory")["used_memory"])
        size1, count1 = _by_kind(r)
        shards = _shards(r)
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(ShardKeys(shard_of_id(i, shards) or 0).message(parsed[0], i), "st")
        delivered = sum(1 for st in pipe.execute() if st == str(int(DELIVERED)).encode())
    finally:
        r.close()
    after_delivery = (used1 - used0) / len(ids)
    # The provider-id map of a delivered message lasts 10 minutes after its
    # receipt (receipt.lua), not for the message's retention.
    transient = size1.get("pm", 0) - size0.get("pm", 0)
    per = (used1 - used0 - transient) / len(ids)
    name = "footprint-batch" if batched else "footprint-single"
    row = Row(name, UNITS["footprint"], CONCURRENCY["footprint"] if batched else 64, 1)
    row.rate = per
    row.units = len(ids)
    kinds = sorted(
        {k for k in size1 if size1[k] != size0.get(k, 0)},
        key=lambda k: size0.get(k, 0) - size1[k],
    )
    parts = ", ".join(
        f"{k} {(size1[k] - size0.get(k, 0)) / len(ids):.0f}"
        f" ({count1.get(k, 0) - count0.get(k, 0):+d} keys)"
        for k in kinds
    )
    row.note = (
        f"{len(ids)} messages by {'BatchSend of 1,000' if batched else 'SendSms'}, "
        f"{delivered} delivered, all ended after {took:.1f}s; used_memory "
        f"+{(used1 - used0) / 2**20:.1f} MiB = {after_delivery:.0f} bytes per message, "
        f"{per:.0f} retained (without the provider-id map, gone 10 min after the receipt); "
        f"MEMORY USAGE per message by key kind: {parts}"
    )
    return row


# --- growth ------------------------------------------------------------------


def run_growth(run: Run, servers: Servers) -> list[Row]:
    """ListMessages (first page, no filter) of an app holding 10 messages and
    of one holding ``growth_messages``, and the server's RSS with that many
    accepted and not yet dispatched: what each grows with."""
    p = run.profile
    rows: list[Row] = []
    for n in (10, p.growth_messages):
        token = servers.create_app(f"growth-{n}")
        began = time.monotonic()
        asyncio.run(_seed(run.target, token, n))
        seeded = time.monotonic() - began
        backlog_rss = sample_tree(run.server_pid).rss_bytes
        waited = settle(run.server_pid, 600)
        spec = ClientSpec(
            "listmessages", run.target, token, 0, CONCURRENCY["growth"], p.warmup, p.duration
        )
        m = run_clients(
            run.ctx,
            [spec],
            server_pid=run.server_pid,
            redis_pid=run.redis_pid,
            window=(p.warmup, p.duration),
            timeout=p.warmup + p.duration + 120,
            profile_to=run.py_spy_dir / f"list@{n}.txt" if run.py_spy_dir else None,
        )
        row = Row(f"list@{n:,}", UNITS["growth"], CONCURRENCY["growth"], 1)
        _fill(row, m, m.results[0].latencies, m.results[0].units, p.duration)
        row.note = (
            f"ListMessages (page of 50, no filter) of an app holding {n:,} messages; "
            f"seeded by BatchSend of 10,000 in {seeded:.1f}s, server RSS "
            f"{backlog_rss / 2**20:.0f} MB right after (the backlog queued in Redis), "
            f"idle again after {waited:.0f}s"
        )
        rows.append(row)
    return rows


# --- resume ------------------------------------------------------------------


async def _resume(
    target: str, token: str, n: int, r: redis.Redis, app: str, server_pid: int
) -> dict[str, float]:
    """Take a resume token, let ``n`` status events pass (BatchSends, each
    message four events, all ended), then resume: the catch-up's figures."""
    md = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_grpc.SmsServiceStub(ch)
        call = sms.WatchStatus(sms_service_pb2.WatchStatusRequest(), metadata=md)
        await sms.SendSms(
            sms_service_pb2.SendSmsRequest(phone_number=phone(95, 0), text=TEXT), metadata=md
        )
        first = await call.read()
        call.cancel()
        messages = max(1, n // 4)
        await _seed(target, token, messages)
        await asyncio.to_thread(_wait_ended, r, app, 600)
        want = 4 * messages + 3  # the first message's own later events too
        cpu = sample_tree(server_pid).cpu_seconds
        got, began = 0, time.monotonic()
        resumed = sms.WatchStatus(
            sms_service_pb2.WatchStatusRequest(resume_token=first.event.resume_token), metadata=md
        )
        first_at = 0.0
        try:
            async with asyncio.timeout(600):
                while got < want:
                    event = await resumed.read()
                    if event is grpc.aio.EOF:
                        break
                    if not got:
                        first_at = time.monotonic() - began
                    got += 1
        finally:
            resumed.cancel()
        took = time.monotonic() - began
        cpu = sample_tree(server_pid).cpu_seconds - cpu
        return {"events": got, "want": want, "seconds": took, "first": first_at, "cpu": cpu}


def run_resume(run: Run, servers: Servers) -> Row:
    """WatchStatus resumed from a token taken before ``resume_events`` status
    events of its app: how long the catch-up takes and what it costs."""
    n = run.profile.resume_events
    token = servers.create_app("resume")
    parsed = parse_token(token)
    assert parsed is not None
    r = redis.Redis.from_url(servers.redis.url)
    try:
        settle(run.server_pid, 60)
        got = asyncio.run(_resume(run.target, token, n, r, parsed[0], run.server_pid))
        after = sample_tree(run.server_pid)
    finally:
        r.close()
    row = Row("resume", UNITS["resume"], CONCURRENCY["resume"], 1)
    row.units = int(got["events"])
    row.rate = got["events"] / got["seconds"] if got["seconds"] else 0.0
    row.server_rss_mb = after.rss_bytes / 2**20
    row.server_cpu_pct = 100 * got["cpu"] / got["seconds"] if got["seconds"] else 0.0
    row.note = (
        f"resumed over {int(got['want']):,} events of its app (BatchSend of 10,000, all ended): "
        f"{int(got['events']):,} read in {got['seconds']:.1f}s, first after "
        f"{got['first'] * 1000:.0f} ms; server CPU during the catch-up {got['cpu']:.1f}s "
        f"({got['cpu'] * 1e6 / max(1, got['events']):.0f} us per event)"
    )
    return row


# --- output ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), ""
        )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


def _ratio(value: float, base: float) -> float | None:
    return value / base if base > 0 else None


def goals(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """The issue's goals: (goal, measured, met) for each scenario that ran."""
    by = {r.scenario: r for r in rows if not r.skipped}
    out: list[tuple[str, str, bool]] = []
    # The goal's own layout (role api, a worker process apart) when it ran.
    r = by.get("sendsms-api") or by.get("sendsms")
    if r and r.echo_rate_ratio is not None:
        out.append(
            (
                f"SendSms ({'api role' if r.scenario == 'sendsms-api' else 'role all'}) "
                ">= 0.6x echo",
                f"{r.echo_rate_ratio:.2f}x",
                r.echo_rate_ratio >= 0.6,
            )
        )
    if r := by.get("batchsend"):
        out.append(("BatchSend >= 20,000 recipients/s", f"{r.rate:,.0f}", r.rate >= 20_000))
    if r := by.get("e2e"):
        out.append(("end-to-end >= 2,000 delivered/s", f"{r.rate:,.0f}", r.rate >= 2_000))
    r = by.get("verify")
    if r and r.echo_p99_ratio is not None:
        out.append(
            ("code pair p99 <= 2.5x echo p99", f"{r.echo_p99_ratio:.2f}x", r.echo_p99_ratio <= 2.5)
        )
    r = by.get("noisy")
    if r and r.neighbour_p99_ratio is not None:
        out.append(
            (
                "neighbour GetMessage p99 <= 2x idle",
                f"{r.neighbour_p99_ratio:.2f}x",
                r.neighbour_p99_ratio <= 2,
            )
        )
    for name in ("footprint-single", "footprint-batch"):
        if r := by.get(name):
            out.append(
                (f"Redis <= 600 bytes/message ({name[10:]})", f"{r.rate:.0f}", r.rate <= 600)
            )
    smsgate = [
        x for x in rows if not x.skipped and not x.scenario.startswith(("echo", "footprint"))
    ]
    if smsgate:
        rss = max(x.server_rss_mb for x in smsgate)
        out.append(("server RSS <= 150 MB under load", f"{rss:.0f} MB", rss <= 150))
    return out


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'scenario':<18}{'conc':>5} {'rate/s':>10} {'unit':<10}{'x echo':>7}"
        f"{'p50ms':>8}{'p90ms':>8}{'p99ms':>8}{'maxms':>8}{'p99 x':>7}"
        f"{'errors':>7}{'srvCPU%':>8}{'RSS MB':>8}{'redis%':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.skipped:
            print(f"{r.scenario:<18}skipped: {r.skipped}")
            continue

        def fmt(x: float | None) -> str:
            return "" if x is None else f"{x:.2f}"

        print(
            f"{r.scenario:<18}{r.concurrency:>5} {r.rate:>10.0f} {r.unit:<10}"
            f"{fmt(r.echo_rate_ratio):>7}{r.p50_ms:>8.2f}{r.p90_ms:>8.2f}{r.p99_ms:>8.2f}"
            f"{r.max_ms:>8.1f}{fmt(r.echo_p99_ratio):>7}{r.errors:>7}"
            f"{r.server_cpu_pct:>8.0f}{r.server_rss_mb:>8.1f}{r.redis_cpu_pct:>7.0f}"
        )
        if r.note:
            print(f"{'':<18}  {r.note}")
        if r.error_codes:
            print(f"{'':<18}  errors: {r.error_codes}")
        for code, detail in r.error_details.items():
            print(f"{'':<18}  first {code}: {detail}")


# --- main --------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run (< 2 minutes)")
    mode.add_argument("--smoke", action="store_true", help="seconds-long run for tests")
    p.add_argument("--duration", type=float, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, help="warm-up seconds per scenario")
    p.add_argument("--clients", type=int, help="load client processes")
    p.add_argument("--concurrency", type=int, help="override every scenario's concurrency")
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the echo and smsgate servers (sets SMSGATE_UVLOOP)",
    )
    p.add_argument("--processes", type=int, help="smsgate server processes (SMSGATE_PROCESSES)")
    p.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server env"
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record a py-spy profile of the server per scenario into DIR (collapsed stacks)",
    )
    p.add_argument("--label", default="", help="free text stored in the JSON")
    p.add_argument("--out", type=Path, help="JSON path (default bench/out/results-<ts>.json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.duration is not None:
        profile = replace(profile, duration=args.duration)
    if args.warmup is not None:
        profile = replace(profile, warmup=args.warmup)
    if args.scenarios:
        wanted = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
        unknown = set(wanted) - set(ALL)
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        profile = replace(profile, scenarios=wanted)
    concurrency = dict(CONCURRENCY)
    if args.smoke:
        concurrency = {k: min(v, 8) for k, v in concurrency.items()}
    if args.concurrency:
        concurrency = {k: args.concurrency for k in concurrency}
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    if args.processes:
        server_env["SMSGATE_PROCESSES"] = str(args.processes)

    run = Run(mp.get_context("spawn"), profile, args.clients or profile.clients)
    run.py_spy_dir = args.py_spy
    rows: list[Row] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="smsgate-bench-") as tmp:
        servers = Servers(Path(tmp), uvloop=args.loop == "uvloop", server_env=server_env)
        try:
            run.redis_url = servers.start_redis()
            run.redis_pid = None
            # 1. The ceiling, at every concurrency a scenario uses.
            levels = sorted(
                {
                    concurrency[s]
                    for s in profile.scenarios
                    if s not in ("batchsend", "watch", "noisy", "footprint", "growth", "resume")
                },
                reverse=True,
            ) or [concurrency["sendsms"]]
            run.target, run.server_pid = servers.start_echo()
            echo: dict[int, Row] = {}
            for c in levels:
                echo[c] = run.timed("echo", c, name=f"echo@{c}")
                rows.append(echo[c])
                print(f"measured echo@{c}: {echo[c].rate:.0f} req/s", flush=True)
            servers.stop_echo()
            if not args.smoke:
                # The floor of an RPC that makes one Redis round trip, then of
                # one whose concurrent calls share it (SendSms's group commit; only
                # when a SendSms scenario runs).
                sending = any(s.startswith("sendsms") for s in profile.scenarios)
                for grouped in (False, True) if sending else (False,):
                    run.target, run.server_pid = servers.start_echo(via_redis=True, grouped=grouped)
                    run.redis_pid = servers.redis_pid
                    label = "echo+group" if grouped else "echo+redis"
                    row = run.timed("echo", levels[0], name=f"{label}@{levels[0]}")
                    row.echo_rate_ratio = _ratio(row.rate, echo[levels[0]].rate)
                    row.echo_p99_ratio = _ratio(row.p99_ms, echo[levels[0]].p99_ms)
                    rows.append(row)
                    print(f"measured {row.scenario}: {row.rate:.0f} req/s", flush=True)
                    servers.stop_echo()

            # 2. smsgate.
            run.target, run.server_pid = servers.start_smsgate()
            run.token = servers.token
            run.redis_pid = servers.redis_pid
            built = asyncio.run(_probe_async(run.target, run.token))
            for name in profile.scenarios:
                c = concurrency[name]
                # Rows a scenario measures beside its own (ratios vs the same echo).
                extra: list[Row] = []
                if built.get(name):
                    rows.append(Row(name, UNITS[name], c, 0, skipped=built[name]))
                    print(f"skipped {name}: {built[name]}", flush=True)
                    continue
                waited = settle(run.server_pid, 2 * profile.duration + 5)
                if waited > 1:
                    print(f"  (waited {waited:.1f}s for the server to go idle)", flush=True)
                if name == "e2e":
                    batch = 0 if built.get("batchsend") else (1000 if not args.smoke else 50)
                    row = run_e2e(run, watch_built=not built.get("watch"), batch=batch)
                elif name == "watch":
                    row = run_watch(run)
                elif name == "noisy":
                    row = run_noisy(run, servers)
                elif name == "resume":
                    row = run_resume(run, servers)
                elif name == "sendsms-api":
                    row, alone = run_sendsms_api(run, servers)
                    extra.append(alone)
                elif name == "sendsms-policy":
                    row = run_sendsms_policy(run, servers)
                elif name == "growth":
                    *smaller, row = run_growth(run, servers)
                    rows += smaller
                elif name == "footprint":
                    rows.append(run_footprint(run, servers, batched=False))
                    print(f"measured footprint-single: {rows[-1].rate:.0f} bytes/message")
                    row = run_footprint(run, servers, batched=True)
                else:
                    row = run.timed(name, c)
                base = echo.get(c) or echo[levels[0]]
                if name not in ("watch", "noisy", "footprint", "growth", "resume"):  # not one call
                    row.echo_rate_ratio = _ratio(row.rate, base.rate)
                    row.echo_p99_ratio = _ratio(row.p99_ms, base.p99_ms)
                if c not in echo and name not in (
                    "watch",
                    "noisy",
                    "footprint",
                    "growth",
                    "resume",
                ):
                    row.note = (row.note + "; " if row.note else "") + f"ratios vs echo@{levels[0]}"
                rows.append(row)
                print(f"measured {name}: {row.rate:.0f} {row.unit}/s", flush=True)
                for more in extra:
                    more.echo_rate_ratio = _ratio(more.rate, base.rate)
                    more.echo_p99_ratio = _ratio(more.p99_ms, base.p99_ms)
                    rows.append(more)
                    print(f"measured {more.scenario}: {more.rate:.0f} {more.unit}/s", flush=True)
        finally:
            servers.stop()

    print()
    print_table(rows)
    met = goals(rows)
    if met:
        print()
        for goal, value, ok in met:
            print(f"  {'met    ' if ok else 'NOT MET'}  {goal:<36} {value}")
    result = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "label": args.label,
        "profile": asdict(profile),
        "clients": run.clients,
        "loop": args.loop,
        "server_env": server_env,
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
        "goals": [{"goal": g, "measured": v, "met": ok} for g, v, ok in met],
    }
    out = (
        args.out
        or OUT_DIR / f"results-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0
