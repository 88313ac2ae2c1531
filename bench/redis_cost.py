"""``python -m bench.redis_cost``: the client CPU of one Redis script call.

SendSms and GetMessage each make one Redis round trip, and grpc.aio hands the
server one call per event-loop turn, so their groups (store/messages.py) hold
one call: each pays a whole round trip in the client. This measures what that
costs the calling process (``time.process_time`` per call, uvloop, a real
redis-server), for the same EVALSHA (30 arguments, as an accept of one
message) sent three ways:

- ``redis-py``: ``Redis.evalsha`` through a ``BlockingConnectionPool``, as the
  server's store does;
- ``redis-py via a task``: the same, run in a task the caller awaits, as the
  group commit does for a group of one;
- ``bare protocol``: one connection, commands packed and replies parsed by
  hiredis (which redis-py also uses), replies matched to callers in order
  (Redis answers a connection's commands in order): the floor of a client.

Sequential calls (concurrency 1, the way grpc.aio delivers them) and 64 at
once. CPU figures, not rates, are what to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import uvloop
from redis.asyncio import BlockingConnectionPool, Redis
from smsgate_server.store.embedded_redis import EmbeddedRedis

__all__ = ["main"]

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return {ARGV[2], ARGV[3]}"
ARGS = ["a" * 10] * 30


class BareConnection(asyncio.Protocol):
    """One Redis connection: hiredis packs and parses, replies answer callers in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.waiting.popleft().set_result(reply)

    def call(self, *args: Any) -> asyncio.Future[Any]:
        assert self.transport is not None
        answer = asyncio.get_running_loop().create_future()
        self.transport.write(hiredis.pack_command(args))
        self.waiting.append(answer)
        return answer


async def _cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    each = max(calls // concurrency, 1)
    await asyncio.gather(*(worker(max(each // 10, 1)) for _ in range(concurrency)))  # warm-up
    began = time.process_time()
    await asyncio.gather(*(worker(each) for _ in range(concurrency)))
    return (time.process_time() - began) / (each * concurrency) * 1e6


async def _measure(host: str, port: int, calls: int, rounds: int) -> None:
    redis = Redis.from_pool(
        BlockingConnectionPool(host=host, port=port, max_connections=64, timeout=10)
    )
    sha = await redis.script_load(SCRIPT)
    _, bare = await asyncio.get_running_loop().create_connection(BareConnection, host, port)

    async def redis_py() -> Any:
        return await redis.evalsha(sha, 1, "{sg0}k", *ARGS)

    async def redis_py_task() -> Any:
        return await asyncio.get_running_loop().create_task(redis_py())

    async def bare_protocol() -> Any:
        return await bare.call("EVALSHA", sha, 1, "{sg0}k", *ARGS)

    ways = {
        "redis-py": redis_py,
        "redis-py via a task": redis_py_task,
        "bare protocol": bare_protocol,
    }
    assert await bare_protocol() == await redis_py()
    print(f"{'client':<22}{'concurrency':>12}  CPU us per call (rounds)")
    for concurrency in (1, 64):
        figures: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):  # interleaved, so machine noise hits each alike
            for name, way in ways.items():
                figures[name].append(await _cpu_per_call(way, calls, concurrency))
        for name, values in figures.items():
            shown = " / ".join(f"{v:.1f}" for v in values)
            print(f"{name:<22}{concurrency:>12}  {min(values):6.1f} min  ({shown})")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=6000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smsgate-redis-cost-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", publish_url=False)
        url = server.start()
        try:
            host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            uvloop.run(_measure(host, int(port), args.calls, args.rounds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
