"""The benchmark harness runs end to end: ``python -m bench --smoke`` starts
Redis, the echo ceiling and a real smsgate-server process, drives them from a
client process for about a second each, and writes its JSON. No timing is
asserted; only that the machinery works and measured real calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_writes_echo_and_sendsms_rows(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["scenario"]: row for row in json.loads(out.read_text())["rows"]}
    echo = next(row for name, row in rows.items() if name.startswith("echo@"))
    assert echo["requests"] > 0
    assert echo["errors"] == 0
    assert rows["sendsms"]["requests"] > 0
    assert rows["sendsms"]["errors"] == 0
    assert rows["sendsms"]["echo_rate_ratio"] is not None
