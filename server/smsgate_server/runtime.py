"""Assembles and runs one server process: Redis, stores, dispatcher, gRPC and
the HTTP side port; and takes them down again in order.

Every resource goes into one ``AsyncExitStack`` as it is acquired, so a
failure at any step of start-up releases what the steps before acquired, and
shutdown is start-up in reverse: health NOT_SERVING, watch streams end, the
gRPC server stops (running calls get the grace period), then the dispatcher,
the provider, the HTTP side port, Redis and the embedded Redis.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from smsgate.v1 import (
    inbound_service_pb2,
    inbound_service_pb2_grpc,
    opt_out_service_pb2,
    opt_out_service_pb2_grpc,
    sign_service_pb2,
    sign_service_pb2_grpc,
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    verification_service_pb2,
    verification_service_pb2_grpc,
)
from starlette.routing import BaseRoute, Route

from smsgate_server.aio import cancel_and_wait
from smsgate_server.api.connect import JSON_SIZE_FACTOR, ConnectFace
from smsgate_server.api.guard import RequestGuard
from smsgate_server.api.limits import max_request_bytes
from smsgate_server.api.optouts import OptOutServicer
from smsgate_server.api.replies import InboundServicer
from smsgate_server.api.signs import SignServicer
from smsgate_server.api.sms import SmsServicer
from smsgate_server.api.templates import TemplateServicer
from smsgate_server.api.usage import UsageServicer
from smsgate_server.api.verification import VerificationServicer
from smsgate_server.config import Role, Settings, parse_address
from smsgate_server.dispatch.dispatcher import DispatchConfig, Dispatcher
from smsgate_server.dispatch.guard import RedisProviderGate, gate_from_settings
from smsgate_server.dispatch.leases import ShardLeases, lease_seconds
from smsgate_server.dispatch.receipt_intake import ReceiptIntake
from smsgate_server.domain.codes import CodeSigner, parse_secret
from smsgate_server.domain.errors import Unavailable
from smsgate_server.domain.sealed_text import TextCipher
from smsgate_server.domain.tokens import TokenSealer
from smsgate_server.http import HttpSidePort, build_app
from smsgate_server.provider_endpoints import provider_routes
from smsgate_server.providers.base import Provider
from smsgate_server.providers.factory import ProviderSet, UnknownProviderError, open_providers
from smsgate_server.providers.prices import PricesError, load_prices
from smsgate_server.providers.providers_file import ProvidersFileError, load_providers_file
from smsgate_server.receipt_endpoints import inbound_routes, receipt_endpoints, receipt_routes
from smsgate_server.services.admission import Admission, AdmissionPolicy
from smsgate_server.services.composing import Composer
from smsgate_server.services.optouts import OptOutService
from smsgate_server.services.policy import PolicySettings, SendingPolicy
from smsgate_server.services.replies import ReplyService
from smsgate_server.services.reply_watch import ReplyHub
from smsgate_server.services.sending import SendingService, SendLimits
from smsgate_server.services.signs import SignService
from smsgate_server.services.templates import TemplateService
from smsgate_server.services.usage import UsageMetrics, UsageService
from smsgate_server.services.verification import CodePolicy, VerificationService
from smsgate_server.services.watch import WatchHub
from smsgate_server.start_error import StartError
from smsgate_server.store.apps import AppStore
from smsgate_server.store.codes import CodeStore
from smsgate_server.store.connection import (
    RedisConnection,
    connect,
    masters_short_of_replicas,
    redact_url,
)
from smsgate_server.store.durability import read_durability
from smsgate_server.store.embedded_redis import EmbeddedRedis, running_url
from smsgate_server.store.events import EventStore
from smsgate_server.store.layout import ShardLayout, record_shard_count
from smsgate_server.store.leases import LeaseStore
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.optouts import OptOutStore
from smsgate_server.store.policy import PolicyStore
from smsgate_server.store.queue import DispatchQueue
from smsgate_server.store.quota import QuotaStore
from smsgate_server.store.replies import ReplyStore
from smsgate_server.store.signs import SignStore
from smsgate_server.store.templates import TemplateStore
from smsgate_server.store.usage import UsageStore

__all__ = [
    "Running",
    "StartError",
    "StartStep",
    "bind_address",
    "check_data_dir_free",
    "load_server_secret",
    "start",
]

log = logging.getLogger("smsgate.server")

SERVICE_NAMES = [
    sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"].full_name,
    verification_service_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name,
    template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    sign_service_pb2.DESCRIPTOR.services_by_name["SignService"].full_name,
    opt_out_service_pb2.DESCRIPTOR.services_by_name["OptOutService"].full_name,
    inbound_service_pb2.DESCRIPTOR.services_by_name["InboundService"].full_name,
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
]
# How long uvicorn may take to finish its requests once told to exit.
HTTP_STOP_SECONDS = 5.0


class StartStep(enum.StrEnum):
    """The steps of start-up, in order; shutdown undoes them in reverse."""

    EMBEDDED_REDIS = "embedded_redis"  # the private redis-server (no SMSGATE_REDIS_URL)
    REDIS = "redis"  # the Redis clients, checked: PING, persistence, eviction, shard count
    HTTP = "http"  # the HTTP side port, bound and serving (/readyz 503 until SERVING)
    PROVIDER = "provider"  # SMSGATE_PROVIDER's and every routed provider, with their HTTP client
    DISPATCHER = "dispatcher"  # queue readers and promoter (roles worker and all)
    GRPC = "grpc"  # the gRPC server with its services, bound
    SERVING = "serving"  # the gRPC server started, health SERVING; the dev app on first start


# Called after each step (a seam for tests: raising there is a failure at that step).
StepHook = Callable[[StartStep], Awaitable[None]]


@dataclass
class Running:
    """A started server; ``stop()`` takes it down gracefully."""

    settings: Settings
    grpc_port: int
    http_port: int
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    redis: RedisConnection
    store: MessageStore
    apps: AppStore
    provider: Provider
    dispatcher: Dispatcher | None
    hub: WatchHub | None
    resources: AsyncExitStack
    stopped: bool = field(default=False)

    async def stop(self) -> None:
        """Release what start-up acquired, in reverse (see the module docstring)."""
        if self.stopped:
            return
        self.stopped = True
        log.info("shutting down", extra={"grace_seconds": self.settings.shutdown_grace_seconds})
        await self.resources.aclose()
        log.info("stopped")


def check_data_dir_free(data_dir: Path) -> None:
    """Raise StartError when another smsgate-server's embedded Redis serves ``data_dir``."""
    if running_url(data_dir) is not None:
        raise StartError(
            f"another smsgate-server is using the data directory {data_dir}; "
            "stop it, or set SMSGATE_DATA_DIR to another directory"
        )


def load_server_secret(settings: Settings) -> bytes:
    """The key for HMACs of verification codes: ``SMSGATE_SERVER_SECRET`` when set,
    else from the data directory, created once (0600) on first use."""
    if settings.server_secret is not None:
        return parse_secret(settings.server_secret.get_secret_value())
    if not settings.embedded_redis:
        log.warning(
            "SMSGATE_SERVER_SECRET is not set: using the secret in the data directory; "
            "every replica on this Redis must use the same secret, or codes and "
            "verification ids issued by one fail on another",
            extra={"data_dir": str(settings.data_dir)},
        )
    path = settings.data_dir / "server-secret"
    if not path.exists():
        # Written whole under a private name, then linked into place: processes
        # starting together (SMSGATE_PROCESSES) never read a half-written file,
        # and the first link wins.
        value = secrets.token_bytes(32)
        tmp = path.with_name(f".server-secret.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value.hex() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


async def _dev_app(apps: AppStore, settings: Settings, grpc_port: int) -> None:
    """In embedded mode, make a development app on first start and say how to call."""
    path = settings.data_dir / "dev-app.json"
    if not path.exists():
        if await apps.count() > 0:
            return
        creds = await apps.create("dev")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"app_key": creds.app_key, "token": creds.token}, f)
    token = json.loads(path.read_text())["token"]
    host = parse_address(settings.grpc_address)[0]
    print(
        f"\nsmsgate is running with an embedded Redis and the {settings.provider} provider.\n"
        f"Development app token (also in {path}):\n\n  {token}\n\n"
        "Try:\n"
        "  buf curl --protocol grpc --http2-prior-knowledge \\\n"
        f"    -H 'authorization: Bearer {token}' \\\n"
        '    -d \'{"phone_number": "+14155550123", "text": "hello"}\' \\\n'
        f"    http://{host}:{grpc_port}/smsgate.v1.SmsService/SendSms\n",
        flush=True,
    )


async def start(settings: Settings, *, after_step: StepHook | None = None) -> Running:
    """Start everything; raise StartError with a clear message when something is
    wrong, having released whatever was acquired."""
    stack = AsyncExitStack()
    try:
        # Once started, the stack is Running.stop()'s to close.
        return await _start(settings, stack, after_step)
    except BaseException:
        await stack.aclose()
        raise


async def _start(settings: Settings, stack: AsyncExitStack, after_step: StepHook | None) -> Running:
    async def reached(step: StartStep) -> None:
        if after_step is not None:
            await after_step(step)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Read once: it keys code HMACs, tokens and sealed texts alike.
    secret = load_server_secret(settings)
    url = settings.redis_url
    if url is None:
        url = await _embedded_redis(settings.data_dir, stack)
        await reached(StartStep.EMBEDDED_REDIS)
    redis = await _redis(url, settings, stack)
    await _check_durability(redis, url, settings)
    # Every shard that may hold data (new messages go to settings.shards of them).
    layout = await _shard_layout(redis, settings)
    shards = layout.shards
    await _check_replicas(redis, settings)
    await reached(StartStep.REDIS)

    # /readyz answers ok only between SERVING and the start of shutdown, while
    # Redis answers.
    serving = asyncio.Event()

    async def ready() -> bool:
        return serving.is_set() and await redis.healthy()

    store = MessageStore(
        redis.client,
        shards=shards,
        write_shards=settings.shards,
        grown_from=layout.grown_from,
        grown_at_ms=layout.grown_at_ms,
        event_retention_seconds=settings.event_retention_seconds,
        message_retention_seconds=settings.message_retention_seconds,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        receipt_timeout_seconds=settings.receipt_timeout_seconds,
        schedule_max_days=settings.schedule_max_days,
        max_message_age_seconds=settings.max_message_age_seconds,
        wait_replicas=settings.wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    # The API over HTTP/JSON answers UNAVAILABLE until the services exist.
    connect = ConnectFace(max_body_bytes=JSON_SIZE_FACTOR * _max_request_bytes(settings))
    gate, accounts = _provider_gate(settings, redis)
    http_port = await _http_side_port(
        settings.http_address,
        ready,
        _receipt_routes(settings, store),
        stack,
        # Off: the side port serves probes, metrics and receipts only.
        connect.routes() if settings.http_api else [],
        provider_routes(gate, accounts),
    )
    await reached(StartStep.HTTP)
    providers = await _providers(settings, stack)
    provider = providers.default
    await _usage(settings, UsageStore(redis.client, shards=shards), stack)
    await reached(StartStep.PROVIDER)

    apps = AppStore(redis.client)
    grace = settings.shutdown_grace_seconds

    dispatcher: Dispatcher | None = None
    if settings.role is not Role.API:
        dispatcher = Dispatcher(
            store,
            DispatchQueue(redis, shards=shards),
            provider,
            config=DispatchConfig.from_settings(settings),
            texts=TextCipher(secret),
            optouts=OptOutStore(redis.client),
            providers=providers.by_name,
            routes=providers.routes,
            gate=gate,
            leases=ShardLeases(
                LeaseStore(redis.client),
                process=f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
                shards=shards,
                lease_seconds=lease_seconds(settings.visibility_timeout_seconds),
            ),
        )
        # Registered first: stop() also releases a start that failed half-way.
        stack.push_async_callback(dispatcher.stop, grace)
        await dispatcher.start()
        await reached(StartStep.DISPATCHER)

    guard = RequestGuard(apps, cache_seconds=settings.auth_cache_seconds)
    # A revoked app is refused at once on every replica, not when its cache
    # entry expires; a gap in the subscription drops the whole cache.
    revocations = asyncio.create_task(
        apps.follow_revocations(guard.cache.forget, guard.cache.clear), name="revocations"
    )
    stack.push_async_callback(cancel_and_wait, [revocations], timeout=2.0)
    # The guard wraps handlers as they are registered: no per-call interceptor.
    server = guard.guarding(grpc.aio.server(options=_grpc_options(settings)))
    ran = False

    async def stop_server() -> None:
        # A bound server that never started keeps its listening socket, even
        # after stop() and garbage collection, until it has run once.
        if not ran:
            await server.start()
        await server.stop(grace)

    stack.push_async_callback(stop_server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    hub: WatchHub | None = None
    if settings.role is not Role.WORKER:
        hub = WatchHub(
            EventStore(redis.client, redis.reader, shards),
            TokenSealer(secret),
            buffer=settings.watch_buffer,
            retention_seconds=settings.event_retention_seconds,
            admission=_admission(settings, redis, shards),
        )
        reply_hub = ReplyHub(ReplyStore(redis.client, redis.reader), hub.tokens)
        # Before server.stop(): open streams end with UNAVAILABLE, so their
        # clients reconnect elsewhere instead of holding the grace period.
        stack.push_async_callback(hub.close)
        stack.push_async_callback(reply_hub.close)
        _add_services(server, settings, store, redis, hub, reply_hub, secret)
    _add_reflection(server)
    connect.serve(guard)
    grpc_port = _listen(server, settings)
    await reached(StartStep.GRPC)

    await server.start()
    ran = True
    stack.push_async_callback(_not_serving, health, serving)
    # A worker-only process serves no smsgate service: only the overall status.
    served = SERVICE_NAMES if settings.role is not Role.WORKER else []
    for name in ["", *served]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    serving.set()
    # The dev app exists before "smsgate serving" is logged: whoever waits for
    # that line (a person, a test, a script) can read its token at once.
    if settings.embedded_redis and settings.create_dev_app and settings.role is not Role.WORKER:
        await _dev_app(apps, settings, grpc_port)
    log.info(
        "smsgate serving",
        extra={"grpc_port": grpc_port, "http_port": http_port, "role": settings.role.value},
    )
    await reached(StartStep.SERVING)
    return Running(
        settings=settings,
        grpc_port=grpc_port,
        http_port=http_port,
        server=server,
        health=health,
        redis=redis,
        store=store,
        apps=apps,
        provider=provider,
        dispatcher=dispatcher,
        hub=hub,
        resources=stack,
    )


async def _embedded_redis(data_dir: Path, stack: AsyncExitStack) -> str:
    """Start the data directory's redis-server; its URL."""
    check_data_dir_free(data_dir)
    embedded = EmbeddedRedis(data_dir)
    # start() stops its own child when it fails.
    url = await asyncio.to_thread(embedded.start)
    stack.push_async_callback(asyncio.to_thread, embedded.stop)
    log.info("embedded redis started", extra={"url": url, "dir": str(data_dir)})
    return url


async def _redis(url: str, settings: Settings, stack: AsyncExitStack) -> RedisConnection:
    try:
        redis = await connect(url, pool_size=settings.redis_pool_size)
    except Unavailable as exc:
        raise StartError(
            f"{exc}. Check SMSGATE_REDIS_URL, or unset it to run an embedded Redis."
        ) from None
    stack.push_async_callback(redis.aclose)
    return redis


async def _check_replicas(redis: RedisConnection, settings: Settings) -> None:
    """Warn when accepting waits for replicas some master does not have: its
    shards answer UNAVAILABLE until they are there."""
    if not settings.wait_replicas:
        return
    try:
        short = await masters_short_of_replicas(redis, settings.wait_replicas)
    except Unavailable:
        return  # Redis went away since it answered a moment ago: accepting will tell
    if short:
        log.warning(
            f"SMSGATE_REDIS_WAIT_REPLICAS={settings.wait_replicas}, but fewer replicas are "
            f"connected to {', '.join(short)}: accepts there answer UNAVAILABLE until they "
            "are back (or set SMSGATE_REDIS_WAIT_REPLICAS=0 to accept without waiting)"
        )


async def _check_durability(redis: RedisConnection, url: str, settings: Settings) -> None:
    """Refuse a Redis that would lose data silently (no persistence, or keys
    evicted under memory pressure), unless SMSGATE_REDIS_ALLOW_VOLATILE says to
    go on; warn where we cannot tell."""
    where = {"redis": redact_url(url)}
    try:
        durability = await read_durability(redis.client)
    except Unavailable as exc:
        raise StartError(f"{exc}. Check SMSGATE_REDIS_URL.") from None
    if durability is None:
        log.warning(
            "cannot check Redis persistence and eviction (CONFIG GET refused): make sure "
            "it persists its data and its maxmemory-policy is noeviction",
            extra=where,
        )
        return
    losses = []
    if not durability.persistent:
        losses.append("it persists nothing (appendonly no, no save points): a restart loses all")
    if durability.evicts:
        losses.append(
            f"its maxmemory-policy is {durability.eviction_policy}: when full it deletes keys"
        )
    if losses:
        problem = f"Redis at {where['redis']} would lose data silently: " + "; ".join(losses)
        if not settings.redis_allow_volatile:
            raise StartError(
                f"{problem}. Turn on AOF (appendonly yes) and set maxmemory-policy noeviction, "
                "or set SMSGATE_REDIS_ALLOW_VOLATILE=true to start anyway"
            )
        log.warning(problem + "; starting anyway (SMSGATE_REDIS_ALLOW_VOLATILE)", extra=where)
    elif not durability.aof:
        log.warning(
            "Redis persists by RDB snapshots only: what was accepted since the last one "
            "is lost if Redis dies; turn on AOF (appendonly yes)",
            extra=where,
        )


async def _shard_layout(redis: RedisConnection, settings: Settings) -> ShardLayout:
    """The shards the data may use: the most ever recorded, raised to
    SMSGATE_SHARDS (growing is online; a lower count drains the shards above it)."""
    try:
        layout = await record_shard_count(redis.client, settings.shards)
    except Unavailable as exc:
        raise StartError(f"{exc}. Check SMSGATE_REDIS_URL.") from None
    if layout.shards > settings.shards:
        log.warning(
            "the data in Redis uses more shards than SMSGATE_SHARDS: new messages go to "
            "the first SMSGATE_SHARDS of them, all are read",
            extra={"shards": layout.shards, "SMSGATE_SHARDS": settings.shards},
        )
    return layout


def _receipt_routes(settings: Settings, store: MessageStore) -> list[Route]:
    """The vendors' receipt callbacks, one per account of the providers file
    (every replica serves them all: any may get a receipt of any message)."""
    if settings.providers_file is None:
        return []
    try:
        entries = load_providers_file(settings.providers_file)
    except ProvidersFileError as exc:
        raise StartError(str(exc)) from None
    endpoints = receipt_endpoints(entries)
    return receipt_routes(
        endpoints, ReceiptIntake(store), public_base_url=settings.public_base_url
    ) + inbound_routes(
        endpoints,
        OptOutStore(store.redis),
        ReplyStore(store.redis),
        settings.stop_keywords,
        public_base_url=settings.public_base_url,
    )


async def _http_side_port(
    address: str,
    ready: Callable[[], Awaitable[bool]],
    receipts: list[Route],
    stack: AsyncExitStack,
    api: list[BaseRoute],
    providers: list[Route],
) -> int:
    """Bind and serve the side port; its port number."""
    sock = _bind_http(address)
    stack.callback(sock.close)
    http = HttpSidePort(build_app(ready, receipts, api, providers), *parse_address(address))
    task = asyncio.create_task(http.serve(sock), name="http")
    stack.push_async_callback(_stop_http, http, task)
    return int(sock.getsockname()[1])


def _provider_gate(
    settings: Settings, redis: RedisConnection
) -> tuple[RedisProviderGate, list[str]]:
    """The provider accounts' breakers and pace (shared by every replica through
    Redis), and the accounts /providers shows: SMSGATE_PROVIDER's, then the
    providers file's."""
    try:
        entries = load_providers_file(settings.providers_file) if settings.providers_file else {}
    except ProvidersFileError as exc:
        raise StartError(str(exc)) from None
    accounts = [settings.provider, *(n for n in entries if n != settings.provider)]
    return gate_from_settings(settings, redis.client, entries), accounts


async def _stop_http(http: HttpSidePort, task: asyncio.Task[None]) -> None:
    http.stop()
    await asyncio.wait([task], timeout=HTTP_STOP_SECONDS)
    await cancel_and_wait([task], timeout=1.0)


async def _providers(settings: Settings, stack: AsyncExitStack) -> ProviderSet:
    try:
        return await stack.enter_async_context(open_providers(settings))
    except (UnknownProviderError, ProvidersFileError) as exc:
        raise StartError(str(exc)) from None


async def _not_serving(health: health_aio.HealthServicer, serving: asyncio.Event) -> None:
    serving.clear()
    await health.enter_graceful_shutdown()


def _grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        # What actually bounds the wait for a keepalive ack in grpc core (its
        # default is a minute): a peer that fell silent (host gone, process
        # stopped) is dropped, and its streams cancelled, 10 s after a ping.
        ("grpc.http2.ping_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        # The largest valid BatchSend, with margin (api/limits.py): anything
        # larger is refused before it is read into memory and parsed.
        ("grpc.max_receive_message_length", _max_request_bytes(settings)),
        # Only the processes of one SMSGATE_PROCESSES group share the port; a
        # lone server must not (gRPC's default is on), or a second server on a
        # taken port would start and take part of the first one's calls.
        ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
    ]


def _max_request_bytes(settings: Settings) -> int:
    return max_request_bytes(
        batch_max_recipients=settings.batch_max_recipients,
        max_text_segments=settings.max_text_segments,
        max_labels=settings.max_labels,
    )


def _add_services(
    server: grpc.aio.Server,
    settings: Settings,
    store: MessageStore,
    redis: RedisConnection,
    hub: WatchHub,
    reply_hub: ReplyHub,
    secret: bytes,
) -> None:
    """Register the smsgate servicers (processes whose role serves the API)."""
    ttl = settings.idempotency_ttl_seconds
    templates = TemplateStore(redis.client, idempotency_ttl_seconds=ttl)
    signs = SignStore(redis.client)
    optouts = OptOutStore(redis.client)
    policy = SendingPolicy(
        PolicyStore(redis.client), PolicySettings.from_settings(settings), secret
    )
    sending = SendingService(
        store,
        SendLimits.from_settings(settings),
        hub.tokens,
        texts=TextCipher(secret),
        admission=hub.admission,
        composer=Composer(templates, signs),
        policy=policy,
    )
    sms_service_pb2_grpc.add_SmsServiceServicer_to_server(SmsServicer(sending, hub), server)
    verification = VerificationService(
        CodeStore(
            redis.client,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        ),
        sending,
        CodeSigner(secret),
        CodePolicy.from_settings(settings),
    )
    verification_service_pb2_grpc.add_VerificationServiceServicer_to_server(
        VerificationServicer(verification), server
    )
    template_service_pb2_grpc.add_TemplateServiceServicer_to_server(
        TemplateServicer(TemplateService(templates, hub.tokens, messages=store, signs=signs)),
        server,
    )
    sign_service_pb2_grpc.add_SignServiceServicer_to_server(
        SignServicer(SignService(signs)), server
    )
    opt_out_service_pb2_grpc.add_OptOutServiceServicer_to_server(
        OptOutServicer(OptOutService(optouts, hub.tokens)), server
    )
    inbound_service_pb2_grpc.add_InboundServiceServicer_to_server(
        InboundServicer(ReplyService(reply_hub.store, hub.tokens), reply_hub), server
    )
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(UsageService(UsageStore(redis.client, shards=store.shards))), server
    )


async def _usage(settings: Settings, usage: UsageStore, stack: AsyncExitStack) -> None:
    """Price the messages settled from now on by the providers file's price
    table, and publish the usage totals as metrics until shutdown."""
    try:
        prices = load_prices(settings.providers_file)
    except PricesError as exc:
        raise StartError(str(exc)) from None
    await usage.configure(prices, retention_seconds=settings.usage_retention_days * 86_400)
    metrics = asyncio.create_task(UsageMetrics(usage).run(), name="usage-metrics")
    stack.push_async_callback(cancel_and_wait, [metrics], timeout=2.0)


def _admission(settings: Settings, redis: RedisConnection, shards: int) -> Admission:
    """Each app's fair share (SMSGATE_APP_*, SMSGATE_REDIS_MAX_MEMORY_BYTES, ...)."""
    return Admission(
        QuotaStore(
            redis.client,
            shards=shards,
            message_retention_seconds=settings.message_retention_seconds,
        ),
        AdmissionPolicy.from_settings(settings),
    )


def _add_reflection(server: grpc.aio.Server) -> None:
    reflection.enable_server_reflection(
        [
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )


def _listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind the gRPC address, with TLS (and mTLS) when configured; the port."""
    address = settings.grpc_address
    try:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            port = server.add_insecure_port(address)
        else:
            client_ca = settings.tls_client_ca_file
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
                root_certificates=client_ca.read_bytes() if client_ca else None,
                require_client_auth=client_ca is not None,
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise StartError(f"cannot listen on SMSGATE_GRPC_ADDRESS={address}: {exc}") from None
    if port == 0:
        raise StartError(
            f"cannot listen on SMSGATE_GRPC_ADDRESS={address}: port in use or address not available"
        )
    return port


def bind_address(address: str, setting: str) -> socket.socket:
    """A TCP socket bound (without SO_REUSEPORT) to ``address``, the value of
    ``setting``; StartError naming the setting when the address is taken."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {setting}={address}: {exc}") from None
    return sock


def _bind_http(address: str) -> socket.socket:
    sock = bind_address(address, "SMSGATE_HTTP_ADDRESS")
    sock.listen(128)
    sock.setblocking(False)
    return sock
