"""Times as the Chinese clouds write them: ``YYYY-MM-DD hh:mm:ss`` in Beijing
time, without a zone (report times, send dates of queries)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

__all__ = ["BEIJING", "beijing_ms"]

BEIJING = timezone(timedelta(hours=8))
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def beijing_ms(value: str) -> int:
    """Unix ms of a vendor's ``YYYY-MM-DD hh:mm:ss`` Beijing time; 0 when absent
    or unreadable (the time is a detail: the outcome still counts)."""
    try:
        moment = datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return 0
    return int(moment.timestamp() * 1000)
