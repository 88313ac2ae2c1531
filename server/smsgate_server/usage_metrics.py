"""The usage counts as Prometheus metrics: messages, segments and cost by
provider, country and status, over every app.

They are the totals the message scripts keep in Redis (store/usage.py), so
every replica reports the same, whole-system figures: aggregate them across
replicas with ``max``, not ``sum``. A task of each process reads them every
``REFRESH_SECONDS`` (services/usage.py ``UsageMetrics``); a scrape serves the
last reading. Label values are bounded: statuses, the configured providers,
ISO 3166 regions and ISO 4217 currencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["REFRESH_SECONDS", "USAGE_METRICS", "UsageCount", "UsageMetricsCollector"]

# How often each process reads the totals from Redis.
REFRESH_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class UsageCount:
    """One total: labels and counts (cost in units of ``currency``)."""

    provider: str
    country: str
    status: str
    currency: str
    messages: int
    segments: int
    cost: float


class UsageMetricsCollector(Collector):
    """Serves the last reading of the usage totals as counters."""

    def __init__(self) -> None:
        self._counts: Sequence[UsageCount] = ()

    def publish(self, counts: Iterable[UsageCount]) -> None:
        """Replace the reading a scrape serves."""
        self._counts = tuple(counts)

    def collect(self) -> Iterator[Metric]:
        labels = ["provider", "country", "status"]
        messages = CounterMetricFamily(
            "smsgate_usage_messages",
            "Messages that entered a status (sent or terminal), by provider, destination"
            " country and status; every replica reports the same totals (from Redis).",
            labels=labels,
        )
        segments = CounterMetricFamily(
            "smsgate_usage_segments",
            "SMS segments of the messages of smsgate_usage_messages_total.",
            labels=labels,
        )
        cost = CounterMetricFamily(
            "smsgate_usage_cost",
            "Estimated cost of those messages in units of currency (segments x the"
            ' provider\'s price for the country); what was spent is status="sent".',
            labels=[*labels, "currency"],
        )
        for c in self._counts:
            messages.add_metric([c.provider, c.country, c.status], c.messages)
            segments.add_metric([c.provider, c.country, c.status], c.segments)
            if c.currency:
                cost.add_metric([c.provider, c.country, c.status, c.currency], c.cost)
        yield messages
        yield segments
        yield cost


USAGE_METRICS = UsageMetricsCollector()
REGISTRY.register(USAGE_METRICS)
