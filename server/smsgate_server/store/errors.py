"""Redis errors become domain errors here, at the store's edge, and nowhere else.

Like httpx's ``map_httpcore_exceptions``: callers of the store see
``Unavailable`` when Redis cannot be reached or answered too late, never a
``redis`` exception.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from redis import exceptions as redis_errors

from smsgate_server.domain.errors import RateLimited, Reason, SmsgateError, Unavailable
from smsgate_server.logs import RepeatedLog

__all__ = ["keep_cancellation", "map_redis_errors", "redis_edge"]

log = logging.getLogger("smsgate.store")

P = ParamSpec("P")
T = TypeVar("T")

# Redis is down, unreachable, slow, loading its data or a read-only replica
# after a failover; a cluster is down or has a slot no master serves: all
# pass, so the caller should retry.
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.SlotNotCoveredError,
)
# The cluster client's own word for "no node of the cluster answers" (a plain
# RedisClusterException, which otherwise means a bug such as a cross-slot call).
_NO_NODE = "Redis Cluster cannot be connected"
_failures = RepeatedLog(log, "redis unavailable", every=5.0)
_full = RepeatedLog(log, "redis out of memory", every=5.0)
# What a write refused by a full Redis asks the caller to wait.
FULL_RETRY_SECONDS = 5.0
_OOM = "OOM command not allowed"
# redis-py's asyncio connection module (see _closed_while_writing).
_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """Raise ``Unavailable`` for Redis trouble that passes, and ``RateLimited``
    (STORAGE_FULL) for a write Redis refused at its maxmemory (the memory
    watermark of services/admission.py should have refused it first);
    anything else is a bug."""
    try:
        yield
    except Exception as exc:
        mapped = _domain_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _domain_error(exc: Exception) -> SmsgateError | None:
    """What ``map_redis_errors`` raises for ``exc`` (logged); None: ``exc`` itself."""
    if isinstance(exc, _UNAVAILABLE):
        _failures.occurred(error=repr(exc))
        return Unavailable("storage is unavailable; retry")
    if isinstance(exc, redis_errors.RedisClusterException):
        if _NO_NODE not in str(exc):
            return None
        _failures.occurred(error=repr(exc))
        return Unavailable("storage is unavailable; retry")
    if isinstance(exc, (AttributeError, TypeError)):
        if not _closed_while_writing(exc):
            return None
        _failures.occurred(error=repr(exc))
        return Unavailable("storage is unavailable; retry")
    if isinstance(exc, redis_errors.ResponseError):
        # OutOfMemoryError, or the same refusal inside a script (whose first
        # write it stops, so the script wrote nothing).
        if not isinstance(exc, redis_errors.OutOfMemoryError) and _OOM not in str(exc):
            return None
        _full.occurred(error=repr(exc))
        return RateLimited(
            "the server's storage is full; retry later",
            retry_after=FULL_RETRY_SECONDS,
            reason=Reason.STORAGE_FULL,
        )
    return None


def _closed_while_writing(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py writing to a connection another task closed
    meanwhile: redis-py 8.1 lets the transport's AttributeError or TypeError
    through instead of a ConnectionError (redis/redis-py#4287, #3546). Its
    cluster client closes every node's connections itself when it re-reads the
    layout after a failover, so there it happens under load."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(_REDIS_CONNECTION):
            return True
        tb = tb.tb_next
    return False


@contextmanager
def keep_cancellation() -> Iterator[None]:
    """Raise CancelledError when the task was cancelled within the block, however
    the block ended.

    redis-py sends each command through asyncio.wait_for, which on Python 3.11
    returns the result instead of raising when the cancellation lands as the
    command completes (cpython gh-86296). Raised here, the cancellation reaches
    the caller as it should: a WatchStatus call whose client left would
    otherwise wait for events forever, and a stopping task run on."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        yield
    finally:
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError


def redis_edge(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A store coroutine whose Redis errors are mapped by ``map_redis_errors``,
    and whose cancellation is never lost (``keep_cancellation``)."""

    @functools.wraps(method)
    async def mapped(*args: P.args, **kwargs: P.kwargs) -> T:
        # map_redis_errors() around keep_cancellation(), written out: the two
        # generator-based context managers cost a few microseconds on every
        # store call (GetMessage, SendSms), more than the rest of this edge.
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            try:
                return await method(*args, **kwargs)
            finally:
                if task is not None and task.cancelling() > cancels:
                    raise asyncio.CancelledError
        except Exception as exc:
            error = _domain_error(exc)
            if error is None:
                raise
            raise error from exc

    return mapped
