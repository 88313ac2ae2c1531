"""One ``/metrics`` view over every process of ``SMSGATE_PROCESSES``:
prometheus-client's multi-process mode.

Each process writes its samples to memory-mapped files in one directory, named
by ``PROMETHEUS_MULTIPROC_DIR``, and any process's ``/metrics`` reads and merges
them all. prometheus_client chooses that mode when it is first imported, so the
command names the directory before it imports any module that defines a
metric; the parent marks a process dead when it exits, which drops its live
gauges (its counters stay in the totals).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV", "shared_metrics_dir"]

ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir(data_dir: Path) -> Iterator[Path]:
    """A fresh directory for the samples of this process's children, named in
    the environment they inherit; removed on exit."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"{ENV} must be set before prometheus_client is imported")
    _remove_orphans(data_dir)
    path = data_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)
    try:
        yield path
    finally:
        del os.environ[ENV]
        shutil.rmtree(path, ignore_errors=True)


def _remove_orphans(data_dir: Path) -> None:
    """Remove the directories of parents that died without removing theirs
    (``kill -9``), so they do not pile up in the data directory."""
    for path in data_dir.glob("metrics-*"):
        pid = path.name.removeprefix("metrics-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
