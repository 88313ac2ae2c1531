"""Composing messages from templates: the template version, the sign, and per
recipient the text the handset shows, as the vendor will bill it.

A send by template reads the template (the version asked for, else the
latest) and checks its sign once; each recipient then gets its own text,
because where the sign goes depends on the recipient's country: in China the
text reads ``【sign】body`` and the sign counts toward length and segments,
elsewhere the sign is the sender id and the text is the body alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from smsgate_server.domain.encoding import Encoding, measure
from smsgate_server.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from smsgate_server.domain.phone import region_of
from smsgate_server.domain.templates import (
    Body,
    Template,
    check_sign_name,
    parse_body,
    render,
    sign_in_text,
    with_sign,
)
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore

__all__ = ["Composed", "Composer", "PreparedTemplate", "TemplateRef"]


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """Template content of a send: the template, its version (0: latest), the
    shared params and the sign name ('' for the template's or app's default)."""

    template_id: str
    version: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    sign_name: str = ""


@dataclass(frozen=True, slots=True)
class Composed:
    """One recipient's message: the text the handset shows, how it is billed,
    the sender id, and the params in the template's placeholder order (JSON),
    as vendors that take numbered params need them."""

    rendered: str
    encoding: Encoding
    segments: int
    sender: str
    params_json: str


@dataclass(frozen=True, slots=True)
class PreparedTemplate:
    """A template version with its sign resolved and registered."""

    template: Template
    body: Body
    sign: str

    @property
    def vendor_ids_json(self) -> str:
        """The vendor template id per provider, as stored on each message."""
        ids = self.template.provider_template_ids
        return json.dumps(dict(ids), sort_keys=True) if ids else ""

    def compose(
        self,
        phone: str,
        params: Mapping[str, str],
        *,
        max_segments: int,
        sender: str = "",
        params_field: str = "template.params",
    ) -> Composed:
        """The message to ``phone`` (E.164) rendered with ``params``; InvalidArgument
        naming each bad param, or the template when the text is too long."""
        region = region_of(phone)
        text = with_sign(render(self.body, params, params_field), self.sign, region)
        metrics = measure(text)
        if metrics.segments > max_segments:
            raise InvalidArgument.field(
                "template",
                f"renders to {metrics.segments} SMS segments ({metrics.characters} "
                f"{metrics.encoding.name} characters); at most {max_segments} are allowed",
                reason=Reason.CONTENT_TOO_LONG,
            )
        return Composed(
            rendered=text,
            encoding=metrics.encoding,
            segments=metrics.segments,
            # A sender id given with the send wins; in China the sign is in the text.
            sender=sender or ("" if sign_in_text(region) else self.sign),
            params_json=json.dumps({name: params[name] for name in self.body.variables}),
        )


class Composer:
    """Reads templates and sign names for the send paths."""

    def __init__(self, templates: TemplateStore, signs: SignStore) -> None:
        self.templates = templates
        self.signs = signs

    async def prepare(self, app: str, ref: TemplateRef) -> PreparedTemplate:
        """The template version ``ref`` names and its sign: ``ref.sign_name``, else
        the template's default, else the app's. NOT_FOUND for no such template or
        version; FAILED_PRECONDITION when the sign is not registered."""
        template = await self.templates.get(app, ref.template_id, ref.version)
        if template is None:
            which = f"version {ref.version} of template" if ref.version else "template"
            raise NotFound(
                f"{which} {ref.template_id!r} does not exist", reason=Reason.TEMPLATE_NOT_FOUND
            )
        wanted = check_sign_name(ref.sign_name, "template.sign_name") or template.sign_name
        registered, default = await self.signs.lookup(app, wanted)
        if wanted and not registered:
            raise FailedPrecondition(
                f"sign name {wanted!r} is not registered for the app; register it with "
                "SignService.CreateSignName",
                reason=Reason.SIGN_NOT_REGISTERED,
            )
        return PreparedTemplate(template, parse_body(template.body), wanted or default)
