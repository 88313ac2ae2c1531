"""Run a local Redis Cluster (3 masters, 3 replicas, AOF on) until Ctrl-C.

Usage: python scripts/cluster.py [DIR]   (make cluster; DIR defaults to .smsgate/cluster)

The same cluster the tests use (tests/cluster.py), on free loopback ports. It
prints the SMSGATE_REDIS_URL to give smsgate replicas; Ctrl-C stops every node.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import LocalCluster  # noqa: E402 - after the path is set


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".smsgate" / "cluster"
    base.mkdir(parents=True, exist_ok=True)
    # A fresh directory per run: nodes.conf of an earlier cluster would not match.
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="run-", dir=base)))
    try:
        url = cluster.start()
        print(f"Redis Cluster ready in {cluster.base_dir}", flush=True)
        for node in cluster.nodes:
            role = node.info("replication").get("role")
            print(f"  {node.address}  {'master' if role == 'master' else 'replica'}")
        print(f"\nexport SMSGATE_REDIS_URL={url}\n\nCtrl-C stops it.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        print("cluster stopped", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM stops it like Ctrl-C. The nodes run in process groups of their
    # own, so Ctrl-C reaches this process only, which stops them in order.
    signal.signal(signal.SIGTERM, _interrupt)
    main()
