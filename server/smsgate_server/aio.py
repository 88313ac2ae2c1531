"""asyncio helpers every layer may use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger("smsgate.aio")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, timeout: float) -> None:
    """Cancel ``tasks`` and wait up to ``timeout`` seconds for them to end (bounded:
    a task that ignores its cancellation is logged and left behind)."""
    tasks = set(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        # Retrieved here, so a task that failed before its cancellation is
        # logged once instead of as "exception was never retrieved".
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task failed", extra={"task": task.get_name()}, exc_info=exc)
    if pending:
        log.warning(
            "tasks still running after cancellation",
            extra={"tasks": sorted(t.get_name() for t in pending), "timeout": timeout},
        )
