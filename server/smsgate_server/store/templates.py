"""TemplateStore: an app's templates and every version of each, in Redis.

A template is a head (latest version number, etag, creation time) and one
hash per version (``store.keys.TemplateKeys``), all in the app's slot; create,
update and delete are each one script, so an update checks the etag and adds
the next version atomically.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

from smsgate_server.domain.templates import Template, TemplateKind
from smsgate_server.store.connection import RedisClient
from smsgate_server.store.errors import redis_edge
from smsgate_server.store.keys import TemplateField as F
from smsgate_server.store.keys import TemplateKeys
from smsgate_server.store.scripts import TemplateScripts

__all__ = ["TemplateStore", "WriteOutcome"]


class WriteOutcome(enum.StrEnum):
    """What a template write did."""

    OK = "ok"
    # A retry of a create with the same request id: the first template stands.
    REPLAY = "replay"
    # The request id was used by a create of a different template.
    REUSED = "reused"
    # Create: the id is taken.
    EXISTS = "exists"
    # Update, delete: no such template.
    GONE = "gone"
    # Update, delete: the caller's etag is not the latest version's.
    ETAG = "etag"
    # Update: another update came first since the template was read.
    MOVED = "moved"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(t: Template) -> list[str | int]:
    """A version's hash as field, value pairs (the scripts' ARGV tail)."""
    return [
        F.KIND, int(t.kind), F.BODY, t.body, F.NAME, t.display_name, F.SIGN, t.sign_name,
        F.PROVIDER_IDS, json.dumps(dict(t.provider_template_ids), sort_keys=True),
        F.CREATED, t.create_time_ms, F.UPDATED, t.update_time_ms, F.ETAG, t.etag,
    ]  # fmt: skip


def _template(template_id: str, version: int, h: dict[Any, Any]) -> Template:
    f = {_s(k): _s(v) for k, v in h.items()}
    return Template(
        id=template_id,
        version=version,
        kind=TemplateKind(int(f[F.KIND])),
        body=f[F.BODY],
        display_name=f[F.NAME],
        sign_name=f[F.SIGN],
        provider_template_ids=json.loads(f[F.PROVIDER_IDS]),
        create_time_ms=int(f[F.CREATED]),
        update_time_ms=int(f[F.UPDATED]),
        etag=f[F.ETAG],
    )


class TemplateStore:
    """Creates, reads, versions and deletes the templates of each app."""

    def __init__(self, redis: RedisClient, *, idempotency_ttl_seconds: int) -> None:
        self.redis = redis
        self.scripts = TemplateScripts(redis)
        self.idempotency_ttl_seconds = idempotency_ttl_seconds

    @redis_edge
    async def create(
        self, app: str, template: Template, *, request_id: str = "", fingerprint: str = ""
    ) -> tuple[WriteOutcome, str]:
        """Store ``template`` as version 1; the outcome and the id that stands
        (on REPLAY, the id the first request created)."""
        k = TemplateKeys(app)
        keys = [k.head(template.id), k.version(template.id, 1), k.index]
        if request_id:
            keys.append(k.idempotency(request_id))
        reply = await self.scripts.create(
            keys=keys,
            args=[
                template.id,
                template.etag,
                fingerprint if request_id else "",
                self.idempotency_ttl_seconds,
                template.create_time_ms,
                *_fields(template),
            ],
        )
        outcome = WriteOutcome(_s(reply[0]))
        return outcome, _s(reply[1]) if len(reply) > 1 else template.id

    @redis_edge
    async def get(self, app: str, template_id: str, version: int = 0) -> Template | None:
        """Version ``version`` of a template (0: the latest), or None."""
        k = TemplateKeys(app)
        if version == 0:
            latest = await self.redis.hget(k.head(template_id), F.VERSION)
            if latest is None:
                return None
            version = int(latest)
        h = await self.redis.hgetall(k.version(template_id, version))
        return _template(template_id, version, h) if h else None

    @redis_edge
    async def ids_after(self, app: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` template ids greater than ``after`` ('' = from the first)."""
        low = f"({after}" if after else "-"
        ids = await self.redis.zrangebylex(TemplateKeys(app).index, low, "+", start=0, num=limit)
        return [_s(i) for i in ids]

    @redis_edge
    async def latest(self, app: str, ids: Sequence[str]) -> list[Template]:
        """The latest version of each template of ``ids`` that exists, in order."""
        k = TemplateKeys(app)
        async with self.redis.pipeline(transaction=False) as pipe:
            for template_id in ids:
                pipe.hget(k.head(template_id), F.VERSION)
            versions = await pipe.execute()
        found = [(i, int(v)) for i, v in zip(ids, versions, strict=True) if v is not None]
        async with self.redis.pipeline(transaction=False) as pipe:
            for template_id, version in found:
                pipe.hgetall(k.version(template_id, version))
            hashes = await pipe.execute()
        return [_template(i, v, h) for (i, v), h in zip(found, hashes, strict=True) if h]

    @redis_edge
    async def add_version(
        self, app: str, template: Template, *, expected_etag: str
    ) -> WriteOutcome:
        """Store ``template`` as the version after ``template.version - 1`` if
        that still is the latest and, when given, has ``expected_etag``."""
        k = TemplateKeys(app)
        reply = await self.scripts.update(
            keys=[k.head(template.id), k.version(template.id, template.version)],
            args=[template.version - 1, expected_etag, template.etag, *_fields(template)],
        )
        return WriteOutcome(_s(reply))

    @redis_edge
    async def delete(self, app: str, template_id: str, *, expected_etag: str) -> WriteOutcome:
        """Delete a template and its versions when it has ``expected_etag`` ('' = any)."""
        k = TemplateKeys(app)
        reply = await self.scripts.delete(
            keys=[k.head(template_id), k.index],
            args=[template_id, expected_etag, k.head(template_id) + ":"],
        )
        return WriteOutcome(_s(reply))
