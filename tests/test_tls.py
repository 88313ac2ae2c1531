"""TLS and mTLS on the gRPC listener, with certificates made for the test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.config import Settings

from tests.conftest import ServerFactory
from tests.support import bearer

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

Key = ec.EllipticCurvePrivateKey


def _cert(
    subject: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("smsgate test CA", ca_key, None, ca=True)
    ca_crt, _ = _write(tmp_path / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_crt, server_key_path = _write(
        tmp_path / "server", _cert("127.0.0.1", server_key, (ca, ca_key), ca=False), server_key
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_crt, client_key_path = _write(
        tmp_path / "client", _cert("client", client_key, (ca, ca_key), ca=False), client_key
    )
    return {
        "ca": ca_crt, "server_crt": server_crt, "server_key": server_key_path,
        "client_crt": client_crt, "client_key": client_key_path,
    }  # fmt: skip


async def _send(target: str, credentials: grpc.ChannelCredentials | None, token: str) -> None:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub: SmsServiceAsyncStub = SmsServiceStub(channel)
        await stub.SendSms(
            pb.SendSmsRequest(phone_number="+14155550123", text="tls"),
            metadata=bearer(token),
            timeout=5,
        )


async def test_tls_listener_serves_tls_clients_only(
    make_server: ServerFactory, pki: dict[str, Path]
) -> None:
    server = await make_server(tls_cert_file=pki["server_crt"], tls_key_file=pki["server_key"])
    token = (await server.apps.create("a")).token
    target = f"127.0.0.1:{server.grpc_port}"

    await _send(target, grpc.ssl_channel_credentials(pki["ca"].read_bytes()), token)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(target, None, token)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_listener_requires_a_client_certificate(
    make_server: ServerFactory, pki: dict[str, Path]
) -> None:
    server = await make_server(
        tls_cert_file=pki["server_crt"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca"],
    )
    token = (await server.apps.create("a")).token
    target = f"127.0.0.1:{server.grpc_port}"
    ca = pki["ca"].read_bytes()

    await _send(
        target,
        grpc.ssl_channel_credentials(
            ca, pki["client_key"].read_bytes(), pki["client_crt"].read_bytes()
        ),
        token,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(target, grpc.ssl_channel_credentials(ca), token)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_must_come_together(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(tls_cert_file=pki["server_crt"])
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(tls_cert_file=tmp_path / "missing.crt", tls_key_file=pki["server_key"])
