"""Status events and the resume tokens of WatchStatus."""

from __future__ import annotations

from dataclasses import dataclass

from smsgate_server.domain.status import Status
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer

__all__ = ["NEW_SHARD_START", "StatusEvent", "decode_token", "encode_token", "stream_id_key"]

# The position a resume token gives a shard it predates: the stream's start.
NEW_SHARD_START = "0-0"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One status change, as stored in a shard's event stream (``stream_id``)."""

    shard: int
    stream_id: str
    app: str
    message_id: str
    batch_id: str
    status: Status
    time_ms: int
    detail: str
    error_code: str
    error_reason: str


_U64 = 2**64


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id ``ms-seq`` as a comparable tuple; ValueError when it
    is not one (Redis ids are two unsigned 64-bit numbers)."""
    ms, sep, seq = stream_id.partition("-")
    if not (ms.isascii() and ms.isdigit() and (not sep or (seq.isascii() and seq.isdigit()))):
        raise ValueError("is not a resume token")
    key = int(ms), int(seq or 0)
    if key[0] >= _U64 or key[1] >= _U64:
        raise ValueError("is not a resume token")
    return key


def encode_token(sealer: TokenSealer, app: str, positions: list[str]) -> str:
    """A resume token of ``app``: the last delivered stream id of every shard."""
    return sealer.seal(TokenKind.RESUME, app, ",".join(positions).encode())


def decode_token(sealer: TokenSealer, app: str, token: str, shards: int) -> list[str]:
    """Positions from a resume token issued to ``app``, one per shard of
    ``shards``; ValueError for any other."""
    positions = sealer.open(TokenKind.RESUME, app, token).decode().split(",")
    if len(positions) > shards:
        raise InvalidToken(
            "was issued by a server with more shards: resume on a server started since "
            "SMSGATE_SHARDS grew"
        )
    for p in positions:
        stream_id_key(p)  # raises ValueError when malformed
    # Shards added since the token was issued (SMSGATE_SHARDS grew): its
    # stream delivered none of their events, so it reads them from the start.
    return positions + [NEW_SHARD_START] * (shards - len(positions))
