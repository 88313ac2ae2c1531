"""The benchmark harness runs end to end: ``python -m bench --smoke`` starts
Redis, the echo ceiling and a real smsgate-server process, drives them from a
client process for about a second each, and writes its JSON. No timing is
asserted; only that the machinery works and measured real calls."""

from __future__ import annotations

from pathlib import Path

from tests.support import bench_smoke


def test_bench_smoke_run_writes_echo_and_sendsms_rows(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    rows = {row["scenario"]: row for row in bench_smoke("bench", out, timeout=120)["rows"]}
    echo = next(row for name, row in rows.items() if name.startswith("echo@"))
    assert echo["requests"] > 0
    assert echo["errors"] == 0
    assert rows["sendsms"]["requests"] > 0
    assert rows["sendsms"]["errors"] == 0
    assert rows["sendsms"]["echo_rate_ratio"] is not None
