"""The TypeScript client (clients/typescript): its generated code is fresh, its
tests (``node --test``) pass against a live ``smsgate-server`` that they may ask
to restart, and against one whose vendor account sends replies to their app,
and the README's TypeScript session works when pasted."""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.processes import ServerProcess, Servers
from tests.test_cli import dev_token
from tests.test_tls import pki  # noqa: F401 - the CA and certificates fixture
from tests.test_watch_replies import (
    TOKEN,
    Apps,
    apps,  # noqa: F401 - the replies server fixture
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
GENERATED = PACKAGE / "src" / "gen"
README = ROOT / "README.md"
BUF = Path(sys.executable).parent / "buf"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are not on PATH: the TypeScript client needs Node 20+",
)


@pytest.fixture(scope="module")
def built() -> Path:
    """clients/typescript with its packages installed (`npm ci`, as `make test`
    does first) and compiled to dist/."""
    assert NPM is not None
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True)
    done = subprocess.run(
        [NPM, "run", "build"], cwd=PACKAGE, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return PACKAGE / "dist"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_committed_typescript_code_matches_a_fresh_buf_generate(
    built: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(BUF), "generate", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fresh = tmp_path / GENERATED.relative_to(ROOT)
    assert _tree(fresh), "buf generate produced nothing"
    assert _tree(fresh) == _tree(GENERATED), "run `make gen` and commit the result"
    stale = [
        name
        for name in _tree(fresh)
        if not filecmp.cmp(fresh / name, GENERATED / name, shallow=False)
    ]
    assert not stale, f"stale generated TypeScript {stale}: run `make gen` and commit it"


def test_typescript_client_against_a_server_it_restarts(
    built: Path, servers: Servers, tmp_path: Path
) -> None:
    data_dir, control = tmp_path / "data", tmp_path / "control"
    control.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    server = servers.start(data_dir, GRPC_ADDRESS=address)
    env = dict(
        os.environ,
        SMSGATE_TARGET=address,
        SMSGATE_TOKEN=dev_token(data_dir),
        SMSGATE_TEST_CONTROL=str(control),
    )
    log = tmp_path / "node-test.log"
    with log.open("wb") as out:
        tests = subprocess.Popen(
            [str(NODE), "--test", "--test-reporter=spec", "dist/test/client.test.js"],
            cwd=PACKAGE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        restarted: ServerProcess | None = None
        while tests.poll() is None:
            if time.monotonic() > deadline:
                tests.kill()
                tests.wait()
                pytest.fail(f"node --test ran over 90 s:\n{log.read_text()}")
            if restarted is None and (control / "restart").exists():
                server.signal(signal.SIGTERM)
                assert server.wait_exit() == 0, server.stderr
                restarted = servers.start(data_dir, GRPC_ADDRESS=address)
                (control / "restarted").touch()
            time.sleep(0.05)

    output = log.read_text()
    assert tests.returncode == 0, output
    assert restarted is not None, f"the watch test never asked for a restart:\n{output}"
    assert re.search(r"^\S+ skipped 0$", output, re.MULTILINE), output


async def test_typescript_client_watches_replies(built: Path, apps: Apps) -> None:  # noqa: F811
    assert NODE is not None
    server = apps.server
    env = dict(
        os.environ,
        SMSGATE_TARGET=f"127.0.0.1:{server.grpc_port}",
        SMSGATE_TOKEN=apps.tokens["a"],
        SMSGATE_TEST_INBOUND_URL=f"http://127.0.0.1:{server.http_port}/inbound/tencent/{TOKEN}",
    )
    # The server runs in this event loop: node must not block it.
    node = await asyncio.create_subprocess_exec(
        NODE, "--test", "--test-reporter=spec", "dist/test/replies.test.js", cwd=PACKAGE,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(node.communicate(), 90)
    output = out.decode()

    assert node.returncode == 0, output
    assert re.search(r"^\S+ pass 3$", output, re.MULTILINE), output


def test_readme_typescript_session_works_when_pasted(
    built: Path, servers: Servers, tmp_path: Path
) -> None:
    marker = "<!-- readme-typescript"
    text = README.read_text()
    block = text[text.index(marker) :].split("```ts\n", 1)[1].split("```", 1)[0]
    assert len(block.splitlines()) < 15 + 1, "the README promises under 15 lines"
    script = tmp_path / "readme.mjs"
    entry = (built / "src" / "index.js").as_uri()
    script.write_text(block.replace('"@smsgate/client"', json.dumps(entry)))
    data_dir = tmp_path / "data"
    server = servers.start(data_dir)

    done = subprocess.run(
        [str(NODE), str(script)],
        env=dict(
            os.environ,
            SMSGATE_TARGET=f"127.0.0.1:{server.grpc_port}",
            SMSGATE_TOKEN=dev_token(data_dir),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "DELIVERED",
        "INVALID_ARGUMENT INVALID_PHONE_NUMBER [ 'phone_number' ]",
    ], done.stdout + done.stderr


SEND_ONE = """
import { MessageStatus, SmsgateClient } from %s;
const sent = await SmsgateClient.fromEnv().send("+14155550123", "over mTLS");
console.log(MessageStatus[sent.status]);
"""


async def test_typescript_client_speaks_mtls_from_the_environment(
    built: Path,
    make_server: ServerFactory,
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await make_server(
        tls_cert_file=pki["server_crt"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca"],
    )
    token = (await server.apps.create("ts")).token
    script = tmp_path / "send.mjs"
    script.write_text(SEND_ONE % json.dumps((built / "src" / "index.js").as_uri()))
    env = dict(
        os.environ,
        SMSGATE_TARGET=f"127.0.0.1:{server.grpc_port}",
        SMSGATE_TOKEN=token,
        SMSGATE_TLS="1",
        SMSGATE_TLS_CA_FILE=str(pki["ca"]),
        SMSGATE_TLS_CLIENT_CERT_FILE=str(pki["client_crt"]),
        SMSGATE_TLS_CLIENT_KEY_FILE=str(pki["client_key"]),
    )

    async def run(env: dict[str, str]) -> tuple[int | None, str]:
        assert NODE is not None
        node = await asyncio.create_subprocess_exec(
            NODE, str(script), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(node.communicate(), 60)
        return node.returncode, out.decode()

    assert await run(env) == (0, "QUEUED\n")
    without_cert = {k: v for k, v in env.items() if not k.startswith("SMSGATE_TLS_CLIENT")}
    code, out = await run(without_cert)
    assert code != 0, out
    # The server refuses the handshake; Node sees the HTTP/2 stream closed.
    assert "SmsgateError" in out, out
