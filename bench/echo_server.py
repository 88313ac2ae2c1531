"""The ceiling: a bare ``grpc.aio`` unary echo service, run as its own process.

``python -m bench.echo_server PORT [--uvloop]`` serves ``/bench.Echo/Echo``,
which returns the request bytes unchanged: no (de)serialisation, no
interceptor, no I/O. Every smsgate figure is compared with this one.

With ``--redis URL`` each call first runs one tiny Lua script (EVALSHA) on
Redis through redis.asyncio: the floor of any RPC that makes one round trip,
shown as the ``echo+redis`` row. With ``--group`` as well, the calls made in
one event-loop moment share that script run, one group per shard of four, as
smsgate's accept calls do (store/messages.py): the ``echo+group`` row, the
ceiling of SendSms's Redis work.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from redis.asyncio import BlockingConnectionPool, Redis

__all__ = ["ECHO_METHOD", "main"]

ECHO_METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _echo_via_redis(url: str) -> Callable[..., Awaitable[bytes]]:
    pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
    script = Redis(connection_pool=pool).register_script(
        "redis.call('SET', KEYS[1], ARGV[1]) return 1"
    )

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await script(keys=["{bench}echo"], args=[request])
        return request

    return echo


# Shards of the grouped echo: smsgate's default on one Redis server.
GROUP_SHARDS = 4


def _echo_via_group(url: str) -> Callable[..., Awaitable[bytes]]:
    pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
    script = Redis(connection_pool=pool).register_script(
        "for i = 1, #ARGV do redis.call('SET', KEYS[1], ARGV[i]) end return #ARGV"
    )
    waiting: dict[int, list[tuple[bytes, asyncio.Future[None]]]] = {}
    running: set[asyncio.Task[None]] = set()

    async def commit(shard: int) -> None:
        group = waiting.pop(shard)
        try:
            await script(keys=[f"{{bench{shard}}}echo"], args=[r for r, _ in group])
        except Exception as exc:
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for _, answer in group:
            if not answer.done():
                answer.set_result(None)

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        loop = asyncio.get_running_loop()
        shard = random.randrange(GROUP_SHARDS)
        group = waiting.get(shard)
        if group is None:
            group = waiting[shard] = []
            # Runs on the next loop turn, with every call that joined by then.
            task = loop.create_task(commit(shard))
            running.add(task)
            task.add_done_callback(running.discard)
        answer: asyncio.Future[None] = loop.create_future()
        group.append((request, answer))
        await answer
        return request

    return echo


async def _serve(port: int, redis_url: str | None, *, group: bool = False) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if redis_url:
        behaviour = _echo_via_group(redis_url) if group else _echo_via_redis(redis_url)
    else:
        behaviour = _echo
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(behaviour)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server")
    parser.add_argument("port", type=int)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--redis", metavar="URL", help="one EVALSHA on this Redis per call")
    parser.add_argument(
        "--group", action="store_true", help="with --redis: one EVALSHA per shard and loop turn"
    )
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(args.port, args.redis, group=args.group))
    else:
        asyncio.run(_serve(args.port, args.redis, group=args.group))


if __name__ == "__main__":
    main()
