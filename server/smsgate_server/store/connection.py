"""Redis clients of one process: a bounded pool for commands and a client of
its own for blocking stream reads, on one Redis server or on a Redis Cluster
(``redis_urls.py`` says which URL means which)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.typing import EncodableT

from smsgate_server.domain.errors import Unavailable
from smsgate_server.redis_urls import is_cluster_url, parse_cluster_url
from smsgate_server.store.errors import map_redis_errors

__all__ = [
    "READ_BLOCK_MS",
    "BoundedRedisCluster",
    "RedisClient",
    "RedisConnection",
    "connect",
    "masters_short_of_replicas",
    "redact_url",
    "run_on_key_node",
]

# How long a blocking stream read (XREADGROUP, XREAD) waits for entries.
READ_BLOCK_MS = 1000
# A blocking XREAD longer than the client's socket timeout raises TimeoutError
# (redis/redis-py#3138): the stream readers' timeout exceeds the block time.
READER_SOCKET_TIMEOUT = READ_BLOCK_MS / 1000 + 10
# Blocking reads hold a connection each for up to READ_BLOCK_MS; their number
# is set by the shard count and the readers per shard, not by call load.
READER_MAX_CONNECTIONS = 10_000

# Errors that say a command did not run on the node it was sent to, because
# the slot moved (resharding, failover) or is moving: safe to send again.
_REDIRECTS = (
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)
_REDIRECT_ATTEMPTS = 20

RedisClient: TypeAlias = Redis | RedisCluster
"""What the stores are given: one server's client or a cluster's."""

# Set while a coroutine holds a slot of its cluster client's bound, so the
# client's own nested calls (a pipeline re-sending a redirected command) do
# not wait for a second slot, which could deadlock a full bound.
_holding_slot: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "smsgate_holding_slot", default=False
)


class BoundedRedisCluster(RedisCluster):
    """A cluster client whose calls wait for one of ``max_in_flight`` slots.

    redis-py's cluster nodes raise ``MaxConnectionsError`` past their limit
    instead of waiting (there is no cluster ``BlockingConnectionPool``): a
    burst of calls would fail where the standalone pool makes them queue. A
    call holds at most one connection per node, so the bound also bounds each
    node's connections.
    """

    def __init__(self, *, max_in_flight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs, max_connections=max_in_flight)
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.bounded():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises: no shard hints
        # mypy reads an attribute of redis-py's pipeline base as abstract;
        # redis-py builds its own ClusterPipeline the same way.
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]

    def bounded(self) -> _Slot:
        """Hold one of the client's slots (re-entrant within one call)."""
        return _Slot(self._in_flight)

    def mark_stale(self) -> None:
        """Re-read the cluster's layout before the next command (a node failed)."""
        self._initialize = True


class _Slot:
    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._token: contextvars.Token[bool] | None = None

    async def __aenter__(self) -> None:
        if _holding_slot.get():
            return
        await self._semaphore.acquire()
        self._token = _holding_slot.set(True)

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _holding_slot.reset(self._token)
            self._semaphore.release()


class _BoundedPipeline(ClusterPipeline):
    cluster_client: BoundedRedisCluster

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self.cluster_client.bounded():
            return await super().execute(raise_on_error, allow_redirections)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    if is_cluster_url(url):
        scheme, _, rest = url.partition("://")
        userinfo, at, hosts = rest.rpartition("@")
        if at and ":" in userinfo:
            return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}"
        return url
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """The clients the stores share; ``aclose()`` closes both."""

    client: RedisClient
    # Blocking stream reads go through this one (its timeout exceeds the block
    # time); on a cluster it keeps its own connections to each node.
    reader: RedisClient

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

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


async def masters_short_of_replicas(connection: RedisConnection, wanted: int) -> list[str]:
    """The masters (``host:port``; on one server, "the Redis server") with fewer
    than ``wanted`` replicas connected now; none when Redis refuses INFO."""
    client = connection.client
    with map_redis_errors():
        try:
            if isinstance(client, RedisCluster):
                return [
                    node.name
                    for node in client.get_primaries()
                    if _replicas(await client.info("replication", target_nodes=node)) < wanted
                ]
            info = await client.info("replication")
        except redis_errors.ResponseError:  # INFO refused (ACL): accepting will tell
            return []
    return ["the Redis server"] if _replicas(info) < wanted else []


def _replicas(info: dict[str, Any]) -> int:
    return int(info.get("connected_slaves", 0))


async def connect(url: str, *, pool_size: int) -> RedisConnection:
    """Clients for ``url``, checked with a PING (on a cluster: its layout read);
    ``Unavailable`` when Redis does not answer."""
    if is_cluster_url(url):
        connection = _cluster_connection(url, pool_size=pool_size)
    else:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=10, socket_connect_timeout=5
        )
        connection = RedisConnection(
            # from_pool: the client owns the pool, so aclose() disconnects its connections.
            client=Redis.from_pool(pool),
            reader=Redis.from_url(
                url, socket_timeout=READER_SOCKET_TIMEOUT, socket_connect_timeout=5
            ),
        )
    try:
        async with asyncio.timeout(5):
            if isinstance(connection.client, RedisCluster):
                # Before any script is registered (redis/redis-py#3935).
                await connection.client.initialize()
            if isinstance(connection.reader, RedisCluster):
                await connection.reader.initialize()
            await connection.client.ping()
    except Exception as exc:  # unreachable, refused, wrong password, not a cluster
        await connection.aclose()
        raise Unavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc or type(exc).__name__}"
        ) from None
    return connection


def _cluster_connection(url: str, *, pool_size: int) -> RedisConnection:
    parsed = parse_cluster_url(url)
    common: dict[str, Any] = {
        "startup_nodes": [ClusterNode(host, port) for host, port in parsed.nodes],
        "username": parsed.username,
        "password": parsed.password,
        "ssl": parsed.tls,
        "socket_connect_timeout": 5,
    }
    return RedisConnection(
        # A command to a master that died fails fast on loopback, slowly over a
        # network partition: the socket timeout bounds how long a call waits
        # for a node that no longer answers (then it is re-routed or UNAVAILABLE).
        client=BoundedRedisCluster(max_in_flight=pool_size, socket_timeout=10, **common),
        reader=RedisCluster(
            max_connections=READER_MAX_CONNECTIONS,
            socket_timeout=READER_SOCKET_TIMEOUT,
            **common,
        ),
    )


async def run_on_key_node(
    client: RedisClient, key: str, commands: Sequence[Sequence[EncodableT]]
) -> list[Any]:
    """Send ``commands`` back to back on one connection of the master serving
    ``key``'s slot (on one server: of that server) and return their replies,
    errors as values, for commands that must share a connection (``WAIT``
    waits for the writes of its own connection).

    Every keyed command must be in ``key``'s slot. On a cluster, when the slot
    has moved or is moving (MOVED, ASK, TRYAGAIN, CLUSTERDOWN: nothing ran),
    the commands are sent again to its new master, a bounded number of times.
    A connection error is raised: what ran before it is unknown.
    """
    if isinstance(client, Redis):
        async with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
    if not isinstance(client, BoundedRedisCluster):
        raise TypeError("run_on_key_node needs the BoundedRedisCluster of connect()")
    async with client.bounded():
        for attempt in range(_REDIRECT_ATTEMPTS):
            await client.initialize()  # no-op unless the layout is stale
            node = client.get_node_from_key(key)
            assert node is not None  # a master; get_node_from_key raises when none
            batch = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
            try:
                await node.execute_pipeline(batch)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                client.mark_stale()
                raise
            replies = [command.result for command in batch]
            redirect = next((r for r in replies if isinstance(r, _REDIRECTS)), None)
            if redirect is None:
                return replies
            if isinstance(redirect, redis_errors.MovedError):
                await client.nodes_manager.move_slot(redirect)
            elif isinstance(redirect, redis_errors.ClusterDownError):
                client.mark_stale()
            await asyncio.sleep(min(0.02 * 2**attempt, 0.5))
        return replies
