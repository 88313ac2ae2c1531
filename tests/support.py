"""Helpers for tests: credentials metadata, decoding google.rpc details, and
the README's sessions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying an app token."""
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Details:
    """The google.rpc details of a failed call, unpacked."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    quota_subjects: list[str] = field(default_factory=list)


def details_of(err: grpc.aio.AioRpcError) -> Details:
    """Decode ErrorInfo, BadRequest, RetryInfo and QuotaFailure of an error."""
    out = Details(code=err.code(), message=err.details() or "")
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason, out.domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.fields.update({v.field: v.description for v in bad.field_violations})
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            out.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            out.quota_subjects += [v.subject for v in quota.violations]
    return out


ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_block(marker: str, fence: str = "sh") -> str:
    """The first ```fence code block after ``marker`` in the README."""
    text = README.read_text()
    return text[text.index(marker) :].split(f"```{fence}\n", 1)[1].split("```", 1)[0]


async def run_shell(
    block: str, *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``block`` with ``bash -euo pipefail`` (as pasted into a terminal
    that stops at the first error); its exit code, stdout and stderr. The
    event loop keeps serving an in-process server meanwhile."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", block, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def bench_smoke(module: str, out: Path, *, timeout: float) -> Any:
    """Runs ``python -m <module> --smoke --out <out>`` from the repository root;
    the JSON it wrote (its output is the failure message if it fails)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())
