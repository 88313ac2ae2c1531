"""The provider registry behind SMSGATE_PROVIDER."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from smsgate_server.config import Settings
from smsgate_server.providers.base import (
    Capabilities,
    ContentKind,
    OutboundBatch,
    OutcomeClass,
    RecipientResult,
)
from smsgate_server.providers.factory import (
    PROVIDERS,
    HttpClient,
    UnknownProviderError,
    open_provider,
    open_providers,
)
from smsgate_server.providers.providers_file import ProvidersFileError
from smsgate_server.providers.simulator import SimulatorProvider
from smsgate_server.providers.twilio import TwilioProvider


class HttpVendor:
    """A provider that talks HTTP, recording whether its client was open when it closed."""

    name = "http-vendor"
    capabilities = Capabilities(1, 1, ContentKind.TEXT)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.client_open_at_close: bool | None = None

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        return [RecipientResult(OutcomeClass.ACCEPTED, r.reference) for r in batch.recipients]

    async def aclose(self) -> None:
        self.client_open_at_close = not self.client.is_closed


def http_vendor(settings: Settings, http: HttpClient) -> HttpVendor:
    # Asked twice: the shared client is made once.
    assert http() is http()
    return HttpVendor(http())


def settings_for(provider: str, tmp_path: Path) -> Settings:
    return Settings(provider=provider, data_dir=tmp_path)


async def test_the_default_provider_is_the_simulator(tmp_path: Path) -> None:
    async with open_provider(Settings(data_dir=tmp_path)) as provider:
        assert isinstance(provider, SimulatorProvider)


async def test_a_provider_closes_before_the_http_client_it_was_given(tmp_path: Path) -> None:
    builders = {**PROVIDERS, "http-vendor": http_vendor}
    async with open_provider(settings_for("http-vendor", tmp_path), builders=builders) as p:
        assert isinstance(p, HttpVendor)
        assert not p.client.is_closed
    assert p.client_open_at_close is True
    assert p.client.is_closed


async def test_an_unknown_provider_names_the_variable_and_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownProviderError) as raised:
        async with open_provider(settings_for("smoke-signals", tmp_path)):
            pass
    assert "SMSGATE_PROVIDER='smoke-signals'" in str(raised.value)
    assert "known: simulator" in str(raised.value)


TWILIO = """
[providers.twilio_us]
type = "twilio"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "SMSGATE_TEST_TWILIO_TOKEN"
from_number = "+15005550006"
"""


async def test_an_account_of_the_providers_file_is_a_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSGATE_TEST_TWILIO_TOKEN", "token")
    (tmp_path / "providers.toml").write_text(TWILIO)
    settings = Settings(
        provider="twilio_us", providers_file=tmp_path / "providers.toml", data_dir=tmp_path
    )

    async with open_provider(settings) as provider:
        assert isinstance(provider, TwilioProvider)
        assert provider.name == "twilio_us"


async def test_a_bad_providers_file_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "providers.toml").write_text(TWILIO.replace("auth_token_env", "auth_tokn"))
    settings = Settings(
        provider="twilio_us", providers_file=tmp_path / "providers.toml", data_dir=tmp_path
    )

    with pytest.raises(ProvidersFileError, match=r"providers\.twilio_us\.auth_token: required"):
        async with open_provider(settings):
            pass


async def test_every_provider_a_route_names_is_opened_beside_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSGATE_TEST_TWILIO_TOKEN", "token")
    (tmp_path / "providers.toml").write_text(
        TWILIO
        + '[[routes]]\ndestination = "US"\nproviders = ["twilio_us", "simulator"]\n'
        + '[[routes]]\ndestination = "default"\nproviders = ["simulator"]\n'
    )
    settings = Settings(providers_file=tmp_path / "providers.toml", data_dir=tmp_path)

    async with open_providers(settings) as providers:
        assert isinstance(providers.default, SimulatorProvider)
        assert sorted(providers.by_name) == ["simulator", "twilio_us"]
        assert isinstance(providers.by_name["twilio_us"], TwilioProvider)
        assert [r.destination for r in providers.routes] == ["US", "default"]
