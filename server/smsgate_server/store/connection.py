"""Redis clients of one process: a bounded pool for commands and a client of
its own for blocking stream reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis

from smsgate_server.domain.errors import Unavailable
from smsgate_server.store.errors import map_redis_errors

__all__ = ["READ_BLOCK_MS", "RedisConnection", "connect", "redact_url"]

# How long a blocking stream read (XREADGROUP, XREAD) waits for entries.
READ_BLOCK_MS = 1000


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """The clients the stores share; ``aclose()`` closes both."""

    client: Redis
    # A blocking XREAD longer than the socket timeout raises TimeoutError
    # (redis/redis-py#3138): stream readers get a client whose timeout exceeds it.
    reader: Redis

    async def healthy(self) -> bool:
        """Whether Redis answers a PING within two seconds."""
        try:
            async with asyncio.timeout(2):
                with map_redis_errors():
                    return bool(await self.client.ping())
        except (Unavailable, TimeoutError):
            return False

    async def aclose(self) -> None:
        await self.reader.aclose()
        await self.client.aclose()


async def connect(url: str, *, pool_size: int) -> RedisConnection:
    """Clients for ``url``, checked with a PING; ``Unavailable`` when Redis does not answer."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=10, socket_connect_timeout=5
    )
    connection = RedisConnection(
        # from_pool: the client owns the pool, so aclose() disconnects its connections.
        client=Redis.from_pool(pool),
        reader=Redis.from_url(
            url, socket_timeout=READ_BLOCK_MS / 1000 + 10, socket_connect_timeout=5
        ),
    )
    try:
        async with asyncio.timeout(5):
            await connection.client.ping()
    except Exception as exc:  # unreachable, refused, wrong password, wrong database
        await connection.aclose()
        raise Unavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc or type(exc).__name__}"
        ) from None
    return connection
