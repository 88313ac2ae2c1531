"""Lua scripts: loaded once from ``store/lua``, called by SHA.

Each message script gets ``lib.lua`` in front of it, so the status bookkeeping
(hash, history, event) is written once; the verification-code scripts stand
alone. redis-py's ``Script`` falls back to EVAL when the server has lost its
script cache (after a Redis restart).
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["CodeScripts", "Scripts"]


def _source(name: str) -> str:
    return (resources.files("smsgate_server.store") / "lua" / f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client."""

    def __init__(self, redis: Redis) -> None:
        lib = _source("lib")

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
