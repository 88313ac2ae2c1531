"""The providers file: vendor accounts by name, secrets from the environment,
and a message naming the key at fault when it is wrong."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from smsgate_server.providers.base import ContentKind
from smsgate_server.providers.providers_file import (
    ProvidersFileError,
    TencentEntry,
    build_vendor,
    load_providers_file,
)

GOOD = """
[providers.tencent_cn]
type = "tencent"
secret_id = "AKIDexample"
secret_key_env = "TENCENT_SECRET_KEY"
sdk_app_id = "1400000001"
regions = ["CN"]

[providers.aliyun]
type = "aliyun"
access_key_id_env = "ALIYUN_KEY_ID"
access_key_secret_env = "ALIYUN_KEY_SECRET"
concurrency = 4

[providers.twilio]
type = "twilio"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "TWILIO_AUTH_TOKEN"
from_number = "+15005550006"
timeout_seconds = 5
"""
ENV = {
    "TENCENT_SECRET_KEY": "tencent-s3cret",
    "ALIYUN_KEY_ID": "LTAIexample",
    "ALIYUN_KEY_SECRET": "aliyun-s3cret",
    "TWILIO_AUTH_TOKEN": "twilio-s3cret",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_declares_each_provider_by_name(tmp_path: Path) -> None:
    entries = load_providers_file(write(tmp_path, GOOD), ENV)

    assert sorted(entries) == ["aliyun", "tencent_cn", "twilio"]
    tencent = entries["tencent_cn"]
    assert isinstance(tencent, TencentEntry)
    assert tencent.secret_key.get_secret_value() == "tencent-s3cret"
    assert tencent.regions == frozenset({"CN"})
    assert "s3cret" not in repr(entries)


async def test_each_entry_builds_its_adapter(tmp_path: Path) -> None:
    entries = load_providers_file(write(tmp_path, GOOD), ENV)

    async with httpx.AsyncClient() as http:
        built = {name: build_vendor(name, entry, http) for name, entry in entries.items()}

    assert {name: p.name for name, p in built.items()} == {n: n for n in entries}
    assert built["tencent_cn"].capabilities.max_recipients == 200
    assert built["tencent_cn"].capabilities.regions == frozenset({"CN"})
    assert built["aliyun"].capabilities.max_personalized == 100
    assert built["twilio"].capabilities.content is ContentKind.TEXT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[providers.x]\ntype = 'nexmo'\n", "providers.x.type:"),
        ("[providers.x]\nsecret_id = 'a'\n", "providers.x.type:"),
        (
            "[providers.t]\ntype = 'tencent'\nsecret_id = 'a'\nsdk_app_id = '1'\n",
            "providers.t.secret_key: required (or secret_key_env",
        ),
        (
            "[providers.t]\ntype = 'tencent'\nsecret_id = 'a'\nsdk_app_id = '1'\n"
            "secret_key_env = 'NOT_SET_ANYWHERE'\n",
            "providers.t.secret_key_env: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "[providers.t]\ntype = 'tencent'\nsecret_id = 'a'\nsdk_app_id = '1'\n"
            "secret_key = 'k'\nsecret_key_env = 'TENCENT_SECRET_KEY'\n",
            "providers.t.secret_key_env: give secret_key or secret_key_env, not both",
        ),
        (
            "[providers.t]\ntype = 'tencent'\nsecret_id = 'a'\nsdk_app_id = '1'\n"
            "secret_key = 'k'\nsign = 'x'\n",
            "providers.t.sign: not a setting of this provider type",
        ),
        (
            "[providers.a]\ntype = 'aliyun'\naccess_key_id = 'a'\naccess_key_secret = 'b'\n"
            "concurrency = 0\n",
            "providers.a.concurrency:",
        ),
        (
            "[providers.a]\ntype = 'aliyun'\naccess_key_id = 'a'\naccess_key_secret = 'b'\n"
            "regions = ['china']\n",
            "providers.a.regions",
        ),
        (
            "[providers.w]\ntype = 'twilio'\naccount_sid = 'AC0123456789abcdef0123456789abcdef'\n"
            "auth_token = 't'\n",
            "providers.w: set exactly one of from_number and messaging_service_sid",
        ),
        ("[providers.Tencent-CN]\ntype = 'tencent'\n", "providers.Tencent-CN: a name must match"),
        ("[providers.simulator]\ntype = 'tencent'\n", "providers.simulator: the name"),
        ("[providers]\n", "no [providers.NAME] table"),
        ("[vendors.x]\ntype = 'tencent'\n", "unknown key 'vendors'"),
        ("[providers.x\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_key_at_fault(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ProvidersFileError) as raised:
        load_providers_file(path, ENV)

    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_an_error_never_shows_a_secret(tmp_path: Path) -> None:
    text = (
        "[providers.t]\ntype = 'tencent'\nsecret_id = 'a'\nsdk_app_id = '1'\n"
        "secret_key = 'the-secret-value'\ntimeout_seconds = 'the-secret-value'\n"
    )

    with pytest.raises(ProvidersFileError) as raised:
        load_providers_file(write(tmp_path, text), ENV)

    assert "providers.t.timeout_seconds" in str(raised.value)
    assert "the-secret-value" not in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProvidersFileError, match="cannot read it"):
        load_providers_file(tmp_path / "absent.toml", ENV)
