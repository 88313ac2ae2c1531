"""TemplateService: an app's templates (create, read, list, version, delete)
and previews of what a template sends.

Every update writes a new version through ``TemplateStore``'s etag-checked
script; earlier versions stay readable until the template is deleted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from smsgate_server.domain.encoding import Split, split
from smsgate_server.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from smsgate_server.domain.phone import is_region, region_of
from smsgate_server.domain.templates import (
    Body,
    Template,
    check_display_name,
    check_kind,
    check_provider_template_ids,
    check_sign_name,
    check_template_id,
    parse_body,
    render,
    sign_in_text,
    with_sign,
)
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer
from smsgate_server.domain.validation import check_phone, check_request_id
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore, WriteOutcome

__all__ = [
    "UPDATABLE_FIELDS",
    "Preview",
    "RenderCommand",
    "TemplateDraft",
    "TemplateService",
]

UPDATABLE_FIELDS = frozenset({"display_name", "kind", "body", "sign_name", "provider_template_ids"})
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# An update without an etag retries when another update lands between its read
# and its write; each retry means someone else's write succeeded.
_UPDATE_ATTEMPTS = 10
# Binds page tokens to this list, so a ListMessages token never opens here.
_PAGE_CONTEXT = b"templates"


@dataclass(frozen=True, slots=True)
class TemplateDraft:
    """The fields a caller sets on a template, unchecked (``kind`` as sent)."""

    id: str = ""
    display_name: str = ""
    kind: int = 0
    body: str = ""
    sign_name: str = ""
    provider_template_ids: Mapping[str, str] = field(default_factory=dict)
    etag: str = ""


@dataclass(frozen=True, slots=True)
class RenderCommand:
    """A preview: a stored template (``template_id``, ``version``) or an inline
    ``body`` checked as ``kind`` (0: no kind rule), with params, sign and destination."""

    template_id: str = ""
    version: int = 0
    body: str | None = None
    kind: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    sign_name: str = ""
    phone: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class Preview:
    """What a render sends: the text split into segments, and the sender id
    (the sign, outside China)."""

    split: Split
    sender_id: str
    template_version: int

    @property
    def text(self) -> str:
        return "".join(self.split.parts)


def _not_found(template_id: str, version: int = 0) -> NotFound:
    which = f"version {version} of template" if version else "template"
    return NotFound(f"{which} {template_id!r} does not exist", reason=Reason.TEMPLATE_NOT_FOUND)


def _etag_mismatch(template_id: str) -> Aborted:
    return Aborted(
        f"template {template_id!r} has changed since that etag; read it again and retry",
        reason=Reason.ETAG_MISMATCH,
    )


class TemplateService:
    """The template use cases of every app."""

    def __init__(
        self,
        store: TemplateStore,
        tokens: TokenSealer,
        *,
        clock: Callable[[], float] = time.time,
        messages: MessageStore | None = None,
        signs: SignStore | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.clock = clock
        # Counts the messages that still need a template (None: no delete guard).
        self.messages = messages
        # The app's default sign, which a preview falls back to as a send does.
        self.signs = signs

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def create(self, app: str, draft: TemplateDraft, *, request_id: str = "") -> Template:
        """A new template at version 1; a retry with ``request_id`` returns the first."""
        check_request_id(request_id)
        template_id = (
            check_template_id(draft.id, "template.id")
            if draft.id
            else f"tpl_{secrets.token_hex(8)}"
        )
        now = self._now_ms()
        template = _checked(draft, template_id, version=1, create_time_ms=now, update_time_ms=now)
        outcome, stored_id = await self.store.create(
            app, template, request_id=request_id, fingerprint=_fingerprint(draft)
        )
        if outcome is WriteOutcome.EXISTS:
            raise AlreadyExists(
                f"template {template_id!r} already exists",
                reason=Reason.TEMPLATE_ALREADY_EXISTS,
            )
        if outcome is WriteOutcome.REUSED:
            raise AlreadyExists(
                f"request_id {request_id!r} was used for a different template",
                reason=Reason.REQUEST_ID_REUSED,
            )
        if outcome is WriteOutcome.REPLAY:
            first = await self.store.get(app, stored_id, 1)
            if first is None:
                raise _not_found(stored_id)
            return first
        return template

    async def get(self, app: str, template_id: str, version: int = 0) -> Template:
        """Version ``version`` of a template (0: the latest)."""
        check_template_id(template_id)
        if version < 0:
            raise InvalidArgument.field("version", "must be 0 (the latest) or a version number")
        template = await self.store.get(app, template_id, version)
        if template is None:
            raise _not_found(template_id, version)
        return template

    async def page(self, app: str, page_size: int, page_token: str) -> tuple[list[Template], str]:
        """A page of the app's templates by id, and the next page token ('' at the end)."""
        if page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        # Above the maximum is lowered to it (AIP-158), as ListMessages does.
        size = min(page_size, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        after = self._open_page_token(app, page_token) if page_token else ""
        # One id more than the page tells whether another page follows.
        ids = await self.store.ids_after(app, after, size + 1)
        templates = await self.store.latest(app, ids[:size])
        if len(ids) <= size:
            return templates, ""
        return templates, self.tokens.seal(
            TokenKind.PAGE, app, ids[size - 1].encode(), context=_PAGE_CONTEXT
        )

    def _open_page_token(self, app: str, token: str) -> str:
        try:
            return self.tokens.open(TokenKind.PAGE, app, token, context=_PAGE_CONTEXT).decode()
        except InvalidToken:
            raise InvalidArgument.field(
                "page_token",
                "is not a token of an earlier ListTemplates call",
                reason=Reason.INVALID_PAGE_TOKEN,
            ) from None

    async def update(self, app: str, draft: TemplateDraft, mask: list[str]) -> Template:
        """The next version of ``draft.id``: the latest with the fields of ``mask``
        taken from ``draft``; ABORTED when ``draft.etag`` is given and stale."""
        check_template_id(draft.id, "template.id")
        paths = _checked_mask(mask)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self.store.get(app, draft.id)
            if current is None:
                raise _not_found(draft.id)
            merged = replace(_draft_of(current), **{name: getattr(draft, name) for name in paths})
            template = _checked(
                merged,
                draft.id,
                version=current.version + 1,
                create_time_ms=current.create_time_ms,
                update_time_ms=max(self._now_ms(), current.update_time_ms),
            )
            outcome = await self.store.add_version(app, template, expected_etag=draft.etag)
            if outcome is WriteOutcome.OK:
                return template
            if outcome is WriteOutcome.GONE:
                raise _not_found(draft.id)
            if outcome is WriteOutcome.ETAG:
                raise _etag_mismatch(draft.id)
        raise Aborted(
            f"template {draft.id!r} kept changing while it was updated; retry",
            reason=Reason.CONCURRENT_UPDATE,
        )

    async def delete(self, app: str, template_id: str, *, etag: str = "") -> None:
        """Delete a template and all its versions (when given, only at ``etag``);
        FAILED_PRECONDITION while messages not yet with a provider use it."""
        check_template_id(template_id)
        # Counted by the message scripts, per shard. A send that read the
        # template just before this check may still be accepted after the
        # delete: its message carries its rendered text, params and vendor
        # template ids, so it is sent all the same.
        uses = await self.messages.template_uses(app, template_id) if self.messages else 0
        if uses:
            raise FailedPrecondition(
                f"{uses} scheduled or queued message{'s' if uses != 1 else ''} still use "
                f"template {template_id!r}; cancel them or wait until they are sent",
                reason=Reason.TEMPLATE_IN_USE,
            )
        outcome = await self.store.delete(app, template_id, expected_etag=etag)
        if outcome is WriteOutcome.GONE:
            raise _not_found(template_id)
        if outcome is WriteOutcome.ETAG:
            raise _etag_mismatch(template_id)

    async def render(self, app: str, command: RenderCommand) -> Preview:
        """The text ``command`` would send, as the network will split it."""
        template: Template | None = None
        if command.body is not None:
            body = parse_body(command.body, "body")
            if command.kind:
                check_kind(command.kind, body)
        else:
            if command.version < 0:
                raise InvalidArgument.field(
                    "template_version", "must be 0 (the latest) or a version number"
                )
            template = await self.get(app, command.template_id, command.version)
            body = parse_body(template.body)
        sign = check_sign_name(command.sign_name) or (template.sign_name if template else "")
        if not sign and self.signs is not None:
            _, sign = await self.signs.lookup(app, "")
        region = _region(command)
        text = with_sign(render(body, command.params), sign, region)
        return Preview(
            split=split(text),
            sender_id="" if sign_in_text(region) else sign,
            template_version=template.version if template else 0,
        )


def _region(command: RenderCommand) -> str:
    if command.phone:
        return region_of(check_phone(command.phone, "phone_number"))
    if command.region:
        region = command.region.upper()
        if not is_region(region):
            raise InvalidArgument.field(
                "region_code", "must be an ISO 3166-1 alpha-2 region code such as CN or US"
            )
        return region
    return ""


def _draft_of(t: Template) -> TemplateDraft:
    return TemplateDraft(
        id=t.id,
        display_name=t.display_name,
        kind=t.kind,
        body=t.body,
        sign_name=t.sign_name,
        provider_template_ids=t.provider_template_ids,
    )


def _checked_mask(mask: list[str]) -> set[str]:
    if not mask:
        raise InvalidArgument.field(
            "update_mask", f"is required: name the fields to change ({_fields_list()})"
        )
    if mask == ["*"]:
        return set(UPDATABLE_FIELDS)
    unknown = [p for p in mask if p not in UPDATABLE_FIELDS]
    if unknown:
        raise InvalidArgument.field(
            "update_mask",
            f"cannot change {', '.join(repr(p[:64]) for p in unknown[:5])}; "
            f"updatable fields are {_fields_list()}",
        )
    return set(mask)


def _fields_list() -> str:
    return ", ".join(sorted(UPDATABLE_FIELDS))


def _checked(
    draft: TemplateDraft,
    template_id: str,
    *,
    version: int,
    create_time_ms: int,
    update_time_ms: int,
) -> Template:
    """``draft`` checked field by field (errors name ``template.<field>``)."""
    body: Body = parse_body(draft.body, "template.body")
    return Template(
        id=template_id,
        version=version,
        kind=check_kind(draft.kind, body, kind_field="template.kind", body_field="template.body"),
        body=draft.body,
        display_name=check_display_name(draft.display_name, "template.display_name"),
        sign_name=check_sign_name(draft.sign_name, "template.sign_name"),
        provider_template_ids=check_provider_template_ids(
            draft.provider_template_ids, "template.provider_template_ids"
        ),
        create_time_ms=create_time_ms,
        update_time_ms=update_time_ms,
        etag=secrets.token_urlsafe(12),
    )


def _fingerprint(draft: TemplateDraft) -> str:
    """What a create request asked for, to tell a retry from a reuse of its request id."""
    fields = [
        draft.id, draft.display_name, draft.kind, draft.body, draft.sign_name,
        sorted(draft.provider_template_ids.items()),
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]
