"""The benchmark harness runs end to end: ``python -m bench --smoke`` starts
Redis, the echo ceiling and a real smsgate-server process (then an api-role
one with a worker-role process beside it), drives them from a client process
for about a second each, and writes its JSON. No timing is asserted; only that
the machinery works and measured real calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import bench_smoke


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rows of one smoke run (one run serves every test here: ~30 s)."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    return {row["scenario"]: row for row in bench_smoke("bench", out, timeout=120)["rows"]}


def test_bench_smoke_run_writes_echo_and_sendsms_rows(rows: dict[str, Any]) -> None:
    echo = next(row for name, row in rows.items() if name.startswith("echo@"))
    assert echo["requests"] > 0
    assert echo["errors"] == 0
    assert rows["sendsms"]["requests"] > 0
    assert rows["sendsms"]["errors"] == 0
    assert rows["sendsms"]["echo_rate_ratio"] is not None


def test_bench_smoke_run_measures_sendsms_against_an_api_process_with_a_worker_apart(
    rows: dict[str, Any],
) -> None:
    api = rows["sendsms-api"]
    assert api["requests"] > 0
    assert api["errors"] == 0
    # The worker-role process beside it dispatched what the api process accepted.
    assert api["worker_cpu_pct"] > 0
    assert "role api" in api["note"]
    # Then again with the worker stopped: the api process on its own.
    alone = rows["sendsms-api-alone"]
    assert alone["requests"] > 0
    assert alone["errors"] == 0
