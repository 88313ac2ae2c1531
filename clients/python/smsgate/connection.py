"""Where and how a client connects: target, app token, TLS, and the channel
options every smsgate channel gets (retries of UNAVAILABLE, keepalive)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TLS", "Backoff", "Connection"]

DEFAULT_TARGET = "127.0.0.1:50051"

# gRPC retries these calls itself on UNAVAILABLE (the server is restarting, a
# replica went away, storage was briefly unreachable). Only calls that are safe
# to repeat: reads, and writes that carry a request_id, which the client always
# sets, so a repeat returns the first result. CancelMessage, GenerateCode,
# VerifyCode and template updates are left out (a repeat could cancel, issue or
# spend twice, or answer FAILED_PRECONDITION for the first attempt's work);
# WatchStatus reconnects in Client.watch with its resume token instead.
_RETRIED = {
    "smsgate.v1.SmsService": ("SendSms", "BatchSend", "GetMessage", "ListMessages"),
    "smsgate.v1.TemplateService": (
        "CreateTemplate",
        "GetTemplate",
        "ListTemplates",
        "RenderTemplate",
    ),
}
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in _RETRIED.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS toward the server: PEM roots to trust (None: the system's), and a
    client certificate and key for mTLS."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    #: The name to check the server's certificate against, when not the target's host.
    server_name: str | None = None

    @classmethod
    def from_files(
        cls,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
    ) -> TLS:
        """TLS settings read from PEM files."""

        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return cls(read(ca_file), read(cert_file), read(key_file), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A target, the app token calls carry, and optional TLS."""

    target: str
    token: str
    tls: TLS | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Connection:
        """Read ``SMSGATE_TARGET`` (default 127.0.0.1:50051), ``SMSGATE_TOKEN``
        (required) and, for TLS, ``SMSGATE_TLS=1`` with the optional
        ``SMSGATE_TLS_CA_FILE``, ``SMSGATE_TLS_CLIENT_CERT_FILE``,
        ``SMSGATE_TLS_CLIENT_KEY_FILE`` and ``SMSGATE_TLS_SERVER_NAME``."""
        env = os.environ if environ is None else environ
        token = env.get("SMSGATE_TOKEN", "")
        if not token:
            raise ValueError("SMSGATE_TOKEN is not set: the app token, <app_key>.<app_secret>")
        tls = None
        if env.get("SMSGATE_TLS", "").lower() in {"1", "true", "yes", "on"}:
            tls = TLS.from_files(
                env.get("SMSGATE_TLS_CA_FILE"),
                env.get("SMSGATE_TLS_CLIENT_CERT_FILE"),
                env.get("SMSGATE_TLS_CLIENT_KEY_FILE"),
                env.get("SMSGATE_TLS_SERVER_NAME"),
            )
        return cls(env.get("SMSGATE_TARGET", DEFAULT_TARGET), token, tls)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries."""
        return (("authorization", f"Bearer {self.token}"),)

    def options(self) -> list[tuple[str, str | int]]:
        """Channel options: the retry policy, and keepalive so a watch notices a
        server host that vanished without closing its connection."""
        options: list[tuple[str, str | int]] = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # Not more often: a gRPC server by default answers pings closer than
            # 5 minutes on a quiet connection (a watch with no events) with
            # GOAWAY "too_many_pings". A restarted server closes the connection,
            # which is noticed at once.
            ("grpc.keepalive_time_ms", 300_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.target, options=self.options())
        return grpc.secure_channel(self.target, self.tls.credentials(), options=self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(self.target, options=self.options())
        return grpc.aio.secure_channel(self.target, self.tls.credentials(), options=self.options())


class Backoff:
    """Delays between reconnects: doubling from ``first`` to ``most`` seconds,
    each with full jitter, back to ``first`` after a success."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self.first, self.most = first, most
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def delay(self, hint: float | None = None) -> float:
        """The next delay; a server's RetryInfo ``hint`` wins when given."""
        if hint is not None:
            return hint
        delay = random.uniform(0, self._next)
        self._next = min(self.most, self._next * 2)
        return delay
