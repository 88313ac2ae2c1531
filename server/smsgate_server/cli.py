"""The ``smsgate-server`` command.

smsgate-server                    run the service (same as ``serve``)
smsgate-server apps create NAME   create an app and print its credentials
    [--allow-country CC]...       countries its verification codes may go to
    [--verify-per-minute N]       its verification codes per minute
    [--accept-per-second N]       messages it may accept per second
    [--max-held-messages N]       messages it may hold in Redis
    [--default-region CC]         region of numbers written without + (CN, US, ...)
    [--mobile-only]               refuse numbers that may be fixed lines (US, ...)
smsgate-server apps set-region KEY CC [--mobile-only]
                                  change an app's default region (and number types)
smsgate-server apps set-policy KEY [--same-content-seconds N] [--per-number-day N]
    [--daily-cap N] [--quiet-hours HH:MM-HH:MM|off]
                                  an app's own sending policy ('default': the server's)
smsgate-server apps revoke KEY    delete an app: every server refuses its token at once
smsgate-server apps rotate-secret KEY [--json]
                                  a new secret, printed once; the old one is refused
smsgate-server apps list [--json] every app: key, name, creation time, default region
smsgate-server --version          the server's and its client package's versions
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import smsgate
from pydantic import ValidationError

from smsgate_server import __version__
from smsgate_server.config import Settings, unknown_variables
from smsgate_server.domain.apps import Credentials
from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.phone import E164_ONLY, NumberPolicy, is_region, parse_calling_code
from smsgate_server.domain.policy import QuietHours
from smsgate_server.logs import configure_logging
from smsgate_server.shared_metrics import shared_metrics_dir
from smsgate_server.start_error import StartError
from smsgate_server.store.apps import AppStore
from smsgate_server.store.connection import connect
from smsgate_server.store.embedded_redis import EmbeddedRedis, RedisStartError, running_url

__all__ = ["main"]

log = logging.getLogger("smsgate.server")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = ["smsgate-server: invalid settings:"]
        for err in exc.errors():
            name = "SMSGATE_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        raise SystemExit("\n".join(lines)) from None


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when enabled and installed, else asyncio's default."""
    if not settings.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(settings: Settings) -> None:
    """Run one server process until SIGTERM/SIGINT."""
    with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
        runner.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    # Handlers first: a signal that arrives during start-up stops the server
    # once it is up, instead of killing it half-way with Redis still running.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Imported here, not at the top: the metrics mode must be chosen first (main).
    from smsgate_server.runtime import start

    running = await start(settings)
    await stop.wait()
    await running.stop()


@asynccontextmanager
async def _app_store(settings: Settings) -> AsyncIterator[AppStore]:
    """The apps in the running server's Redis, or in the data directory's
    embedded Redis, started for the while when no server runs."""
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url or running_url(settings.data_dir)
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        url = await asyncio.to_thread(embedded.start)
    try:
        redis = await connect(url, pool_size=2)
        try:
            yield AppStore(redis.client)
        finally:
            await redis.aclose()
    except Unavailable as exc:
        raise StartError(str(exc)) from None
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _create_app(
    settings: Settings,
    name: str,
    as_json: bool,
    *,
    allowed_countries: Sequence[int] = (),
    verify_per_minute: int | None = None,
    accept_per_second: int | None = None,
    max_held_messages: int | None = None,
    numbers: NumberPolicy = E164_ONLY,
) -> None:
    async with _app_store(settings) as apps:
        creds = await apps.create(
            name,
            allowed_countries=allowed_countries,
            verify_per_minute=verify_per_minute,
            accept_per_second=accept_per_second,
            max_held_messages=max_held_messages,
            numbers=numbers,
        )
    if not as_json:
        print(f"app:        {name}")
    _print_credentials(creds, as_json)
    if not as_json:
        print("\nSend it as gRPC metadata:  authorization: Bearer <token>")


def _print_credentials(creds: Credentials, as_json: bool) -> None:
    """Key, secret (its one showing) and token, as text or one JSON object."""
    if as_json:
        print(
            json.dumps(
                {"app_key": creds.app_key, "app_secret": creds.app_secret, "token": creds.token}
            )
        )
    else:
        print(f"app_key:    {creds.app_key}")
        print(f"app_secret: {creds.app_secret}   (shown once; stored hashed)")
        print(f"token:      {creds.token}")


async def _revoke_app(settings: Settings, key: str) -> None:
    async with _app_store(settings) as apps:
        revoked = await apps.revoke(key)
    if not revoked:
        raise StartError(f"no app has the key {key!r}")
    print(f"revoked {key}: every server refuses its token from now on")


async def _rotate_secret(settings: Settings, key: str, as_json: bool) -> None:
    async with _app_store(settings) as apps:
        creds = await apps.rotate_secret(key)
    if creds is None:
        raise StartError(f"no app has the key {key!r}")
    _print_credentials(creds, as_json)
    if not as_json:
        print("\nThe old secret is refused from now on, by every server.")


async def _list_apps(settings: Settings, as_json: bool) -> None:
    async with _app_store(settings) as apps:
        found = await apps.list_all()
    for app in found:
        created = datetime.fromtimestamp(app.created_ms / 1000, UTC).isoformat(timespec="seconds")
        if as_json:
            row = {"app_key": app.key, "name": app.name, "create_time": created}
            print(json.dumps(row | {"default_region": app.default_region}, ensure_ascii=False))
        else:
            print(f"{app.key}  {created}  {app.default_region or '-':2}  {app.name}")


async def _set_region(settings: Settings, key: str, numbers: NumberPolicy) -> None:
    async with _app_store(settings) as apps:
        changed = await apps.set_numbers(key, numbers)
    if not changed:
        raise StartError(f"no app has the key {key!r}")
    region = numbers.default_region or "none (E.164 only)"
    types = "mobile only" if numbers.mobile_only else "mobile, or fixed line or mobile"
    print(f"{key}: default region {region}; numbers accepted: {types}")


async def _set_policy(settings: Settings, key: str, changes: dict[str, int | str | None]) -> None:
    async with _app_store(settings) as apps:
        own = await apps.own_policy(key)
        if own is None:
            raise StartError(f"no app has the key {key!r}")
        own = dataclasses.replace(own, **changes)  # type: ignore[arg-type]
        if not await apps.set_policy(key, own):
            raise StartError(f"no app has the key {key!r}")
    shown = {
        name: "server's" if value is None else value
        for name, value in dataclasses.asdict(own).items()
    }
    print(f"{key}: " + ", ".join(f"{name.replace('_', '-')} {v}" for name, v in shown.items()))


def _policy_number(text: str) -> int | None:
    """A cap of ``apps set-policy``: a whole number (0: none), or 'default'."""
    if text.strip().lower() == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (0: no cap) or 'default' (the server's)"
        )
    return value


def _quiet_hours(text: str) -> str | None:
    if text.strip().lower() == "default":
        return None
    try:
        quiet = QuietHours.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return str(quiet) if quiet else "off"


def _region(text: str) -> str:
    region = text.strip().upper()
    if region in ("", "NONE"):
        return ""
    if not is_region(region):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a region code (ISO 3166-1 alpha-2: CN, US, GB, ...); "
            "'none' for E.164 only"
        )
    return region


def _calling_code(text: str) -> int:
    try:
        return parse_calling_code(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# An option of ``apps set-policy`` that was not given (None means "default").
_UNSET: Any = object()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smsgate-server", description="smsgate gRPC SMS service")
    parser.add_argument(
        "--version",
        action="version",
        version=f"smsgate-server {__version__} (client smsgate {smsgate.__version__})",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (default)")
    apps = sub.add_parser("apps", help="manage apps").add_subparsers(dest="apps_command")
    create = apps.add_parser("create", help="create an app and print its credentials")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.add_argument(
        "--allow-country",
        type=_calling_code,
        action="append",
        default=[],
        metavar="CC",
        help="country calling code (86, 1, ...) verification codes may be sent to; repeatable; "
        "default: SMSGATE_VERIFY_ALLOWED_COUNTRIES",
    )
    create.add_argument(
        "--verify-per-minute",
        type=_positive,
        metavar="N",
        help="verification codes the app may issue per minute; default: SMSGATE_VERIFY_PER_MINUTE",
    )
    create.add_argument(
        "--accept-per-second",
        type=_positive,
        metavar="N",
        help="messages the app may accept per second (a batch counts its recipients); "
        "default: SMSGATE_APP_ACCEPT_PER_SECOND",
    )
    create.add_argument(
        "--max-held-messages",
        type=_positive,
        metavar="N",
        help="messages the app may hold in Redis, finished ones until their retention ends; "
        "default: SMSGATE_APP_MAX_HELD_MESSAGES",
    )
    create.add_argument(
        "--default-region",
        type=_region,
        default="",
        metavar="CC",
        help="ISO region (CN, US, ...) of recipients written without + and country code, "
        "such as 13800138000; default: E.164 only",
    )
    mobile_only_help = (
        "refuse numbers that may be fixed lines as well as mobiles (every US and Canadian "
        "number); default: accept them"
    )
    create.add_argument("--mobile-only", action="store_true", help=mobile_only_help)
    set_region = apps.add_parser(
        "set-region", help="change an app's default region (every server applies it at once)"
    )
    set_region.add_argument("key", help="the app's key (ak_...)")
    set_region.add_argument("region", type=_region, help="CN, US, ... or 'none' for E.164 only")
    set_region.add_argument("--mobile-only", action="store_true", help=mobile_only_help)
    set_policy = apps.add_parser(
        "set-policy",
        help="set an app's own sending policy, 'default' for the server's (every server "
        "applies it at once); values not given stay as they are",
    )
    set_policy.add_argument("key", help="the app's key (ak_...)")
    for option, what in (
        ("--same-content-seconds", "the same content to one number at most once per N s"),
        ("--per-number-day", "notification and marketing messages per number a day"),
        ("--daily-cap", "messages of the app a day"),
    ):
        set_policy.add_argument(option, type=_policy_number, default=_UNSET, help=what)
    set_policy.add_argument(
        "--quiet-hours",
        type=_quiet_hours,
        default=_UNSET,
        help="marketing is held in these hours of the recipient's local time: "
        "HH:MM-HH:MM, off, or default",
    )
    revoke = apps.add_parser("revoke", help="delete an app: every server refuses its token at once")
    revoke.add_argument("key", help="the app's key (ak_...)")
    rotate = apps.add_parser(
        "rotate-secret", help="give an app a new secret: every server refuses the old one at once"
    )
    rotate.add_argument("key", help="the app's key (ak_...)")
    rotate.add_argument("--json", action="store_true", help="print the credentials as JSON")
    listing = apps.add_parser("list", help="every app: key, creation time, region, name")
    listing.add_argument("--json", action="store_true", help="print a JSON object per app")
    args = parser.parse_args(argv)

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    unknown = unknown_variables(os.environ)
    if unknown:
        log.warning(
            "unknown SMSGATE_* variables, ignored: " + ", ".join(unknown),
            extra={"variables": unknown},
        )
    try:
        if args.command == "apps" and args.apps_command == "revoke":
            asyncio.run(_revoke_app(settings, args.key))
        elif args.command == "apps" and args.apps_command == "rotate-secret":
            asyncio.run(_rotate_secret(settings, args.key, args.json))
        elif args.command == "apps" and args.apps_command == "list":
            asyncio.run(_list_apps(settings, args.json))
        elif args.command == "apps" and args.apps_command == "set-policy":
            names = ("same_content_seconds", "per_number_day", "daily_cap", "quiet_hours")
            changes = {n: getattr(args, n) for n in names if getattr(args, n) is not _UNSET}
            asyncio.run(_set_policy(settings, args.key, changes))
        elif args.command == "apps" and args.apps_command == "set-region":
            numbers = NumberPolicy(default_region=args.region, mobile_only=args.mobile_only)
            asyncio.run(_set_region(settings, args.key, numbers))
        elif args.command == "apps":
            if args.apps_command != "create":
                parser.error(
                    "apps: expected 'create NAME', 'list', 'set-region KEY CC', 'set-policy KEY', "
                    "'rotate-secret KEY' or 'revoke KEY'"
                )
            asyncio.run(
                _create_app(
                    settings,
                    args.name,
                    args.json,
                    allowed_countries=args.allow_country,
                    verify_per_minute=args.verify_per_minute,
                    accept_per_second=args.accept_per_second,
                    max_held_messages=args.max_held_messages,
                    numbers=NumberPolicy(
                        default_region=args.default_region, mobile_only=args.mobile_only
                    ),
                )
            )
        elif settings.processes > 1:
            with shared_metrics_dir(settings.data_dir):
                # Imported only now: prometheus_client, which the server's
                # modules import, picks multi-process mode on first import.
                from smsgate_server.processes import serve_processes

                return serve_processes(settings, _run)
        else:
            _run(settings)
    except (StartError, RedisStartError) as exc:
        print(f"smsgate-server: {exc}", file=sys.stderr)
        return 1
    return 0
