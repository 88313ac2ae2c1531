"""Templates: bodies with ``{name}`` placeholders, their checks, rendering, signs.

A body is literal text and placeholders. ``{name}`` names a parameter
(letters, digits, ``_``); the vendors' numbered style ``{1}``, ``{2}`` is a
name too. ``{{`` and ``}}`` are literal braces; any other brace is an error,
and so is a sign bracket (``【`` ``】``): the sign is added at send time.

Rendering is one pass over the parsed body: a parameter value is inserted as
text and never parsed again. Values holding a brace or a sign bracket
(``【`` ``】``) are rejected rather than rewritten, so the text sent is always
the text the caller gave, and no value can pose as a placeholder or a sign.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from smsgate_server.domain.errors import FieldViolation, InvalidArgument, Reason

__all__ = [
    "MAX_BODY_LENGTH",
    "MAX_PARAM_LENGTH",
    "MAX_VARIABLES",
    "Body",
    "Placeholder",
    "Template",
    "TemplateKind",
    "check_display_name",
    "check_kind",
    "check_provider_template_ids",
    "check_sign_name",
    "check_template_id",
    "parse_body",
    "render",
    "sign_in_text",
    "with_sign",
]

# Vendors accept template bodies of about 500 characters (Tencent, Aliyun); 1,000
# leaves room for Latin text and stays well inside the send path's segment limit.
MAX_BODY_LENGTH = 1000
MAX_VARIABLES = 32
# Aliyun's limit for one template variable; vendors reject longer values at send time.
MAX_PARAM_LENGTH = 35
MAX_SIGN_LENGTH = 16
MAX_DISPLAY_NAME_LENGTH = 128
MAX_PROVIDER_IDS = 16
VERIFICATION_CODE = "code"

_TOKENS = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Characters a value may not carry: braces (placeholders) and sign brackets.
_FORBIDDEN_IN_VALUE = re.compile("[{}【】]")
_SIGN_BRACKET = re.compile("[【】]")
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_VENDOR_TEMPLATE_ID = re.compile(r"^[\x21-\x7e]{1,64}$")
_NOT_IN_SIGN = re.compile("[【】{}\\x00-\\x1f]")


class TemplateKind(enum.IntEnum):
    """What a template is for; values match ``smsgate.v1.TemplateKind``."""

    VERIFICATION = 1
    NOTIFICATION = 2
    MARKETING = 3


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A ``{name}`` in a body."""

    name: str


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed body: literal text (braces unescaped) and placeholders, in order."""

    parts: tuple[str | Placeholder, ...]
    variables: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Template:
    """One version of an app's template."""

    id: str
    version: int
    kind: TemplateKind
    body: str
    display_name: str = ""
    sign_name: str = ""
    provider_template_ids: Mapping[str, str] = field(default_factory=dict)
    create_time_ms: int = 0
    update_time_ms: int = 0
    etag: str = ""

    @property
    def variables(self) -> tuple[str, ...]:
        """The placeholder names of the body, in order of first use."""
        return parse_body(self.body).variables


def parse_body(body: str, field: str = "body") -> Body:
    """The parts of ``body``; InvalidArgument naming ``field`` when it is malformed."""
    if not body.strip():
        raise InvalidArgument.field(
            field, "is required and must not be blank", reason=Reason.EMPTY_CONTENT
        )
    if len(body) > MAX_BODY_LENGTH:
        raise InvalidArgument.field(
            field,
            f"has {len(body)} characters; at most {MAX_BODY_LENGTH} are allowed",
            reason=Reason.CONTENT_TOO_LONG,
        )
    bracket = _SIGN_BRACKET.search(body)
    if bracket is not None:
        # The sign goes in front of the text at send time; one in the body would be a second.
        raise InvalidArgument.field(
            field,
            f"has a sign bracket at position {bracket.start()}; the sign name is added "
            "when the message is sent (sign_name)",
            reason=Reason.INVALID_TEMPLATE_BODY,
        )
    parts: list[str | Placeholder] = []
    names: dict[str, None] = {}
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise InvalidArgument.field(
                field,
                f"has an unbalanced {token!r} at position {match.start()}; "
                "write {{ or }} for a literal brace",
                reason=Reason.INVALID_TEMPLATE_BODY,
            )
        elif token[0] == "{":
            name = match.group(1)
            if not _NAME.match(name):
                raise InvalidArgument.field(
                    field,
                    f"placeholder {_excerpt(token)} at position {match.start()} must be a name of "
                    "1-64 letters, digits and _",
                    reason=Reason.INVALID_TEMPLATE_BODY,
                )
            names[name] = None
            parts.append(Placeholder(name))
        else:
            parts.append(token)
    if len(names) > MAX_VARIABLES:
        raise InvalidArgument.field(
            field,
            f"has {len(names)} placeholders; at most {MAX_VARIABLES} are allowed",
            reason=Reason.INVALID_TEMPLATE_BODY,
        )
    return Body(tuple(_joined(parts)), tuple(names))


def _excerpt(token: str) -> str:
    # Echoed in the status message, whose trailer must stay small (8 KiB by default).
    return repr(token) if len(token) <= 40 else repr(token[:20] + "…" + token[-1])


def _joined(parts: list[str | Placeholder]) -> list[str | Placeholder]:
    # "a{{b" tokenises as "a", "{", "b": one literal reads better and renders faster.
    out: list[str | Placeholder] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


def check_kind(
    kind: int, body: Body, *, kind_field: str = "kind", body_field: str = "body"
) -> TemplateKind:
    """``kind`` as a TemplateKind; a verification body must hold ``{code}``."""
    try:
        checked = TemplateKind(kind)
    except ValueError:
        raise InvalidArgument.field(
            kind_field,
            "must be TEMPLATE_KIND_VERIFICATION, _NOTIFICATION or _MARKETING",
            reason=Reason.INVALID_TEMPLATE_KIND,
        ) from None
    if checked is TemplateKind.VERIFICATION and VERIFICATION_CODE not in body.variables:
        raise InvalidArgument.field(
            body_field,
            "a verification template must hold the {code} placeholder",
            reason=Reason.INVALID_TEMPLATE_BODY,
        )
    return checked


def check_template_id(value: str, field: str = "template_id") -> str:
    """1-64 letters, digits, ``_`` and ``-``."""
    if not _TEMPLATE_ID.match(value):
        reason = "is required" if not value else "must be 1-64 letters, digits, _ and -"
        raise InvalidArgument.field(field, reason)
    return value


def check_sign_name(value: str, field: str = "sign_name") -> str:
    """Empty, or 2-16 characters without brackets, braces or control characters."""
    if value and (not 2 <= len(value) <= MAX_SIGN_LENGTH or _NOT_IN_SIGN.search(value) is not None):
        raise InvalidArgument.field(
            field,
            f"must be 2-{MAX_SIGN_LENGTH} characters without 【】, braces or control characters",
            reason=Reason.INVALID_SIGN_NAME,
        )
    return value


def check_display_name(value: str, field: str = "display_name") -> str:
    """At most 128 characters."""
    if len(value) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument.field(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    return value


def check_provider_template_ids(
    ids: Mapping[str, str], field: str = "provider_template_ids"
) -> dict[str, str]:
    """At most 16 provider names (``tencent``) each with a vendor id of 1-64
    printable ASCII characters."""
    if len(ids) > MAX_PROVIDER_IDS:
        raise InvalidArgument.field(field, f"at most {MAX_PROVIDER_IDS} providers are allowed")
    bad = [
        FieldViolation(f"{field}[{name[:32]}]", "provider name must match [a-z][a-z0-9_]{0,31}")
        for name in ids
        if not _PROVIDER_NAME.match(name)
    ] + [
        FieldViolation(f"{field}[{name[:32]}]", "must be 1-64 printable ASCII characters")
        for name, vendor_id in ids.items()
        if not _VENDOR_TEMPLATE_ID.match(vendor_id)
    ]
    if bad:
        raise InvalidArgument(bad)
    return dict(ids)


def render(body: Body, params: Mapping[str, str], field: str = "params") -> str:
    """``body`` with each placeholder replaced by its value, in one pass.

    Missing, unknown, over-long values and values holding ``{`` ``}`` ``【`` ``】``
    are InvalidArgument, one violation per parameter (``params[name]``)."""
    if len(params) > MAX_VARIABLES:
        # One violation, not one per name: thousands would not fit in the trailers.
        raise InvalidArgument.field(
            field,
            f"has {len(params)} values; a template has at most {MAX_VARIABLES} placeholders",
            reason=Reason.INVALID_TEMPLATE_PARAMS,
        )
    bad: list[FieldViolation] = []
    for name in body.variables:
        if name not in params:
            bad.append(FieldViolation(f"{field}[{name}]", "is required by the template"))
    for name, value in params.items():
        where = f"{field}[{name[:64]}]"
        if name not in body.variables:
            bad.append(FieldViolation(where, "is not a placeholder of the template"))
        elif len(value) > MAX_PARAM_LENGTH:
            bad.append(
                FieldViolation(
                    where, f"has {len(value)} characters; at most {MAX_PARAM_LENGTH} are allowed"
                )
            )
        elif _FORBIDDEN_IN_VALUE.search(value):
            bad.append(FieldViolation(where, "must not contain { } 【 or 】"))
    if bad:
        raise InvalidArgument(bad, reason=Reason.INVALID_TEMPLATE_PARAMS)
    return "".join(p if isinstance(p, str) else params[p.name] for p in body.parts)


def sign_in_text(region: str) -> bool:
    """Whether the sign is part of the text: in China (``【sign】body``); elsewhere
    the sign is the sender id and the text is the body alone."""
    return region == "CN"


def with_sign(text: str, sign: str, region: str) -> str:
    """The text the handset shows in ``region`` for ``text`` sent under ``sign``."""
    return f"【{sign}】{text}" if sign and sign_in_text(region) else text
