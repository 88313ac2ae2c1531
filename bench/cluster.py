"""``python -m bench.cluster``: smsgate on a 3-master Redis Cluster beside one
Redis server, in the same run, as ratios against the bare echo server; then a
scaling table (accepts/s against the shard count and against the number of
api and worker processes) and a projection of what 10,000 and 100,000
accepted messages a second would need.

Layouts. Every layout runs api and worker processes apart (SMSGATE_ROLE): the
clients call the api processes (spread over them), the workers dispatch.
``standalone`` is one embedded-style redis-server; ``cluster`` is the test
cluster (tests/cluster.py: 3 masters, 3 replicas, AOF), where accepting waits
for a replica (WAIT 1, the default there).

Costs. Each scenario's CPU is counted per process group from before its
clients start until the workers have gone idle again (so a worker's backlog
is paid for): the api processes, the workers, and the Redis masters (INFO
cpu, summed). Divided by the messages accepted, that is the CPU-seconds one
message costs each kind of node, which the projection scales. The machine is
shared and small: every figure is noisy, and clients, servers and Redis
compete for the same cores, so read ratios and per-message costs, not
absolute rates.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import redis
from smsgate_server.store.embedded_redis import EmbeddedRedis

from bench.harness import (
    CONCURRENCY,
    OUT_DIR,
    PROFILES,
    UNITS,
    Row,
    Run,
    _fill,
    _ratio,
    _wait_serving,
    free_port,
    run_clients,
    run_e2e,
    settle,
)
from bench.procstat import sample_tree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import LocalCluster  # noqa: E402 - after the path is set

__all__ = ["main"]

SERVER = shutil.which("smsgate-server", path=str(Path(sys.executable).parent))
# What a process may use of its core, and Redis of its one thread, in the projection.
PROCESS_HEADROOM = 0.7
REDIS_HEADROOM = 0.5
# SMSGATE_SHARDS's limit (two hex digits of a message id).
MAX_SHARDS = 256


@dataclass(slots=True)
class Cost:
    """CPU-seconds per accepted message, by kind of node."""

    api: float = 0.0
    worker: float = 0.0
    redis: float = 0.0
    messages: int = 0


@dataclass(slots=True)
class Result:
    layout: str
    apis: int
    workers: int
    shards: int
    row: Row
    cost: Cost = field(default_factory=Cost)


class Layout:
    """Redis (one server or the cluster) plus api and worker processes."""

    def __init__(self, name: str, root: Path, *, shards: int, apis: int, workers: int) -> None:
        self.name, self.root = name, root
        self.shards, self.apis, self.workers = shards, apis, workers
        self.cluster: LocalCluster | None = None
        self.redis: EmbeddedRedis | None = None
        self.url = ""
        self.api_procs: list[subprocess.Popen[bytes]] = []
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self.targets: list[str] = []
        self.token = ""

    def start(self) -> None:
        if self.name == "cluster":
            self.cluster = LocalCluster(self.root / "cluster")
            self.url = self.cluster.start()
        else:
            self.redis = EmbeddedRedis(self.root / "redis", publish_url=False)
            self.url = self.redis.start()
        self.token = self._create_app()
        secret = os.urandom(16).hex()
        for i in range(self.apis):
            port = free_port()
            self.api_procs.append(self._spawn(f"api-{i}", "api", port, secret))
            self.targets.append(f"127.0.0.1:{port}")
        for i in range(self.workers):
            self.worker_procs.append(self._spawn(f"worker-{i}", "worker", free_port(), secret))
        for target in self.targets:
            _wait_serving(target, 60)
        time.sleep(1.0)  # the workers' leases settle (two renewals)

    def _env(self, data: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGATE_")}
        env.update(
            SMSGATE_REDIS_URL=self.url,
            SMSGATE_DATA_DIR=str(self.root / data),
            SMSGATE_SHARDS=str(self.shards),
            SMSGATE_SIM_LATENCY_MS="0",
            SMSGATE_SIM_RECEIPT_DELAY_MS="0",
            SMSGATE_LOG_LEVEL="WARNING",
            SMSGATE_CREATE_DEV_APP="false",
            SMSGATE_APP_ACCEPT_PER_SECOND="10000000",
            SMSGATE_POLICY_SAME_CONTENT_SECONDS="0",
            SMSGATE_POLICY_PER_NUMBER_DAY="0",
        )
        return env

    def _create_app(self) -> str:
        assert SERVER is not None
        made = subprocess.run(
            [SERVER, "apps", "create", "bench", "--json"],
            env=self._env("admin"),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return str(json.loads(made.stdout)["token"])

    def _spawn(self, name: str, role: str, port: int, secret: str) -> subprocess.Popen[bytes]:
        assert SERVER is not None
        env = self._env(name)
        env.update(
            SMSGATE_ROLE=role,
            SMSGATE_SERVER_SECRET=secret,
            SMSGATE_GRPC_ADDRESS=f"127.0.0.1:{port}",
            SMSGATE_HTTP_ADDRESS=f"127.0.0.1:{free_port()}",
        )
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen([SERVER], env=env, stdout=log, stderr=subprocess.STDOUT)

    def masters(self) -> list[redis.Redis]:
        if self.cluster is not None:
            out = []
            for node in self.cluster.nodes:
                if node.alive and node.info("replication").get("role") == "master":
                    out.append(node.client())
            return out
        return [redis.Redis.from_url(self.url)]

    def redis_cpu(self) -> float:
        """CPU-seconds the masters have used so far."""
        total = 0.0
        for client in self.masters():
            with client:
                info = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def stop(self) -> None:
        for proc in [*self.api_procs, *self.worker_procs]:
            proc.terminate()
        for proc in [*self.api_procs, *self.worker_procs]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.cluster is not None:
            self.cluster.stop()
        if self.redis is not None:
            self.redis.stop()


def _cpu(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    return sum(sample_tree(p.pid).cpu_seconds for p in procs)


@contextmanager
def costed(layout: Layout, cost: Cost) -> Iterator[None]:
    """Count each group's CPU from here until the workers are idle again."""
    a0, w0, r0 = _cpu(layout.api_procs), _cpu(layout.worker_procs), layout.redis_cpu()
    yield
    for proc in layout.worker_procs:
        settle(proc.pid, 60)
    n = max(cost.messages, 1)
    cost.api = (_cpu(layout.api_procs) - a0) / n
    cost.worker = (_cpu(layout.worker_procs) - w0) / n
    cost.redis = (layout.redis_cpu() - r0) / n


def _timed_spread(run: Run, layout: Layout, scenario: str, concurrency: int) -> Row:
    """``run.timed`` with the client processes spread over the api processes."""
    specs = run.specs(scenario, concurrency)
    specs = [
        replace(s, target=layout.targets[i % len(layout.targets)]) for i, s in enumerate(specs)
    ]
    m = run_clients(
        run.ctx,
        specs,
        server_pid=layout.api_procs[0].pid,
        redis_pid=None,
        window=(run.profile.warmup, run.profile.duration),
        timeout=run.profile.warmup + run.profile.duration + 120,
    )
    lat = [x for r in m.results for x in r.latencies]
    units = sum(r.units for r in m.results)
    row = Row(scenario, UNITS[scenario], concurrency, len(specs))
    return _fill(row, m, lat, units, run.profile.duration)


def measure(run: Run, layout: Layout, scenarios: Sequence[str]) -> list[Result]:
    run.token = layout.token
    run.target = layout.targets[0]
    run.server_pid = layout.api_procs[0].pid
    run.redis_pid = None
    out = []
    for scenario in scenarios:
        cost = Cost()
        with costed(layout, cost):
            if scenario == "e2e":
                row = run_e2e(
                    run, watch_built=True, batch=1000 if run.profile.name != "smoke" else 50
                )
                cost.messages = row.units
            else:
                row = _timed_spread(run, layout, scenario, CONCURRENCY[scenario])
                # Accepted over warm-up and window alike, at about the same rate.
                total = run.profile.warmup + run.profile.duration
                cost.messages = int(row.rate * total) if scenario == "sendsms" else 0
        row.scenario = f"{scenario}"
        out.append(Result(layout.name, layout.apis, layout.workers, layout.shards, row, cost))
        print(
            f"  {layout.name:<10} {layout.apis}a+{layout.workers}w {layout.shards:>3} shards "
            f"{scenario:<10} {row.rate:8.0f} {row.unit}/s  p99 {row.p99_ms:6.1f} ms  "
            f"errors {row.errors}",
            flush=True,
        )
    return out


def _echo(run: Run) -> Row:
    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server", str(port), "--uvloop"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert echo.stdout is not None
        if echo.stdout.readline().strip() != b"ready":
            raise RuntimeError("echo server did not start")
        run.target, run.server_pid = f"127.0.0.1:{port}", echo.pid
        return run.timed("echo", CONCURRENCY["sendsms"], name="echo")
    finally:
        echo.terminate()
        echo.wait(10)


def projection(results: list[Result]) -> list[str]:
    """Processes and masters for 10k and 100k accepted messages/s, from the
    measured per-message costs on the cluster: by SendSms (one message a
    call) and by BatchSend of 1,000 (the e2e scenario)."""
    lines = []
    for scenario, how in (("sendsms", "SendSms"), ("e2e", "BatchSend of 1,000")):
        costs = [r.cost for r in results if r.layout == "cluster" and r.row.scenario == scenario]
        if not costs or not costs[0].messages:
            continue
        c = costs[0]
        lines.append(
            f"By {how}, per message (cluster, noisy): api {c.api * 1e6:.0f} µs, worker "
            f"{c.worker * 1e6:.0f} µs, Redis masters {c.redis * 1e6:.0f} µs of CPU "
            "(accepting, dispatch and receipt alike)."
        )
        for rate in (10_000, 100_000):
            apis = math.ceil(rate * c.api / PROCESS_HEADROOM)
            workers = math.ceil(rate * c.worker / PROCESS_HEADROOM)
            masters = math.ceil(rate * c.redis / REDIS_HEADROOM)
            # Shards spread over the masters by hash slot: a few per master evens them out.
            shards = min(MAX_SHARDS, max(64, 4 * masters))
            lines.append(
                f"  {rate:>7,} msg/s: about {apis} api and {workers} worker processes (a core "
                f"each at {PROCESS_HEADROOM:.0%}), {masters} Redis masters at "
                f"{REDIS_HEADROOM:.0%} of their thread (and a replica each, for WAIT), "
                f"{shards} shards"
                + (
                    f" (the most a message id can name: {shards / masters:.1f} per master, "
                    "unevenly spread; past this the id needs a wider shard field)"
                    if shards == MAX_SHARDS and 4 * masters > MAX_SHARDS
                    else ""
                )
            )
    return lines


def _table(results: list[Result], echo: Row) -> None:
    print()
    print(
        f"{'layout':<10} {'procs':<6} {'shards':>6} {'scenario':<10} {'rate/s':>9} "
        f"{'vs echo':>8} {'p99 ms':>8} {'api µs':>7} {'wrk µs':>7} {'redis µs':>8}"
    )
    for r in results:
        ratio = _ratio(r.row.rate, echo.rate) if r.row.scenario != "e2e" else None
        c = r.cost
        per = (
            f"{c.api * 1e6:7.0f} {c.worker * 1e6:7.0f} {c.redis * 1e6:8.0f}"
            if c.messages
            else f"{'':7} {'':7} {'':8}"
        )
        print(
            f"{r.layout:<10} {f'{r.apis}a+{r.workers}w':<6} {r.shards:>6} {r.row.scenario:<10} "
            f"{r.row.rate:9.0f} {(f'{ratio:.2f}' if ratio else '-'):>8} {r.row.p99_ms:8.1f} {per}"
        )
    print(
        f"(echo: {echo.rate:.0f} req/s at {echo.concurrency} in flight, p99 {echo.p99_ms:.1f} ms)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__.split("\n\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--no-scaling", action="store_true", help="layouts only, no scaling table")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/out/cluster-<ts>.json)")
    args = parser.parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    run = Run(mp.get_context("spawn"), profile, profile.clients)
    scenarios = ("sendsms", "getmessage", "e2e") if not args.smoke else ("sendsms",)
    started = time.time()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="smsgate-bench-cluster-") as tmp:
        root = Path(tmp)
        echo = _echo(run)
        print(f"echo: {echo.rate:.0f} req/s", flush=True)
        plans = [("standalone", 64, 1, 1), ("cluster", 64, 1, 1)]
        if not args.no_scaling and not args.smoke:
            plans += [
                ("standalone", 4, 1, 1),
                ("standalone", 16, 1, 1),
                ("cluster", 4, 1, 1),
                ("cluster", 16, 1, 1),
                ("cluster", 64, 2, 1),
                ("cluster", 64, 2, 2),
            ]
        for n, (name, shards, apis, workers) in enumerate(plans):
            layout = Layout(name, root / f"{n}-{name}", shards=shards, apis=apis, workers=workers)
            layout.root.mkdir()
            try:
                layout.start()
                wanted = scenarios if n < 2 else ("sendsms",)
                results += measure(run, layout, wanted)
            finally:
                layout.stop()
    _table(results, echo)
    lines = projection(results)
    if lines:
        print()
        for line in lines:
            print(line)
    out = (
        args.out
        or OUT_DIR / f"cluster-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "profile": asdict(profile),
                "cpus": os.cpu_count(),
                "echo": asdict(echo),
                "results": [
                    {**asdict(r), "row": asdict(r.row), "cost": asdict(r.cost)} for r in results
                ],
                "projection": lines,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
