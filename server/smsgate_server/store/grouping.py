"""Script calls made in one event-loop moment, sent to Redis as one pipeline.

redis-py spends most of a script call's CPU around the command (taking and
returning a pooled connection, the timeout, packing, parsing) rather than in
it. Calls that arrive together under concurrency (verification codes: a
GenerateCode and a VerifyCode of other callers in the same loop turn) share
one non-transactional pipeline, so that work and the round trip are paid once
per group. Each call still runs its own script with its own keys, so its
atomicity, its slot (on Redis Cluster the pipeline sends each node its share)
and its errors stay its own; a caller waits at most one loop turn for its
group to start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from smsgate_server.store.connection import RedisClient
from smsgate_server.store.scripts import LuaScript

__all__ = ["GroupedScripts"]

# A group takes calls until it holds this many; later ones start the next
# group (one pipeline's reply is parsed in one go, so this bounds the work of
# one loop turn).
GROUP_MAX_CALLS = 256


@dataclass(slots=True)
class _Call:
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[EncodableT]
    answer: asyncio.Future[Any]


class GroupedScripts:
    """Runs script calls of one client; those made in one loop moment share a pipeline."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._waiting: list[_Call] = []
        # The tasks running groups, held so they are not collected mid-run.
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        """``script``'s reply for ``keys`` and ``args``, run with the calls made
        alongside it."""
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        if not self._waiting or len(self._waiting) >= GROUP_MAX_CALLS:
            self._waiting = []
            task = loop.create_task(self._run(self._waiting))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        self._waiting.append(call)
        return await call.answer

    async def _run(self, group: list[_Call]) -> None:
        """Run one group's calls and answer each caller."""
        if self._waiting is group:
            self._waiting = []
        # A caller cancelled before its group started gets no script run, as
        # if it had been cancelled before calling.
        calls = [c for c in group if not c.answer.done()]
        if not calls:
            return
        try:
            if len(calls) == 1:
                # A pipeline of one costs more than the command alone.
                c = calls[0]
                replies: list[Any] = [await c.script(c.keys, c.args)]
            else:
                replies = await self._pipeline(calls)
        except asyncio.CancelledError:
            for c in calls:
                c.answer.cancel()
            raise
        except Exception as exc:
            # The group's round trip failed: each caller raises it (and its
            # store's edge maps it).
            for c in calls:
                if not c.answer.done():
                    c.answer.set_exception(exc)
            return
        for c, reply in zip(calls, replies, strict=True):
            if c.answer.done():
                # Its caller was cancelled while the group ran: the script ran all
                # the same, as when a cancellation lands during a lone call.
                continue
            if isinstance(reply, Exception):
                c.answer.set_exception(reply)
            else:
                c.answer.set_result(reply)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        """The replies (or errors) of ``calls``, sent as one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in calls:
                # As a plain command: redis-py's cluster pipeline refuses its
                # evalsha method, yet routes EVALSHA by its keys like any command.
                pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        # A node without a script (restarted, or a new replica promoted) ran
        # none of it: those calls go again, one by one, by EVAL.
        for i, (c, reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                try:
                    replies[i] = await c.script(c.keys, c.args)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    replies[i] = exc
        return replies
