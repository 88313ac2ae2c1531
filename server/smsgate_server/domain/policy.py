"""Sending policy: what an app may send to a number, and when (pure logic).

- Frequency caps per number, for notification and marketing messages (codes
  have their own caps, ``services.verification``): the same content at most
  once per ``same_content_seconds``, at most ``per_number_day`` messages a day.
- A daily cap per app on every message it sends, codes included (it bounds
  what the app can spend, an SMS-pumping attack on codes too).
- Quiet hours for marketing in the recipient's local time: a marketing message
  due inside them is held until they end, in every time zone its number may be
  in (a number of several zones waits for the latest one).

Days are calendar days in one configured zone (UTC by default), as the
vendors' caps are (Tencent: a calendar day of Beijing time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

from smsgate_server.domain.templates import TemplateKind

__all__ = [
    "OPTED_OUT",
    "SERVER_POLICY",
    "PolicyOverrides",
    "QuietHours",
    "SendPolicy",
    "content_digest",
    "policy_day",
    "quiet_release_ms",
    "time_zones_of",
]

_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
# Numbers whose zones are remembered per process; beyond, the oldest go.
ZONE_CACHE_NUMBERS = 4096
_OFF = "off"
# Why a marketing message to an opted-out number is refused at accept, or
# failed unsent when the number opted out while it waited (the dispatcher).
OPTED_OUT = "the recipient opted out of the app's marketing messages"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local time, ``start`` to ``end`` in minutes of the day;
    it wraps midnight when ``end`` is before ``start`` (21:00-08:00)."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``HH:MM-HH:MM``; ``off`` (or empty) is no window. ValueError says why not."""
        text = text.strip()
        if text.lower() in ("", _OFF):
            return None
        first, sep, second = text.partition("-")
        a, b = _CLOCK.fullmatch(first.strip()), _CLOCK.fullmatch(second.strip())
        if not sep or a is None or b is None:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM (for example 21:00-08:00) or 'off'")
        start, end = int(a[1]) * 60 + int(a[2]), int(b[1]) * 60 + int(b[2])
        if start == end:
            raise ValueError(f"{text!r} starts and ends at the same time; use 'off' for none")
        return cls(start, end)

    def contains(self, minute: int) -> bool:
        """True when ``minute`` of the day is inside the window."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def end_after(self, local: datetime) -> datetime | None:
        """When the window that holds ``local`` ends (in its zone); None outside it."""
        minute = local.hour * 60 + local.minute
        if not self.contains(minute):
            return None
        day = local.date()
        if self.start > self.end and minute >= self.start:
            day += timedelta(days=1)
        return datetime.combine(day, time(self.end // 60, self.end % 60), tzinfo=local.tzinfo)

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


@dataclass(frozen=True, slots=True)
class PolicyOverrides:
    """An app's own policy values (None: the server's setting applies).
    ``quiet_hours`` is the text form, ``off`` for none."""

    same_content_seconds: int | None = None
    per_number_day: int | None = None
    daily_cap: int | None = None
    quiet_hours: str | None = None


# No value of an app's own: the server's settings apply.
SERVER_POLICY = PolicyOverrides()


@dataclass(frozen=True, slots=True)
class SendPolicy:
    """The caps and quiet hours that apply to one app; 0 (or None) is no cap."""

    same_content_seconds: int = 0
    per_number_day: int = 0
    daily_cap: int = 0
    quiet_hours: QuietHours | None = None

    def overridden(self, own: PolicyOverrides) -> SendPolicy:
        """This policy with an app's own values in place of the server's."""
        if own == SERVER_POLICY:
            return self
        return dataclasses.replace(
            self,
            same_content_seconds=_own(own.same_content_seconds, self.same_content_seconds),
            per_number_day=_own(own.per_number_day, self.per_number_day),
            daily_cap=_own(own.daily_cap, self.daily_cap),
            quiet_hours=(
                QuietHours.parse(own.quiet_hours)
                if own.quiet_hours is not None
                else self.quiet_hours
            ),
        )

    def number_caps(self, kind: TemplateKind) -> tuple[int, int]:
        """(same-content seconds, per-number day cap) for a message of ``kind``:
        none for verification codes."""
        if kind is TemplateKind.VERIFICATION:
            return 0, 0
        return self.same_content_seconds, self.per_number_day


def _own(value: int | None, default: int) -> int:
    return default if value is None else value


def content_digest(text: str) -> str:
    """A short digest of a message's text for the same-content cap (64 bits:
    a collision only makes two different texts count as one)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@lru_cache(maxsize=ZONE_CACHE_NUMBERS)
def time_zones_of(phone: str) -> tuple[ZoneInfo, ...]:
    """The zones an E.164 number may be in (by its prefix, per libphonenumber);
    none when unknown."""
    try:
        names = phone_timezone.time_zones_for_number(phonenumbers.parse(phone))
    except phonenumbers.NumberParseException:
        return ()
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            # "Etc/Unknown", or a zone this system's tz database lacks.
            continue
    return tuple(zones)


def quiet_release_ms(phone: str, due_ms: int, quiet: QuietHours) -> int:
    """The earliest time at or after ``due_ms`` outside the quiet hours in every
    zone of ``phone``: ``due_ms`` itself when it is outside them already (and
    for numbers of no known zone)."""
    zones = time_zones_of(phone)
    at = due_ms
    # Each pass moves past the window of every zone that is quiet at ``at``;
    # zones a day apart at most have a common open time within a few passes.
    # Should they have none (a window longer than the day less the zones'
    # spread), the message goes at the end of a window, after a bounded search.
    for _ in range(2 * len(zones) + 2):
        moved = False
        for zone in zones:
            end = quiet.end_after(datetime.fromtimestamp(at / 1000, zone))
            if end is not None:
                at = max(at, int(end.timestamp() * 1000))
                moved = True
        if not moved:
            break
    return at


def policy_day(now_ms: int, zone: ZoneInfo | None = None) -> tuple[int, int]:
    """The calendar day of ``now_ms`` in ``zone`` (UTC when None), as a day
    number, and the milliseconds until it ends."""
    local = datetime.fromtimestamp(now_ms / 1000, zone or UTC)
    day = local.date()
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=local.tzinfo)
    return day.toordinal() - date(1970, 1, 1).toordinal(), max(
        int(end.timestamp() * 1000) - now_ms, 1
    )
