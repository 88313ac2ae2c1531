"""The cluster benchmark runs end to end: ``python -m bench.cluster --smoke``
starts the echo server, then api and worker processes on one Redis server and
on a 3-master Redis Cluster, drives each for about a second and writes its
JSON. No timing is asserted; only that both layouts measured real calls and
costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_cluster_smoke_run_measures_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["layout"] for r in results] == ["standalone", "cluster"]
    for r in results:
        assert r["row"]["requests"] > 0
        assert r["row"]["errors"] == 0
        # Every kind of node did some work for the messages accepted.
        assert r["cost"]["messages"] > 0
        assert min(r["cost"]["api"], r["cost"]["worker"], r["cost"]["redis"]) > 0
