"""Assembles and runs one server process: Redis, stores, dispatcher, gRPC and
the HTTP side port; and takes them down again in order."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from smsgate.v1 import (
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    verification_service_pb2,
    verification_service_pb2_grpc,
)

from smsgate_server.api.guard import RequestGuard
from smsgate_server.api.sms import SmsServicer
from smsgate_server.api.unbuilt import UnbuiltTemplateServicer
from smsgate_server.api.verification import VerificationServicer
from smsgate_server.config import Role, Settings, parse_address
from smsgate_server.dispatch.dispatcher import DispatchConfig, Dispatcher
from smsgate_server.domain.codes import CodeSigner, parse_secret
from smsgate_server.domain.errors import Unavailable
from smsgate_server.http import HttpSidePort, build_app
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.services.sending import SendingService, SendLimits
from smsgate_server.services.verification import CodePolicy, VerificationService
from smsgate_server.services.watch import WatchHub
from smsgate_server.store.apps import AppStore
from smsgate_server.store.codes import CodeStore
from smsgate_server.store.connection import RedisConnection, connect
from smsgate_server.store.embedded_redis import EmbeddedRedis, running_url
from smsgate_server.store.events import EventStore
from smsgate_server.store.messages import MessageStore
from smsgate_server.store.queue import DispatchQueue

__all__ = ["Running", "StartError", "start"]

log = logging.getLogger("smsgate.server")

SERVICE_NAMES = [
    sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"].full_name,
    verification_service_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name,
    template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
]


class StartError(RuntimeError):
    """The server cannot start; the message says why and what to do."""


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
    provider: SimulatorProvider
    dispatcher: Dispatcher | None
    hub: WatchHub | None
    http: HttpSidePort
    http_task: asyncio.Task[None]
    embedded: EmbeddedRedis | None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        """Health NOT_SERVING, refuse new calls, let running ones finish, stop
        the dispatcher, close Redis, stop the embedded Redis."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        grace = self.settings.shutdown_grace_seconds
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        if self.hub is not None:
            # Streams end with UNAVAILABLE so clients reconnect elsewhere.
            await self.hub.close()
        await self.server.stop(grace)
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        await self.provider.aclose()
        self.http.stop()
        await asyncio.wait([self.http_task], timeout=5)
        await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("stopped")


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


def code_policy(settings: Settings) -> CodePolicy:
    """The server-wide verification policy from settings."""
    return CodePolicy(
        max_attempts=settings.verify_max_attempts,
        resend_cooldown_ms=int(settings.verify_resend_cooldown_seconds * 1000),
        per_number_hour=settings.verify_per_number_hour,
        per_number_day=settings.verify_per_number_day,
        per_app_minute=settings.verify_per_minute,
        allowed_countries=settings.verify_allowed_countries,
    )


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
        "\nsmsgate is running with an embedded Redis and the simulator provider.\n"
        f"Development app token (also in {path}):\n\n  {token}\n\n"
        "Try:\n"
        "  buf curl --protocol grpc --http2-prior-knowledge \\\n"
        f"    -H 'authorization: Bearer {token}' \\\n"
        '    -d \'{"phone_number": "+14155550123", "text": "hello"}\' \\\n'
        f"    http://{host}:{grpc_port}/smsgate.v1.SmsService/SendSms\n",
        flush=True,
    )


def _listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind the gRPC address, with TLS (and mTLS) when configured."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return server.add_insecure_port(settings.grpc_address)
    client_ca = settings.tls_client_ca_file
    credentials = grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(settings.grpc_address, credentials)


def _bind_http(address: str) -> socket.socket:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on SMSGATE_HTTP_ADDRESS={address}: {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start(settings: Settings) -> Running:
    """Start everything; raise StartError with a clear message when something is wrong."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        if running_url(settings.data_dir) is not None:
            raise StartError(
                f"another smsgate-server is using the data directory {settings.data_dir}; "
                "stop it, or set SMSGATE_DATA_DIR to another directory"
            )
        embedded = EmbeddedRedis(settings.data_dir)
        url = await asyncio.to_thread(embedded.start)
        log.info("embedded redis started", extra={"url": url, "dir": str(settings.data_dir)})
    else:
        url = settings.redis_url
    try:
        return await _start_on(settings, url, embedded)
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise


async def _start_on(settings: Settings, url: str, embedded: EmbeddedRedis | None) -> Running:
    try:
        redis = await connect(url, pool_size=settings.redis_pool_size)
    except Unavailable as exc:
        raise StartError(
            f"{exc}. Check SMSGATE_REDIS_URL, or unset it to run an embedded Redis."
        ) from None
    store = MessageStore(
        redis.client,
        shards=settings.shards,
        event_retention_seconds=settings.event_retention_seconds,
        message_retention_seconds=settings.message_retention_seconds,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        receipt_timeout_seconds=settings.receipt_timeout_seconds,
        schedule_max_days=settings.schedule_max_days,
        max_message_age_seconds=settings.max_message_age_seconds,
    )
    apps = AppStore(redis.client)
    provider = SimulatorProvider(
        latency_ms=settings.sim_latency_ms,
        failure_rate=settings.sim_failure_rate,
        permanent_failure_rate=settings.sim_permanent_failure_rate,
        undelivered_rate=settings.sim_undelivered_rate,
        receipt_delay_ms=settings.sim_receipt_delay_ms,
        seed=settings.sim_seed,
        log_path=settings.sim_log,
        max_batch=settings.sim_max_batch,
    )
    sending = SendingService(
        store,
        SendLimits(
            max_text_segments=settings.max_text_segments,
            max_labels=settings.max_labels,
            schedule_max_days=settings.schedule_max_days,
            batch_max_recipients=settings.batch_max_recipients,
        ),
    )

    hub: WatchHub | None = None
    guard = RequestGuard(apps, cache_seconds=settings.auth_cache_seconds)
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        # 10,000 recipients fit many times over; far larger is not a request.
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.so_reuseport", 1),
    ]
    # The guard wraps handlers as they are registered: no per-call interceptor.
    server = guard.guarding(grpc.aio.server(options=options))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if settings.role is not Role.WORKER:
        hub = WatchHub(
            EventStore(redis.client, redis.reader, settings.shards),
            buffer=settings.watch_buffer,
            retention_seconds=settings.event_retention_seconds,
        )
        sms_service_pb2_grpc.add_SmsServiceServicer_to_server(SmsServicer(sending, hub), server)
        verification = VerificationService(
            CodeStore(redis.client),
            sending,
            CodeSigner(load_server_secret(settings)),
            code_policy(settings),
        )
        verification_service_pb2_grpc.add_VerificationServiceServicer_to_server(
            VerificationServicer(verification), server
        )
        template_service_pb2_grpc.add_TemplateServiceServicer_to_server(
            UnbuiltTemplateServicer(), server
        )
    reflection.enable_server_reflection(
        [
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )

    async def release() -> None:
        """Undo what has started when a listener cannot bind."""
        if hub is not None:
            await hub.close()
        await redis.aclose()

    try:
        grpc_port = _listen(server, settings)
    except RuntimeError as exc:
        grpc_port = 0
        bind_error = str(exc)
    else:
        bind_error = "port in use or address not available"
    if grpc_port == 0 and not settings.grpc_address.endswith(":0"):
        await release()
        raise StartError(
            f"cannot listen on SMSGATE_GRPC_ADDRESS={settings.grpc_address}: {bind_error}"
        )

    try:
        http_sock = _bind_http(settings.http_address)
    except StartError:
        await release()
        raise
    http_port = int(http_sock.getsockname()[1])

    dispatcher: Dispatcher | None = None
    if settings.role is not Role.API:
        dispatcher = Dispatcher(
            store,
            DispatchQueue(redis, shards=settings.shards),
            provider,
            config=DispatchConfig.from_settings(settings),
        )
        await dispatcher.start()

    stopped = asyncio.Event()

    async def healthy() -> bool:
        if stopped.is_set():
            return False
        return await redis.healthy()

    http = HttpSidePort(build_app(healthy), *parse_address(settings.http_address))
    http_task = asyncio.create_task(http.serve(http_sock), name="http")
    await server.start()
    # A worker-only process serves no smsgate service: only the overall status.
    served = SERVICE_NAMES if settings.role is not Role.WORKER else []
    for name in ["", *served]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "smsgate serving",
        extra={"grpc_port": grpc_port, "http_port": http_port, "role": settings.role.value},
    )
    if embedded is not None and settings.create_dev_app and settings.role is not Role.WORKER:
        await _dev_app(apps, settings, grpc_port)
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
        http=http,
        http_task=http_task,
        embedded=embedded,
        stopped=stopped,
    )
