"""The client distribution keeps its promise: installed alone into a fresh
virtualenv with exactly the lowest grpcio, protobuf and googleapis-common-protos
that clients/python/pyproject.toml declares, it brings none of the server's
dependencies, imports every stub, and talks to a live server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from smsgate_server.runtime import Running

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
SERVER_ONLY = ("redis", "hiredis", "starlette", "uvicorn", "grpcio-status", "smsgate-server")

# Run inside the fresh virtualenv: every stub imports, then a send, a wait for
# delivery and a typed error, printed as JSON.
SCRIPT = """
import importlib, json, pkgutil, sys
from importlib import metadata
import smsgate, smsgate.v1
import smsgate.cli, smsgate.terminal  # the CLI imports without its rich extra
for module in pkgutil.iter_modules(smsgate.v1.__path__):
    importlib.import_module("smsgate.v1." + module.name)
with smsgate.Client(sys.argv[1], sys.argv[2]) as client:
    done = client.send_and_wait("+14155550123", "from the floors", timeout=20)
    try:
        client.send("12", "bad number")
    except smsgate.InvalidArgument as error:
        bad = [error.reason, [v.field for v in error.field_violations]]
print(json.dumps({
    "status": smsgate.MessageStatus.Name(done.status),
    "error": bad,
    "installed": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
    "versions": {n: metadata.version(n) for n in
                 ("grpcio", "protobuf", "googleapis-common-protos")},
}))
"""


def declared_floors() -> dict[str, str]:
    """``name -> lowest version`` of each dependency of the client distribution."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([\w.-]+)\s*>=\s*([\w.]+)\s*,.*", requirement)
        assert found, f"no lower bound in {requirement!r}"
        floors[found.group(1)] = found.group(2)
    return floors


async def run(*args: str | Path, timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"{args} failed:\n{out.decode()}\n{err.decode()}"
    return out.decode()


@pytest.mark.slow
async def test_the_client_works_on_its_lowest_declared_dependencies(
    server: Running, tmp_path: Path
) -> None:
    floors = declared_floors()
    assert set(floors) == {"grpcio", "protobuf", "googleapis-common-protos"}
    # Built from a copy: a build writes build/ and *.egg-info next to its sources.
    source = tmp_path / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    await run(sys.executable, "-m", "venv", venv, timeout=60)
    python = venv / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in floors.items()]
    await run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        source, *pins, timeout=180,
    )  # fmt: skip
    token = (await server.apps.create("floors")).token
    out = await run(python, "-c", SCRIPT, f"127.0.0.1:{server.grpc_port}", token, timeout=60)

    seen = json.loads(out)
    assert seen["versions"] == floors
    assert seen["status"] == "MESSAGE_STATUS_DELIVERED"
    assert seen["error"] == ["INVALID_PHONE_NUMBER", ["phone_number"]]
    assert not set(SERVER_ONLY) & set(seen["installed"]), seen["installed"]
    assert "rich" not in seen["installed"], "the CLI's rich is an extra (smsgate[cli])"
