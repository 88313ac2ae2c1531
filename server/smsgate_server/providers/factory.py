"""The providers a process sends through, built from a registry of adapters:
the one named by ``SMSGATE_PROVIDER`` (the default), and every one the routes
of the providers file name.

A provider plugs in with one entry in ``PROVIDERS``: its name and a builder
that takes the settings and, when it talks HTTP, the shared
``httpx.AsyncClient`` (created on first request, closed after the providers).
Each account in the providers file (``SMSGATE_PROVIDERS_FILE``) adds one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import httpx

from smsgate_server.config import Settings
from smsgate_server.providers.base import Provider
from smsgate_server.providers.providers_file import (
    Route,
    VendorEntry,
    build_vendor,
    load_providers_file,
    load_routes,
)
from smsgate_server.providers.simulator import SimulatorProvider

__all__ = [
    "PROVIDERS",
    "HttpClient",
    "ProviderBuilder",
    "ProviderSet",
    "UnknownProviderError",
    "open_provider",
    "open_providers",
]

# Per request; a vendor may pass its own. The dispatcher bounds a whole call.
HTTP_TIMEOUT_SECONDS = 10.0
# Connections kept open per process, across every vendor host.
HTTP_MAX_CONNECTIONS = 200

# Gives the shared HTTP client, creating it on the first call.
HttpClient = Callable[[], httpx.AsyncClient]


class ProviderBuilder(Protocol):
    """Makes a provider from the settings; calls ``http()`` only if it needs HTTP."""

    def __call__(self, settings: Settings, http: HttpClient) -> Provider: ...


class UnknownProviderError(LookupError):
    """``SMSGATE_PROVIDER`` names no registered provider."""


def _simulator(settings: Settings, http: HttpClient) -> Provider:
    return SimulatorProvider(
        latency_ms=settings.sim_latency_ms,
        failure_rate=settings.sim_failure_rate,
        permanent_failure_rate=settings.sim_permanent_failure_rate,
        undelivered_rate=settings.sim_undelivered_rate,
        receipt_delay_ms=settings.sim_receipt_delay_ms,
        seed=settings.sim_seed,
        log_path=settings.sim_log,
        max_batch=settings.sim_max_batch,
    )


def _vendor(name: str, entry: VendorEntry, settings: Settings, http: HttpClient) -> Provider:
    return build_vendor(name, entry, http())


PROVIDERS: Mapping[str, ProviderBuilder] = {
    "simulator": _simulator,
}


def _registry(
    settings: Settings, builders: Mapping[str, ProviderBuilder]
) -> dict[str, ProviderBuilder]:
    """The builders, with one per account of the providers file (read now, so a
    bad file stops the start naming its key)."""
    registry = dict(builders)
    if settings.providers_file is not None:
        for name, entry in load_providers_file(settings.providers_file).items():
            registry[name] = partial(_vendor, name, entry)
    return registry


@dataclass(frozen=True, slots=True)
class ProviderSet:
    """The open providers: ``default`` (``SMSGATE_PROVIDER``'s), and by name
    every provider a process may send through (the default and each one the
    routes name); ``routes`` as the providers file gives them (empty: the
    default takes everything)."""

    default: Provider
    by_name: Mapping[str, Provider]
    routes: list[Route] = field(default_factory=list)


@asynccontextmanager
async def open_provider(
    settings: Settings, *, builders: Mapping[str, ProviderBuilder] = PROVIDERS
) -> AsyncIterator[Provider]:
    """The provider ``settings.provider`` names; on exit it is closed, then its HTTP client."""
    async with open_providers(settings, builders=builders) as providers:
        yield providers.default


@asynccontextmanager
async def open_providers(
    settings: Settings, *, builders: Mapping[str, ProviderBuilder] = PROVIDERS
) -> AsyncIterator[ProviderSet]:
    """The default provider and every provider the routes name; on exit they
    are closed, then their HTTP client."""
    registry = _registry(settings, builders)
    if settings.provider not in registry:
        raise UnknownProviderError(
            f"SMSGATE_PROVIDER={settings.provider!r} is not a known provider; "
            f"known: {', '.join(sorted(registry))}"
        )
    routes = (
        load_routes(settings.providers_file, registry)
        if settings.providers_file is not None
        else []
    )
    names = [settings.provider]
    for route in routes:
        names += [n for n in route.providers if n not in names]
    async with AsyncExitStack() as stack:
        client: httpx.AsyncClient | None = None

        def http() -> httpx.AsyncClient:
            nonlocal client
            if client is None:
                # HTTP/2 where the vendor offers it (ALPN), else HTTP/1.1 keep-alive.
                client = httpx.AsyncClient(
                    http2=True,
                    timeout=HTTP_TIMEOUT_SECONDS,
                    limits=httpx.Limits(max_connections=HTTP_MAX_CONNECTIONS),
                )
                stack.push_async_callback(client.aclose)
            return client

        opened: dict[str, Provider] = {}
        for name in names:
            provider = registry[name](settings, http)
            stack.push_async_callback(provider.aclose)
            opened[name] = provider
        yield ProviderSet(opened[settings.provider], opened, routes)
