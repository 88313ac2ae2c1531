"""Lua scripts: loaded once from ``store/lua``, called by SHA.

Each message script gets the statuses and allowed transitions of
``domain.status`` (generated here, so Python and Lua share one table) and
``lib.lua`` in front of it, so the status bookkeeping (hash, history, event)
is written once; the verification-code scripts stand alone.

Scripts are cached per Redis server: a restart empties the cache, and on a
cluster each master has its own, which a replica promoted by a failover never
had. So every call tries EVALSHA and, on NOSCRIPT, sends the source with EVAL
(which caches it on that node for the next EVALSHA); nothing is loaded ahead.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from smsgate_server.domain.country_prefixes import MAX_PREFIX_DIGITS, country_prefixes
from smsgate_server.domain.status import TERMINAL, Status, can_enter
from smsgate_server.store.connection import RedisClient, run_on_key_node
from smsgate_server.store.keys import HELD_BUCKETS

__all__ = [
    "AppScripts",
    "CodeScripts",
    "GuardScripts",
    "LuaScript",
    "PolicyScripts",
    "QuotaScripts",
    "Scripts",
    "SignScripts",
    "TemplateScripts",
    "UsageScripts",
    "country_prelude",
    "status_prelude",
]

# The "from" status of a message being accepted, in the Lua table.
_NEW = 0


def _source(name: str) -> str:
    return (resources.files("smsgate_server.store") / "lua" / f"{name}.lua").read_text()


def _lua_set(values: list[int]) -> str:
    return "{" + ", ".join(f"[{v}] = true" for v in sorted(values)) + "}"


def status_prelude() -> str:
    """Lua locals for every ``Status``, the terminal set and ``ALLOWED[to][from]``
    (``from`` 0: being accepted), from ``domain.status``."""
    names = ", ".join(s.name for s in Status)
    values = ", ".join(str(s.value) for s in Status)
    allowed = ", ".join(
        f"[{to.value}] = "
        + _lua_set([_NEW if f is None else f.value for f in [None, *Status] if can_enter(to, f)])
        for to in Status
    )
    return (
        "-- Generated from domain/status.py by store/scripts.py.\n"
        f"local {names} = {values}\n"
        f"local NEW = {_NEW}\n"
        f"local TERMINAL = {_lua_set([s.value for s in TERMINAL])}\n"
        f"local ALLOWED = {{{allowed}}}\n"
    )


def country_prelude() -> str:
    """Lua ``COUNTRY_PREFIXES`` and ``COUNTRY_PREFIX_DIGITS`` from
    ``domain.country_prefixes``: by first digit d and length n (key d * 10 + n),
    the prefixes with their regions run together ('1204CA1226CA...'), where a
    plain search for an n-digit prefix can only match at a record's start. 25
    short strings rather than a table of 300 prefixes, which a script would
    build again on each call (~6 us of Redis CPU per call that counts usage)."""
    groups: dict[int, list[str]] = {}
    for prefix, region in sorted(country_prefixes().items()):
        groups.setdefault(int(prefix[0]) * 10 + len(prefix), []).append(prefix + region)
    entries = ", ".join(f"[{k}] = '{''.join(items)}'" for k, items in sorted(groups.items()))
    return (
        "-- Generated from domain/country_prefixes.py by store/scripts.py.\n"
        f"local COUNTRY_PREFIX_DIGITS = {MAX_PREFIX_DIGITS}\n"
        f"local COUNTRY_PREFIXES = {{{entries}}}\n"
    )


class LuaScript:
    """One Lua script of one client, called by SHA (EVAL where a node lacks it)."""

    def __init__(self, redis: RedisClient, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[EncodableT] = ()) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.redis.eval(self.source, len(keys), *keys, *args)

    async def run_many(
        self, calls: Sequence[tuple[Sequence[str], Sequence[EncodableT]]]
    ) -> list[Any]:
        """Run the script once per ``(keys, args)`` in one pipeline (one round
        trip); the calls a node answers NOSCRIPT run again with EVAL. A
        cluster client pipelines no scripts: there they run side by side."""
        if not isinstance(self.redis, Redis):
            return list(await asyncio.gather(*(self(keys, args) for keys, args in calls)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            replies = list(await pipe.execute(raise_on_error=False))
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                keys, args = calls[i]
                replies[i] = await self.redis.eval(self.source, len(keys), *keys, *args)
            elif isinstance(reply, Exception):
                raise reply
        return replies

    async def call_confirmed(
        self,
        keys: Sequence[str],
        args: Sequence[EncodableT],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """Run the script, then ``WAIT replicas timeout_ms`` on the same
        connection: (the script's reply, how many replicas have its writes)."""
        tail: list[EncodableT] = [len(keys), *keys, *args]
        wait: list[EncodableT] = ["WAIT", replicas, timeout_ms]
        reply, acked = await run_on_key_node(
            self.redis, keys[0], [["EVALSHA", self.sha, *tail], wait]
        )
        if isinstance(reply, NoScriptError):
            reply, acked = await run_on_key_node(
                self.redis, keys[0], [["EVAL", self.source, *tail], wait]
            )
        for value in (reply, acked):
            if isinstance(value, Exception):
                raise value
        return reply, int(acked)


class Scripts:
    """The scripts of the message store."""

    def __init__(self, redis: RedisClient) -> None:
        lib = (
            status_prelude()
            + country_prelude()
            + f"local HELD_BUCKETS = {HELD_BUCKETS}\n"
            + _source("lib")
        )

        def message_script(name: str) -> LuaScript:
            return LuaScript(redis, lib + "\n" + _source(name))

        self.accept = message_script("accept")
        self.claim = message_script("claim")
        self.settle = message_script("settle")
        self.hand_over = message_script("hand_over")
        self.receipt = message_script("receipt")
        self.promote = message_script("promote")
        self.reconcile = message_script("reconcile")
        self.cancel = message_script("cancel")
        # The app index's reads and prunes (no status moves: no lib.lua).
        self.index_read = LuaScript(redis, _source("index_read"))
        self.index_forget = LuaScript(redis, _source("index_forget"))


class CodeScripts:
    """The verification-code scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.issue = LuaScript(redis, _source("code_issue"))
        self.verify = LuaScript(redis, _source("code_verify"))
        self.rate_window = LuaScript(redis, _source("rate_window"))


class TemplateScripts:
    """The template scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.create = LuaScript(redis, _source("template_create"))
        self.update = LuaScript(redis, _source("template_update"))
        self.delete = LuaScript(redis, _source("template_delete"))


class SignScripts:
    """The sign-name scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.create = LuaScript(redis, _source("sign_create"))
        self.set_default = LuaScript(redis, _source("sign_default"))
        self.delete = LuaScript(redis, _source("sign_delete"))


class AppScripts:
    """The app-record scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.update = LuaScript(redis, _source("app_update"))


class PolicyScripts:
    """The sending-policy scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.take = LuaScript(redis, _source("policy_take"))
        self.refund = LuaScript(redis, _source("policy_refund"))


class QuotaScripts:
    """The per-app quota scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.accept_rate = LuaScript(redis, _source("accept_rate"))


class GuardScripts:
    """The provider breaker and pace scripts of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.breaker_check = LuaScript(redis, _source("breaker_check"))
        self.breaker_record = LuaScript(redis, _source("breaker_record"))
        self.pace = LuaScript(redis, _source("pace"))


class UsageScripts:
    """The usage-config script of one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.configure = LuaScript(redis, _source("usage_config"))
