"""Prometheus metrics, defined once; served on the HTTP side port at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "APP_DAILY_CAP_USED",
    "BREAKER_OPENS",
    "BREAKER_STATE",
    "PACE_RATE",
    "PACE_WAITS",
    "POLICY_REFUSALS",
    "PROVIDER_CALLS",
    "PROVIDER_SECONDS",
    "QUIET_HOURS_HELD",
    "RECEIPTS",
    "REPLIES",
    "REPLY_WATCH_SUBSCRIPTIONS",
    "RPCS",
    "RPC_SECONDS",
    "SEND_OUTCOMES",
    "WATCH_SUBSCRIPTIONS",
]

RPCS = Counter(
    "smsgate_rpcs_total", "gRPC calls handled, by method and status code.", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "smsgate_rpc_seconds",
    "Time to handle a unary gRPC call, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PROVIDER_CALLS = Counter(
    "smsgate_provider_calls_total",
    "Calls to a provider, by provider and result.",
    ["provider", "result"],
)
PROVIDER_SECONDS = Histogram(
    "smsgate_provider_seconds", "Duration of provider calls, by provider.", ["provider"]
)
SEND_OUTCOMES = Counter(
    "smsgate_send_outcomes_total",
    "Messages routed to a provider, by outcome (sent, unknown, retry, fail, failover, defer;"
    " provider none: no provider could take it).",
    ["provider", "outcome"],
)
RECEIPTS = Counter(
    "smsgate_receipts_total",
    "Delivery receipts, by provider and result: delivered, undelivered, ignored (the"
    " message had ended), early (held back until its send outcome is stored), dropped,"
    " unknown (a vendor's receipt for no message of ours, acknowledged),"
    " reconciled_delivered and reconciled_undelivered (learned by asking the vendor).",
    ["provider", "result"],
)
# Sending policy (services/policy.py).
POLICY_REFUSALS = Counter(
    "smsgate_policy_refusals_total",
    "Recipients refused by the sending policy, by cap: opted_out, same_content,"
    " number_day_cap, app_daily_cap.",
    ["cap"],
)
APP_DAILY_CAP_USED = Gauge(
    "smsgate_app_daily_cap_used_ratio",
    "The share of its daily message cap an app has used today, as last counted (apps with"
    " a cap; alert at SMSGATE_POLICY_APP_DAILY_WARNING).",
    ["app"],
    multiprocess_mode="livemax",
)
QUIET_HOURS_HELD = Counter(
    "smsgate_quiet_hours_held_total",
    "Marketing messages held until the quiet hours of their recipient ended.",
)
WATCH_SUBSCRIPTIONS = Gauge(
    "smsgate_watch_subscriptions",
    "WatchStatus streams open (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
REPLY_WATCH_SUBSCRIPTIONS = Gauge(
    "smsgate_reply_watch_subscriptions",
    "WatchReplies streams open (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
REPLIES = Counter(
    "smsgate_replies_total",
    "Replies (MO) stored for an app, by provider account and whether they opted the"
    " sender out (a STOP keyword).",
    ["provider", "opted_out"],
)

# Provider breakers and pacing (dispatch/guard.py).
BREAKER_STATE = Gauge(
    "smsgate_provider_breaker_state",
    "A provider's circuit breaker as this process last saw it: 0 closed, 1 open,"
    " 2 half-open (the highest of the live processes).",
    ["provider"],
    multiprocess_mode="livemax",
)
BREAKER_OPENS = Counter(
    "smsgate_provider_breaker_opens_total",
    "Times a provider's breaker opened (each counted once, by the process whose call opened it).",
    ["provider"],
)
PACE_WAITS = Counter(
    "smsgate_provider_pace_waits_total",
    "Provider calls that had to wait for their account's pace (each time asked).",
    ["provider"],
)
PACE_RATE = Gauge(
    "smsgate_provider_rate",
    "A provider account's effective rate (configured, lowered after throttles), by unit"
    " (messages or calls per second), as this process last saw it.",
    ["provider", "unit"],
    multiprocess_mode="livemax",
)
