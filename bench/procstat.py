"""CPU time and resident memory of a process tree, read from ``/proc``.

No psutil: ``/proc/<pid>/stat`` has utime/stime in clock ticks and
``/proc/<pid>/status`` has VmRSS in kB. The tree matters because the server
may fork worker processes (``SMSGATE_PROCESSES``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeSample", "cpu_percent", "sample_tree"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class TreeSample:
    """CPU seconds (user + system) and RSS (bytes) summed over a process tree."""

    cpu_seconds: float
    rss_bytes: int
    processes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def _children(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_tree(root: int, *, exclude: frozenset[int] = frozenset()) -> TreeSample:
    """CPU and RSS of ``root`` and its descendants (minus ``exclude``)."""
    cpu, rss, count = 0.0, 0, 0
    for pid in _children(root):
        if pid in exclude:
            continue
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields 14 and 15 of stat (1-based) are utime and stime; we dropped 2.
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS
        rss += _rss(pid)
        count += 1
    return TreeSample(cpu, rss, count)


def cpu_percent(before: TreeSample, after: TreeSample, seconds: float) -> float:
    """CPU use between two samples, in percent of one core."""
    if seconds <= 0:
        return 0.0
    return 100.0 * (after.cpu_seconds - before.cpu_seconds) / seconds
