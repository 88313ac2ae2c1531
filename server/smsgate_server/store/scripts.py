"""Lua scripts: loaded once from ``store/lua``, called by SHA.

Each message script gets the statuses and allowed transitions of
``domain.status`` (generated here, so Python and Lua share one table) and
``lib.lua`` in front of it, so the status bookkeeping (hash, history, event)
is written once; the verification-code scripts stand alone. redis-py's
``Script`` falls back to EVAL when the server has lost its script cache (after
a Redis restart).
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from smsgate_server.domain.status import TERMINAL, Status, can_enter
from smsgate_server.store.keys import HELD_BUCKETS

__all__ = ["CodeScripts", "QuotaScripts", "Scripts", "TemplateScripts", "status_prelude"]

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


class Scripts:
    """The registered scripts of one Redis client."""

    def __init__(self, redis: Redis) -> None:
        lib = status_prelude() + f"local HELD_BUCKETS = {HELD_BUCKETS}\n" + _source("lib")

        def message_script(name: str) -> AsyncScript:
            return redis.register_script(lib + "\n" + _source(name))

        self.accept = message_script("accept")
        self.claim = message_script("claim")
        self.settle = message_script("settle")
        self.receipt = message_script("receipt")
        self.promote = message_script("promote")
        self.cancel = message_script("cancel")


class CodeScripts:
    """The verification-code scripts of one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.issue = redis.register_script(_source("code_issue"))
        self.verify = redis.register_script(_source("code_verify"))
        self.rate_window = redis.register_script(_source("rate_window"))


class TemplateScripts:
    """The template scripts of one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.create = redis.register_script(_source("template_create"))
        self.update = redis.register_script(_source("template_update"))
        self.delete = redis.register_script(_source("template_delete"))


class QuotaScripts:
    """The per-app quota scripts of one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.accept_rate = redis.register_script(_source("accept_rate"))
