"""Message and batch ids: time-ordered, and carrying the Redis shard they live in."""

from __future__ import annotations

import re
import secrets

__all__ = ["new_batch_id", "new_message_id", "shard_for_key", "shard_of_id"]

# 12 hex digits of milliseconds, 2 of shard, 12 random: sortable by creation time.
_ID = re.compile(r"^[0-9a-f]{12}([0-9a-f]{2})[0-9a-f]{12}$")


def new_message_id(now_ms: int, shard: int) -> str:
    """A new id for a message stored in ``shard``."""
    return f"{now_ms:012x}{shard:02x}{secrets.token_hex(6)}"


def new_batch_id(now_ms: int, shard: int) -> str:
    """A new batch id; same shape as message ids."""
    return new_message_id(now_ms, shard)


def shard_of_id(any_id: str, shards: int) -> int | None:
    """The shard encoded in an id, or None for a malformed or foreign id."""
    match = _ID.match(any_id)
    if match is None:
        return None
    shard = int(match.group(1), 16)
    return shard if shard < shards else None


def shard_for_key(value: str, shards: int) -> int:
    """A stable shard for any string (request ids, so that retries meet);
    the same in every process, unlike ``hash()``."""
    # FNV-1a.
    h = 0x811C9DC5
    for byte in value.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % shards
