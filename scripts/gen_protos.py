"""Generate the smsgate.v1 Python stubs (and .pyi type stubs) from proto/.

Usage: python scripts/gen_protos.py OUT_DIR

The test suite runs this into a temporary directory and compares the result
with what is committed under clients/python, so stale stubs fail CI.

The stubs ship in the client distribution (clients/python/pyproject.toml),
which promises the oldest grpcio and protobuf it declares. Two checks that
the generator embeds would break that promise, so they are rewritten here:

- ``*_pb2.py``: protoc 7.35 emits ``ValidateProtobufRuntimeVersion(7, 35, 1)``,
  which refuses every runtime older than 7.35.1. The code it guards is
  byte for byte what protoc 5.26.1 (grpcio-tools 1.63) generates for these
  protos, and that version emitted no check, so the call is dropped.
- ``*_pb2_grpc.py``: ``GRPC_GENERATED_VERSION`` names the grpcio-tools
  release; it is lowered to the client's grpcio floor (1.64 is the first
  with ``add_registered_method_handlers``, which the servicer half calls).

tests/test_client_floors.py installs the client with exactly the declared
floors into a fresh virtualenv and calls a live server, so a proto change
that needs a newer runtime fails there.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
CLIENT_PYPROJECT = ROOT / "clients" / "python" / "pyproject.toml"

_PROTOBUF_CHECK = re.compile(
    r"from google\.protobuf import runtime_version as _runtime_version\n"
    r"|_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:    .*\n)*?\)\n"
)
_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.MULTILINE)


def declared_floor(distribution: str) -> str:
    """The lower bound (``>=X``) the client's pyproject.toml declares for ``distribution``."""
    project = tomllib.loads(CLIENT_PYPROJECT.read_text())["project"]
    for requirement in project["dependencies"]:
        found = re.fullmatch(rf"{re.escape(distribution)}\s*>=\s*([\w.]+)\s*,.*", requirement)
        if found:
            return found.group(1)
    raise SystemExit(f"{CLIENT_PYPROJECT} declares no '{distribution}>=' requirement")


def _lower_version_checks(out_dir: Path) -> None:
    """Rewrite the generator's version checks to the client's declared floors."""
    grpc_floor = declared_floor("grpcio")
    for path in sorted((out_dir / "smsgate" / "v1").glob("*_pb2*.py")):
        text = path.read_text()
        if path.name.endswith("_pb2.py"):
            text, found = _PROTOBUF_CHECK.subn("", text)
            if found != 2:
                raise SystemExit(f"{path}: protobuf version check not found; update gen_protos.py")
        else:
            text, found = _GRPC_VERSION.subn(f"GRPC_GENERATED_VERSION = '{grpc_floor}'", text)
            if found != 1:
                raise SystemExit(f"{path}: GRPC_GENERATED_VERSION not found; update gen_protos.py")
        path.write_text(text)


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and their .pyi files for every proto."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bin_dir = str(Path(sys.executable).parent)
    # protoc finds the mypy-protobuf plugins (protoc-gen-mypy*) on PATH.
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    _lower_version_checks(out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    generate(Path(sys.argv[1]))
