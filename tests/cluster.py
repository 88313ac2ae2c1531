"""A real Redis Cluster on loopback: 3 masters and 3 replicas of the same
``redis-server`` binary the embedded mode uses, AOF on, formed with
``redis-cli --cluster create`` (Redis 6.2 has no CLUSTER ADDSLOTSRANGE).

Used by the test fixtures (``tests/conftest.py``) and by ``scripts/cluster.py``
(``make cluster``) for humans. Every node runs in its own process group and
dies with its parent (PR_SET_PDEATHSIG, through setpriv), so a crashed test
run leaves none behind; ``stop()`` stops them all, and the fixtures call it
whatever happened.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from smsgate_server.store.embedded_redis import find_redis_server

__all__ = ["ClusterError", "ClusterNode", "LocalCluster", "find_redis_cli"]

# Redis Cluster talks node to node on the client port + 10000.
BUS_OFFSET = 10_000


class ClusterError(RuntimeError):
    """The cluster could not be started or did not reach the wanted state."""


def find_redis_cli() -> str:
    """The redis-cli beside the redis-server in use, else one on PATH."""
    beside = Path(find_redis_server()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    raise ClusterError("no redis-cli found beside redis-server or on PATH")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports whose cluster bus port (+10000) is free as well."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + BUS_OFFSET <= 65535 and port not in found and _port_free(port + BUS_OFFSET):
            found.append(port)
    return found


def _dying_with_parent(command: list[str]) -> list[str]:
    """``command`` run so that it dies with this process (PR_SET_PDEATHSIG),
    where util-linux's setpriv can say so. Not a preexec_fn: Python code in a
    child forked while gRPC threads run can crash before it execs (nodes are
    restarted in the middle of tests)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return command
    return [setpriv, "--pdeathsig", "KILL", "--", *command]


@dataclass
class ClusterNode:
    """One redis-server of the cluster."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A fresh client of this node alone (close it)."""
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return dict(client.info(section))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """Starts, inspects and stops a Redis Cluster under ``base_dir``."""

    base_dir: Path
    masters: int = 3
    replicas_per_master: int = 1
    # How long a master may be silent before its replica takes over. Short,
    # so a test's failover completes in seconds.
    node_timeout_ms: int = 2000
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The smsgate URL of the cluster (every node as a seed)."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self, timeout: float = 60.0) -> str:
        """Start the nodes, form the cluster and wait until it is ok and every
        replica is in sync; returns ``url``. On failure nothing is left running."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        count = self.masters * (1 + self.replicas_per_master)
        for port in _free_ports(count):
            node = ClusterNode(port, self.base_dir / f"node-{port}")
            self.nodes.append(node)
            self._spawn(node)
        for node in self.nodes:
            self._wait_answers(node, deadline)
        create = subprocess.run(
            [
                find_redis_cli(),
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=max(deadline - time.monotonic(), 1),
            check=False,
        )
        if create.returncode != 0:
            raise ClusterError(
                "redis-cli --cluster create failed:\n" + create.stdout.decode()[-2000:]
            )
        self.wait_healthy(deadline - time.monotonic())

    def _spawn(self, node: ClusterNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.process = subprocess.Popen(
            _dying_with_parent(
                [
                    find_redis_server(),
                    "--port",
                    str(node.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(node.data_dir.resolve()),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--maxmemory-policy",
                    "noeviction",
                    "--daemonize",
                    "no",
                    "--logfile",
                    "redis.log",
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )

    def _wait_answers(self, node: ClusterNode, deadline: float) -> None:
        client = node.client()
        try:
            while True:
                if not node.alive:
                    raise ClusterError(f"redis-server on {node.address} exited:\n{self._log(node)}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ClusterError(f"redis-server on {node.address} does not answer")
                time.sleep(0.02)
        finally:
            client.close()

    @staticmethod
    def _log(node: ClusterNode) -> str:
        log = node.data_dir / "redis.log"
        return log.read_text()[-1500:] if log.exists() else ""

    def state(self) -> str:
        """What is not yet right, in words; "" once every live node sees the
        cluster ok with all slots served and every replica is in sync."""
        problems = []
        live = [n for n in self.nodes if n.alive]
        for node in live:
            try:
                with node.client() as client:
                    info = client.cluster("info")
                    replication = client.info("replication")
            except redis.RedisError as exc:
                problems.append(f"{node.address}: {exc!r}")
                continue
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                problems.append(
                    f"{node.address}: state {info.get('cluster_state')}, "
                    f"{info.get('cluster_slots_ok')} slots ok"
                )
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
                or replication.get("master_sync_in_progress")
            ):
                link = replication.get("master_link_status")
                problems.append(f"{node.address}: replica link {link}")
        masters = [n for n in live if n.info("replication").get("role") == "master"]
        if len(masters) != self.masters:
            problems.append(f"{len(masters)} masters of {self.masters}")
        return "; ".join(problems)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until ``state()`` finds nothing wrong."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.state()
            if not seen:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not healthy after {timeout:g}s; last saw: {seen}")
            time.sleep(0.1)

    def master_of(self, key: str) -> ClusterNode:
        """The live node that serves ``key``'s slot as master."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                if client.info("replication").get("role") != "master":
                    continue
                slot = int(client.cluster("keyslot", key))
                if self.serves(client, node.port, slot):
                    return node
        raise ClusterError(f"no live master serves {key!r}")

    @staticmethod
    def serves(client: redis.Redis, port: int, slot: int) -> bool:
        for entry in client.cluster("slots"):
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            if start <= slot <= end:
                return int(master[1]) == port
        return False

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The live nodes replicating ``master``."""
        found = []
        for node in self.nodes:
            if node is master or not node.alive:
                continue
            replication = node.info("replication")
            master_port = int(str(replication.get("master_port", 0)))
            if replication.get("role") == "slave" and master_port == master.port:
                found.append(node)
        return found

    def move_slot(self, slot: int, to: ClusterNode) -> ClusterNode:
        """Move ``slot`` and its keys to master ``to`` (what a resharding does,
        one slot); returns the master it came from."""
        source = next(
            n
            for n in self.nodes
            if n.alive and n.info("replication").get("role") == "master"
            and self._serves_node(n, slot)
        )  # fmt: skip
        if source is to:
            return source
        with source.client() as src, to.client() as dst:
            src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
            for node in self.nodes:
                if node.alive and node.info("replication").get("role") == "master":
                    with node.client() as client:
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return source

    def _serves_node(self, node: ClusterNode, slot: int) -> bool:
        with node.client() as client:
            return self.serves(client, node.port, slot)

    @contextlib.contextmanager
    def paused(self, nodes: list[ClusterNode]) -> Iterator[None]:
        """SIGSTOP ``nodes`` for the block (a node too slow to answer), then SIGCONT."""
        for node in nodes:
            assert node.process is not None
            node.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for node in nodes:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node: what a crash or a pulled cable looks like."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def restart(self, node: ClusterNode) -> None:
        """Start a stopped node again; it rejoins from its nodes.conf (as a
        replica, if its replica took over meanwhile)."""
        self._spawn(node)
        self._wait_answers(node, time.monotonic() + 30)

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                if client.info("replication").get("role") == "master":
                    client.flushall()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node (they flush their AOF), SIGKILL any that hangs."""
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            process, node.process = node.process, None
            if process is None:
                continue
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
