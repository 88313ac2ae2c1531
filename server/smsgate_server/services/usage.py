"""UsageService: an app's messages, segments and cost per day, by status,
provider and country (counted by the message scripts; store/usage.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass

from smsgate_server.domain.errors import InvalidArgument, Unavailable
from smsgate_server.domain.prices import MICROS
from smsgate_server.domain.status import Status
from smsgate_server.logs import RepeatedLog
from smsgate_server.store.usage import UsageRow, UsageStore
from smsgate_server.usage_metrics import REFRESH_SECONDS, USAGE_METRICS, UsageCount

__all__ = ["MAX_DAYS", "CurrencyTotal", "Usage", "UsageMetrics", "UsageService", "day_date"]

log = logging.getLogger("smsgate.usage")
_refresh_failed = RepeatedLog(
    log, "cannot read the usage totals for /metrics", every=60.0, level=logging.ERROR
)
# The longest range one call reads: a quarter (and a row per day, status,
# provider and country stays a bounded answer).
MAX_DAYS = 93
_EPOCH = dt.date(1970, 1, 1)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """What the messages that entered SENT cost, in one currency."""

    currency: str
    messages: int
    segments: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Usage:
    """The rows of a range of days and the totals of what was sent."""

    rows: list[UsageRow]
    totals: list[CurrencyTotal]


def day_date(day: int) -> str:
    """Days since 1970-01-01 as YYYY-MM-DD."""
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


class UsageService:
    """Reads an app's usage, only ever its own."""

    def __init__(self, store: UsageStore) -> None:
        self.store = store

    async def get(self, app: str, start_date: str, end_date: str) -> Usage:
        """The app's usage from ``start_date`` to ``end_date`` (YYYY-MM-DD, UTC,
        both included); InvalidArgument naming the field at fault."""
        first = _day(start_date, "start_date")
        last = _day(end_date, "end_date")
        if last < first:
            raise InvalidArgument.field("end_date", f"must be on or after start_date {start_date}")
        if last - first + 1 > MAX_DAYS:
            raise InvalidArgument.field(
                "end_date",
                f"spans {last - first + 1} days from start_date; at most {MAX_DAYS} are allowed",
            )
        rows = await self.store.days(app, first, last)
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for row in rows:
            if row.key.status is Status.SENT:
                total = sums[row.key.currency]
                total[0] += row.messages
                total[1] += row.segments
                total[2] += row.cost_micros
        totals = [CurrencyTotal(c, *v) for c, v in sorted(sums.items())]
        return Usage(rows, totals)


def _day(text: str, field: str) -> int:
    if not text:
        raise InvalidArgument.field(field, "is required, a day as YYYY-MM-DD (UTC)")
    try:
        if not _DATE.match(text):
            raise ValueError
        date = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument.field(field, f"{text!r} is not a day as YYYY-MM-DD") from None
    if date < _EPOCH:
        raise InvalidArgument.field(field, "must be 1970-01-01 or later")
    return (date - _EPOCH).days


class UsageMetrics:
    """Publishes the usage totals as Prometheus counters (usage_metrics.py),
    read from Redis every ``interval`` seconds."""

    def __init__(self, store: UsageStore, *, interval: float = REFRESH_SECONDS) -> None:
        self.store = store
        self.interval = interval

    async def refresh(self) -> None:
        """Read the totals now and publish them."""
        totals = await self.store.totals()
        USAGE_METRICS.publish(
            UsageCount(
                provider=t.key.provider,
                country=t.key.region,
                status=t.key.status.name.lower(),
                currency=t.key.currency,
                messages=t.messages,
                segments=t.segments,
                cost=t.cost_micros / MICROS,
            )
            for t in totals
        )

    async def run(self) -> None:
        """Refresh until cancelled; a failed reading is skipped (a Redis outage
        is logged by the store, anything else here), the last one stays
        published."""
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Unavailable:
                pass
            except Exception as exc:
                _refresh_failed.occurred(type(exc).__name__, exc=exc)
            await asyncio.sleep(self.interval)
