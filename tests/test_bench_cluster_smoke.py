"""The cluster benchmark runs end to end: ``python -m bench.cluster --smoke``
starts the echo server, then api and worker processes on one Redis server and
on a 3-master Redis Cluster, drives each for about a second and writes its
JSON. No timing is asserted; only that both layouts measured real calls and
costs."""

from __future__ import annotations

from pathlib import Path

from tests.support import bench_smoke


def test_bench_cluster_smoke_run_measures_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    results = bench_smoke("bench.cluster", out, timeout=110)["results"]
    assert [r["layout"] for r in results] == ["standalone", "cluster"]
    for r in results:
        assert r["row"]["requests"] > 0
        assert r["row"]["errors"] == 0
        # Every kind of node did some work for the messages accepted.
        assert r["cost"]["messages"] > 0
        assert min(r["cost"]["api"], r["cost"]["worker"], r["cost"]["redis"]) > 0
