"""Settings, read from ``SMSGATE_*`` environment variables and validated at start-up."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smsgate_server.domain.codes import parse_secret
from smsgate_server.domain.phone import parse_calling_code
from smsgate_server.domain.policy import QuietHours
from smsgate_server.redis_urls import is_cluster_url, parse_cluster_url

__all__ = ["Role", "Settings", "parse_address", "unknown_variables"]

ENV_PREFIX = "SMSGATE_"
# SMSGATE_SHARDS when unset (0), by kind of Redis (Settings.shards).
CLUSTER_SHARDS = 64
STANDALONE_SHARDS = 16
# SMSGATE_* names that are no server setting but may share its environment:
# the clients' (smsgate.Connection.from_env, the TypeScript client's fromEnv)
# and, with the prefix TEST_, the test suite's.
CLIENT_VARIABLES = frozenset(
    {
        "TARGET",
        "TOKEN",
        "TLS",
        "TLS_CA_FILE",
        "TLS_CLIENT_CERT_FILE",
        "TLS_CLIENT_KEY_FILE",
        "TLS_SERVER_NAME",
    }
)
_TEST_PREFIX = "TEST_"


class Role(enum.StrEnum):
    """What a server process does: serve the API, dispatch messages, or both."""

    ALL = "all"
    API = "api"
    WORKER = "worker"


def parse_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6) and check the port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range 0-65535")
    return host.strip("[]"), port


class Settings(BaseSettings):
    """Every setting of the server; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    grpc_address: str = "127.0.0.1:50051"
    http_address: str = "127.0.0.1:8080"
    # The API over HTTP/JSON (Connect) on the side port; off where that port
    # is published for vendors' receipts and callers must use gRPC.
    http_api: bool = True
    data_dir: Path = Path(".smsgate")
    redis_url: str | None = None
    # Start on a Redis that persists nothing or evicts keys (see runtime's
    # durability check), with a warning; for throw-away setups only.
    redis_allow_volatile: bool = False
    role: Role = Role.ALL
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    # TLS on the gRPC listener (PEM files); with a client CA, clients must
    # present a certificate it signed (mTLS). Unset: plaintext (loopback/dev).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Run the event loop on uvloop (where installed); grpc.aio and redis.asyncio
    # work on it, and it measures faster (bench/RESULTS.md).
    uvloop: bool = True
    # Server processes sharing the gRPC port (SO_REUSEPORT, only when above 1),
    # forked before any gRPC object exists. One event loop tops out at a few
    # thousand calls/s.
    processes: int = Field(default=1, ge=1, le=64)

    # Redis layout: the shards (queues, one hash tag each) new messages are
    # spread over; 0 picks 64 on a cluster (well above its masters, so slots
    # spread over every node) and 16 on one Redis server: there 64 shards make
    # vendor calls smaller and cut end-to-end delivered/s by a third, and 4 put
    # so many messages in each accept script that BatchSend halved (quick bench,
    # 2026-11-26: 12,000-12,400 recipients/s at 4, 19,200-20,600 at 16, with
    # end-to-end and watch lag alike; bench/RESULTS.md). Raising it later is online; the
    # largest count ever used is recorded in Redis (store/layout.py).
    shards: int = Field(default=0, ge=0, le=256)
    redis_pool_size: int = Field(default=64, ge=4, le=4096)
    # Redis replicates asynchronously: a master that fails right after a write
    # takes it along. Accepting waits until this many replicas have the messages
    # (WAIT on the connection of the write), else answers UNAVAILABLE and the
    # client's retry with its request_id is safe. Unset: 1 on a cluster, 0 on
    # one server.
    redis_wait_replicas: int | None = Field(default=None, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)

    # Apps.
    create_dev_app: bool = True
    auth_cache_seconds: float = Field(default=30.0, ge=0, le=3600)

    # Messages.
    max_text_segments: int = Field(default=10, ge=1, le=255)
    max_labels: int = Field(default=16, ge=0, le=64)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    batch_max_recipients: int = Field(default=10_000, ge=1, le=100_000)
    schedule_max_days: int = Field(default=35, ge=1, le=366)
    message_retention_seconds: int = Field(default=7 * 86_400, ge=60)

    # Fair share. Per app: accepted messages per second (a BatchSend counts its
    # recipients; a bucket of this many seconds of the rate absorbs bursts) and
    # messages held in Redis; an app's own values (``apps create``) win. Per app
    # and process: ListMessages and WatchStatus catch-ups running at once. For
    # all: no accepts while Redis uses more than the watermark of its memory
    # (this cap when set, else Redis's maxmemory; neither: no watermark).
    # Memory and held counts are read at most once per check interval.
    app_accept_per_second: int = Field(default=5_000, ge=1, le=10_000_000)
    app_accept_burst_seconds: float = Field(default=2.0, gt=0, le=3600)
    app_max_held_messages: int = Field(default=2_000_000, ge=1)
    app_max_concurrent_queries: int = Field(default=1, ge=1, le=10_000)
    redis_max_memory_bytes: int = Field(default=0, ge=0)
    redis_memory_watermark: float = Field(default=0.9, gt=0, le=1)
    quota_check_seconds: float = Field(default=1.0, ge=0, le=60)

    # Dispatch.
    # A name in providers/factory.py's registry or the providers file, checked
    # when the server starts.
    provider: str = "simulator"
    # TOML file of vendor accounts ([providers.NAME]; providers/providers_file.py).
    providers_file: Path | None = None
    # Days the per-day usage counts (GetUsage) are kept after their day.
    usage_retention_days: int = Field(default=400, ge=1, le=3660)
    # The side port's URL as vendors call it (https://sms.example.com), when a
    # proxy stands between: Twilio signs the URL it called. Unset: the URL of
    # the request as it arrives.
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    # Replies that opt the sender out of an app's marketing ("STOP,TD"), any case.
    stop_keywords: Annotated[frozenset[str], NoDecode] = frozenset(
        {"STOP", "UNSUBSCRIBE", "TD", "退订", "拒收", "R"}
    )
    dispatch_concurrency: int = Field(default=256, ge=1, le=10_000)
    visibility_timeout_seconds: float = Field(default=30.0, gt=0)
    # With base 1 s and full jitter, 10 attempts span minutes of vendor outage.
    max_attempts: int = Field(default=10, ge=1, le=50)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # Both bound how long a message can live, so how long its index entries
    # must last: a week of retries or of waiting for a receipt is past any use.
    max_message_age_seconds: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    receipt_timeout_seconds: float = Field(default=259_200.0, gt=0, le=7 * 86_400)
    # A SENT message without receipt this long is asked about at its vendor
    # (again every as long) until its receipt timeout: below the timeout, so
    # the vendor is asked before the message is let expire. Unset: an hour, or
    # half the receipt timeout when that is shorter (see ``reconcile_after``).
    reconcile_after_seconds: float | None = Field(default=None, gt=0)
    sweep_interval_seconds: float = Field(default=0.2, gt=0, le=10)

    # Provider circuit breakers (dispatch/guard.py), shared by every replica in
    # Redis. A breaker opens after this many call failures in a row, or when at
    # least the rate of the calls of the window failed (with at least the
    # minimum calls in it); it stays open for the cooldown, then lets one probe
    # call through (held at most the probe lease). Each process reuses what it
    # read of a breaker for the cache time.
    breaker_consecutive_failures: int = Field(default=5, ge=1, le=10_000)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_seconds: float = Field(default=30.0, ge=1, le=3600)
    breaker_min_calls: int = Field(default=20, ge=1, le=1_000_000)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    breaker_probe_lease_seconds: float = Field(default=15.0, gt=0, le=600)
    breaker_cache_seconds: float = Field(default=0.25, ge=0, le=10)
    # Provider pacing: the rates are per account in the providers file. A throttle
    # from the vendor halves the account's rate (not below the floor, a fraction of
    # its configured rate); it grows back by the step every recover interval.
    pace_floor: float = Field(default=0.1, gt=0, le=1)
    pace_recover_step: float = Field(default=0.1, gt=0, le=1)
    pace_recover_seconds: float = Field(default=5.0, gt=0, le=3600)

    # Verification codes. The server secret keys the HMACs of codes and ids:
    # hex or any string of at least 16 bytes; unset, one is generated in the data
    # directory (replicas on one Redis must share it).
    server_secret: SecretStr | None = None
    verify_max_attempts: int = Field(default=5, ge=1, le=20)
    verify_resend_cooldown_seconds: float = Field(default=60.0, ge=0, le=86_400)
    verify_per_number_hour: int = Field(default=5, ge=1, le=10_000)
    verify_per_number_day: int = Field(default=10, ge=1, le=100_000)
    # Per app; an app's own value (``apps create --verify-per-minute``) wins.
    verify_per_minute: int = Field(default=60, ge=1, le=1_000_000)
    # Calling codes codes may be sent to ("86,1"); empty allows all. An app's own
    # list (``apps create --allow-country``) wins.
    verify_allowed_countries: Annotated[frozenset[int], NoDecode] = frozenset()

    # Sending policy (services/policy.py). Per number, for notification and
    # marketing messages (free text counts as a notification; codes have the
    # caps above): the same content at most once per this many seconds, at most
    # this many messages a calendar day (Tencent's defaults; 0: no cap). Per
    # app, every kind: messages a day (0: no cap), with a metric of the share
    # used and a warning past the ratio. Days are calendar days in the zone.
    # Marketing due in the quiet hours of the recipient's local time
    # (HH:MM-HH:MM, or off) is held until they end. An app's own values
    # (``apps set-policy``) win.
    policy_same_content_seconds: int = Field(default=30, ge=0, le=86_400)
    policy_per_number_day: int = Field(default=10, ge=0, le=1_000_000)
    policy_app_daily_cap: int = Field(default=0, ge=0)
    policy_app_daily_warning: float = Field(default=0.8, gt=0, le=1)
    policy_quiet_hours: str = "21:00-08:00"
    policy_day_zone: str = "UTC"

    # Status events (WatchStatus).
    event_retention_seconds: int = Field(default=86_400, ge=60)
    watch_buffer: int = Field(default=10_000, ge=10)
    keepalive_seconds: float = Field(default=30.0, gt=0)

    # Simulator provider.
    sim_latency_ms: float = Field(default=20.0, ge=0)
    sim_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_permanent_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_undelivered_rate: float = Field(default=0.0, ge=0, le=1)
    sim_receipt_delay_ms: float = Field(default=200.0, ge=0)
    sim_seed: int | None = None
    sim_log: Path | None = None
    # Messages of the same text per provider call (Tencent takes 200 numbers).
    sim_max_batch: int = Field(default=200, ge=1, le=1000)

    @field_validator("grpc_address", "http_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if is_cluster_url(value):
            parse_cluster_url(value)  # ValueError says what is wrong
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss:// or unix:// (one server), "
                "or redis+cluster:// or rediss+cluster:// (a cluster)"
            )
        return value

    @field_validator("server_secret")
    @classmethod
    def _server_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(parse_secret(value.get_secret_value())) < 16:
            raise ValueError("must be at least 16 bytes: 32 hex digits, or 16 characters")
        return value

    @field_validator("verify_allowed_countries", mode="before")
    @classmethod
    def _countries(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        elif not isinstance(value, list | tuple | set | frozenset):
            value = [value]
        return frozenset(parse_calling_code(str(v)) for v in value)

    @field_validator("stop_keywords", mode="before")
    @classmethod
    def _stop_keywords(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        words = frozenset(str(v).strip() for v in value if str(v).strip())
        if not words:
            raise ValueError("must name at least one keyword")
        return words

    @field_validator("policy_quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        QuietHours.parse(value)  # ValueError says what is wrong
        return value

    @field_validator("policy_day_zone")
    @classmethod
    def _day_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is no IANA time zone (UTC, Asia/Shanghai, ...)") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @model_validator(mode="after")
    def _reconcile_before_expiry(self) -> Settings:
        if (
            self.reconcile_after_seconds is not None
            and self.reconcile_after_seconds >= self.receipt_timeout_seconds
        ):
            raise ValueError(
                "SMSGATE_RECONCILE_AFTER_SECONDS must be below SMSGATE_RECEIPT_TIMEOUT_SECONDS"
                " (the vendor is asked before a message without receipt expires)"
            )
        return self

    @model_validator(mode="after")
    def _default_shards(self) -> Settings:
        if self.shards == 0:
            self.shards = CLUSTER_SHARDS if self.on_cluster else STANDALONE_SHARDS
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("SMSGATE_TLS_CERT_FILE and SMSGATE_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("SMSGATE_TLS_CLIENT_CA_FILE needs SMSGATE_TLS_CERT_FILE")
        for path in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @property
    def reconcile_after(self) -> float:
        """Seconds a SENT message waits for its receipt before its vendor is asked."""
        if self.reconcile_after_seconds is not None:
            return self.reconcile_after_seconds
        return min(3_600.0, self.receipt_timeout_seconds / 2)

    @property
    def wait_replicas(self) -> int:
        """Replicas an accepted message must reach before the call answers OK."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.on_cluster else 0

    @property
    def on_cluster(self) -> bool:
        """SMSGATE_REDIS_URL names a Redis Cluster."""
        return self.redis_url is not None and is_cluster_url(self.redis_url)

    @property
    def embedded_redis(self) -> bool:
        """True when the server runs its own private redis-server."""
        return self.redis_url is None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``SMSGATE_*`` variables in ``environ`` that no setting reads, each
    with the closest setting's name when one is close (a likely misspelling)."""
    known = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        # Variable names are case-insensitive to pydantic-settings.
        prefix, rest = name[: len(ENV_PREFIX)].upper(), name[len(ENV_PREFIX) :].upper()
        if prefix != ENV_PREFIX or rest in known or rest in CLIENT_VARIABLES:
            continue
        if rest.startswith(_TEST_PREFIX):
            continue
        # Compared without the prefix they all share, which would make any
        # two names look alike.
        close = difflib.get_close_matches(rest, known, n=1)
        found.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
    return found
