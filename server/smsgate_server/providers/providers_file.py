"""The providers file (``SMSGATE_PROVIDERS_FILE``): vendor accounts by name,
and the routes that choose among them.

TOML, one table per provider under ``[providers.NAME]`` with its ``type``
(tencent, aliyun, twilio) and that vendor's settings. Any setting ``KEY`` may
instead be given as ``KEY_env = "VARIABLE"``, read from that environment
variable, which is how credentials stay out of the file. ``[[routes]]`` tables
name, per destination (and optionally per app), the providers to try in
order. A wrong file stops the server with a message naming the key at fault,
never a secret's value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from smsgate_server.domain.phone import is_region, parse_calling_code
from smsgate_server.providers.aliyun import AliyunConfig, AliyunProvider
from smsgate_server.providers.base import Provider
from smsgate_server.providers.tencent import TencentConfig, TencentProvider
from smsgate_server.providers.twilio import TwilioConfig, TwilioProvider

__all__ = [
    "DEFAULT_DESTINATION",
    "ProvidersFileError",
    "Route",
    "VendorEntry",
    "build_vendor",
    "load_providers_file",
    "load_routes",
]

ENV_SUFFIX = "_env"
# The names templates key their vendor template ids by (domain/templates.py).
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class ProvidersFileError(ValueError):
    """The providers file cannot be used; the message names the file and key."""


_Text = Annotated[str, Field(min_length=1)]
_Region = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Calls in flight to this vendor at once, and how long one may take.
    concurrency: int = Field(default=16, ge=1, le=1024)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # ISO 3166 codes of the countries it serves; absent: everywhere.
    regions: frozenset[_Region] | None = None
    # The app key whose opt-out list a STOP reply to this account lands on;
    # absent: replies are acknowledged and change nothing.
    inbound_app: str | None = Field(default=None, min_length=1, max_length=64)
    # The account's send rate, kept by all replicas together (dispatch/guard.py):
    # messages and vendor calls per second (absent: no limit), and how many
    # seconds of it may go at once after a quiet spell.
    rate_messages_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    rate_calls_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    rate_burst_seconds: float = Field(default=1.0, gt=0, le=3600)


def _receipt_token(value: SecretStr | None) -> SecretStr | None:
    # In the callback URL's path: URL-safe, and long enough not to be guessed.
    if value is not None and not _TOKEN.match(value.get_secret_value()):
        raise ValueError("must be 16-128 characters of A-Z a-z 0-9 - _")
    return value


class TencentEntry(_Entry):
    """``type = "tencent"``: a Tencent Cloud SMS application."""

    type: Literal["tencent"]
    secret_id: _Text
    secret_key: SecretStr
    sdk_app_id: _Text
    region: _Text = "ap-guangzhou"
    endpoint: _Text = "https://sms.tencentcloudapi.com"
    # The secret part of this account's receipt URL (/receipts/NAME/TOKEN);
    # unset: no receipt endpoint.
    receipt_token: SecretStr | None = None

    _token = field_validator("receipt_token")(_receipt_token)


class AliyunEntry(_Entry):
    """``type = "aliyun"``: an Alibaba Cloud AccessKey for Dysmsapi."""

    type: Literal["aliyun"]
    access_key_id: _Text
    access_key_secret: SecretStr
    endpoint: _Text = "https://dysmsapi.aliyuncs.com"
    # As Tencent's: the secret part of /receipts/NAME/TOKEN.
    receipt_token: SecretStr | None = None

    _token = field_validator("receipt_token")(_receipt_token)


class TwilioEntry(_Entry):
    """``type = "twilio"``: a Twilio account and its sender."""

    type: Literal["twilio"]
    account_sid: Annotated[str, Field(pattern=r"^AC[0-9a-fA-F]{32}$")]
    # The account's auth token, or the API key's secret with api_key_sid.
    auth_token: SecretStr
    api_key_sid: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    status_callback: str = ""
    base_url: _Text = "https://api.twilio.com"
    # Twilio signs callbacks with the account's auth token, which an API key
    # setup does not otherwise need: set it here then.
    callback_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioEntry:
        if bool(self.from_number) == bool(self.messaging_service_sid):
            raise ValueError("set exactly one of from_number and messaging_service_sid")
        if self.status_callback and not self.callback_auth_token():
            raise ValueError(
                "with api_key_sid and a status_callback, set callback_token (the account's"
                " auth token, which Twilio signs status callbacks with)"
            )
        return self

    def callback_auth_token(self) -> str:
        """The token Twilio signs this account's callbacks with; "" when unknown."""
        if self.callback_token is not None:
            return self.callback_token.get_secret_value()
        return "" if self.api_key_sid else self.auth_token.get_secret_value()


VendorEntry = TencentEntry | AliyunEntry | TwilioEntry
_ENTRY: TypeAdapter[VendorEntry] = TypeAdapter(Annotated[VendorEntry, Field(discriminator="type")])


def load_providers_file(
    path: Path, environ: Mapping[str, str] | None = None
) -> dict[str, VendorEntry]:
    """The providers the file declares, by name; ``ProvidersFileError`` if it is wrong."""
    env = os.environ if environ is None else environ
    document = _read(path)
    tables = document.get("providers")
    if not isinstance(tables, dict) or not tables:
        raise ProvidersFileError(f"providers file {path}: no [providers.NAME] table")
    entries = {}
    for name, table in tables.items():
        where = f"providers file {path}: providers.{name}"
        if not _NAME.match(name):
            raise ProvidersFileError(f"{where}: a name must match [a-z][a-z0-9_]{{0,31}}")
        if name == "simulator":
            raise ProvidersFileError(f"{where}: the name 'simulator' is built in")
        if not isinstance(table, dict):
            raise ProvidersFileError(f"{where}: must be a table")
        try:
            entries[name] = _ENTRY.validate_python(_resolve_env(table, env, where))
        except ValidationError as exc:
            key, message = _first_error(exc)
            raise ProvidersFileError(f"{where}{'.' + key if key else ''}: {message}") from None
    return entries


def _read(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvidersFileError(
            f"providers file {path}: cannot read it ({exc.strerror})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProvidersFileError(f"providers file {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"providers", "routes", "prices"})
    if unknown:
        raise ProvidersFileError(f"providers file {path}: unknown key {unknown[0]!r}")
    return document


# The destination of a route that takes what no other route of its app (or,
# for global routes, no other global route) names.
DEFAULT_DESTINATION = "default"
_ROUTE_KEYS = frozenset({"destination", "providers", "weights", "app"})


@dataclass(frozen=True, slots=True)
class Route:
    """Which providers send to ``destination`` (an ISO 3166 region such as
    ``CN``, a calling code such as ``+86``, or ``default``), in failover order.

    With ``weights`` (one per provider), the first provider is drawn by weight
    among those able to send the message and the rest follow in order. A route
    with ``app`` applies to that app only, and wins over every global route.
    """

    destination: str
    providers: tuple[str, ...]
    weights: tuple[int, ...] = ()
    app: str = ""


def load_routes(path: Path, known: Collection[str]) -> list[Route]:
    """The ``[[routes]]`` of the file (empty when it has none), each naming only
    providers in ``known``; ``ProvidersFileError`` naming the key at fault."""
    tables = _read(path).get("routes", [])
    if not isinstance(tables, list):
        raise ProvidersFileError(f"providers file {path}: routes: must be [[routes]] tables")
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for i, table in enumerate(tables):
        where = f"providers file {path}: routes[{i}]"
        route = _route(table, known, where)
        if (route.app, route.destination) in seen:
            scope = f"app {route.app!r}" if route.app else "the global routes"
            raise ProvidersFileError(
                f"{where}.destination: {route.destination!r} is routed twice for {scope}"
            )
        seen.add((route.app, route.destination))
        routes.append(route)
    return routes


def _route(table: object, known: Collection[str], where: str) -> Route:
    if not isinstance(table, dict):
        raise ProvidersFileError(f"{where}: must be a table")
    extra = sorted(set(table) - _ROUTE_KEYS)
    if extra:
        raise ProvidersFileError(f"{where}.{extra[0]}: not a setting of a route")
    destination = table.get("destination")
    if not isinstance(destination, str):
        raise ProvidersFileError(
            f"{where}.destination: required, a region (CN), a calling code (+86) or"
            f" {DEFAULT_DESTINATION!r}"
        )
    destination = _destination(destination, f"{where}.destination")
    names = table.get("providers")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ProvidersFileError(f"{where}.providers: required, a non-empty list of names")
    for j, name in enumerate(names):
        if name not in known:
            raise ProvidersFileError(
                f"{where}.providers[{j}]: {name!r} is not a provider"
                f" (known: {', '.join(sorted(known))})"
            )
        if name in names[:j]:
            raise ProvidersFileError(f"{where}.providers[{j}]: {name!r} is listed twice")
    weights = table.get("weights", [])
    if not isinstance(weights, list) or not all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights
    ):
        raise ProvidersFileError(f"{where}.weights: must be a list of whole numbers >= 0")
    if weights and (len(weights) != len(names) or sum(weights) == 0):
        raise ProvidersFileError(
            f"{where}.weights: needs one weight per provider ({len(names)}), not all 0"
        )
    app = table.get("app", "")
    if not isinstance(app, str) or (app == "" and "app" in table) or len(app) > 64:
        raise ProvidersFileError(f"{where}.app: must be an app key")
    return Route(destination, tuple(names), tuple(weights), app)


def _destination(text: str, where: str) -> str:
    if text == DEFAULT_DESTINATION or is_region(text):
        return text
    if text.startswith("+"):
        try:
            return f"+{parse_calling_code(text)}"
        except ValueError:
            pass
    raise ProvidersFileError(
        f"{where}: {text!r} is neither a region (CN, US, ...), a calling code (+86, +1, ...)"
        f" nor {DEFAULT_DESTINATION!r}"
    )


def _resolve_env(table: dict[str, Any], env: Mapping[str, str], where: str) -> dict[str, Any]:
    """Replace each ``KEY_env = "VAR"`` with ``KEY`` = the variable's value."""
    resolved = dict(table)
    for key, variable in table.items():
        if not key.endswith(ENV_SUFFIX):
            continue
        target = key.removesuffix(ENV_SUFFIX)
        if target in table:
            raise ProvidersFileError(f"{where}.{key}: give {target} or {key}, not both")
        if not isinstance(variable, str) or not variable:
            raise ProvidersFileError(f"{where}.{key}: must name an environment variable")
        if variable not in env:
            raise ProvidersFileError(f"{where}.{key}: environment variable {variable} is not set")
        del resolved[key]
        resolved[target] = env[variable]
    return resolved


def _first_error(exc: ValidationError) -> tuple[str, str]:
    # Location and message only: pydantic's own text would quote the value,
    # which may be a secret.
    error = exc.errors(include_input=False, include_url=False)[0]
    # The first location item is the union's tag (the entry type).
    parts = [str(p) for p in error["loc"][1:]] if len(error["loc"]) > 1 else []
    key = ".".join(parts) if parts else "type" if error["type"].startswith("union") else ""
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "not a setting of this provider type"
    elif error["type"] == "missing":
        message = f"required (or {key}{ENV_SUFFIX} naming an environment variable)"
    elif error["type"] == "value_error":
        message = str(error["ctx"]["error"])
    return key, message


def build_vendor(name: str, entry: VendorEntry, http: httpx.AsyncClient) -> Provider:
    """The adapter an entry describes, sending on ``http``."""
    common: dict[str, Any] = {
        "http": http,
        "name": name,
        "concurrency": entry.concurrency,
        "timeout": entry.timeout_seconds,
        "regions": entry.regions,
    }
    if isinstance(entry, TencentEntry):
        tencent = TencentConfig(
            secret_id=entry.secret_id,
            secret_key=entry.secret_key.get_secret_value(),
            sdk_app_id=entry.sdk_app_id,
            region=entry.region,
            endpoint=entry.endpoint,
        )
        return TencentProvider(tencent, **common)
    if isinstance(entry, AliyunEntry):
        aliyun = AliyunConfig(
            access_key_id=entry.access_key_id,
            access_key_secret=entry.access_key_secret.get_secret_value(),
            endpoint=entry.endpoint,
        )
        return AliyunProvider(aliyun, **common)
    twilio = TwilioConfig(
        account_sid=entry.account_sid,
        password=entry.auth_token.get_secret_value(),
        username=entry.api_key_sid,
        from_number=entry.from_number,
        messaging_service_sid=entry.messaging_service_sid,
        status_callback=entry.status_callback,
        base_url=entry.base_url,
    )
    return TwilioProvider(twilio, **common)
