"""SendingPolicy: the caps, opt-outs and quiet hours every send passes.

``services.sending`` asks it once per request, with every recipient, after the
content is rendered and before the messages are stored:

- ``check`` runs one script (``store.policy``) only when something applies:
  the opt-out list for marketing, the per-number caps for notification and
  marketing, the app's daily cap for every kind. It counts the recipients it
  admits; the caller gives back (``PolicyCheck.refund``) those whose messages
  it then did not store.
- ``hold_until`` moves a marketing message due in quiet hours to their end.

The kind of a message: a verification code's (sent by the verification
service, ``sensitive``) is VERIFICATION, a template's is the template's kind,
and free text's the kind the request names, else NOTIFICATION (treating it as
marketing would hold and refuse transactional texts). A marketing message is
stored as such: the dispatcher checks its recipient's opt-out again just
before sending it, as the number may opt out while it is held.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from smsgate_server import metrics
from smsgate_server.config import Settings
from smsgate_server.domain.errors import (
    FailedPrecondition,
    QuotaExceeded,
    QuotaViolation,
    Reason,
    SmsgateError,
)
from smsgate_server.domain.policy import (
    OPTED_OUT,
    PolicyOverrides,
    QuietHours,
    SendPolicy,
    content_digest,
    policy_day,
    quiet_release_ms,
)
from smsgate_server.domain.templates import TemplateKind
from smsgate_server.logs import mask_phone
from smsgate_server.store.policy import PolicyCall, PolicyStore, Verdict

__all__ = ["PolicyCheck", "PolicySettings", "SendingPolicy"]

log = logging.getLogger(__name__)

# Recipients per script call: a 1,000-recipient call takes Redis about 10 ms.
POLICY_CHUNK = 1_000
# Apps whose daily-cap warning was logged, remembered per process (for one
# day each); beyond this many the oldest are forgotten (and may log again).
WARNED_APPS = 10_000


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The server-wide policy (the values live once, in Settings)."""

    policy: SendPolicy
    day_zone: ZoneInfo
    warning_ratio: float
    request_ttl_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicySettings:
        return cls(
            policy=SendPolicy(
                same_content_seconds=settings.policy_same_content_seconds,
                per_number_day=settings.policy_per_number_day,
                daily_cap=settings.policy_app_daily_cap,
                quiet_hours=QuietHours.parse(settings.policy_quiet_hours),
            ),
            day_zone=ZoneInfo(settings.policy_day_zone),
            warning_ratio=settings.policy_app_daily_warning,
            request_ttl_ms=settings.idempotency_ttl_seconds * 1000,
        )


@dataclass(frozen=True, slots=True)
class _Counted:
    """One script call of a check: its recipients from ``first`` on, and
    whether its verdicts are an earlier call's (nothing of them to give back)."""

    first: int
    call: PolicyCall
    replayed: bool


@dataclass(slots=True)
class PolicyCheck:
    """The policy's answer for the recipients of one request: per recipient
    None (admitted) or the error refusing it; ``refund`` gives back what was
    counted for admitted recipients whose messages were not stored."""

    refusals: list[SmsgateError | None]
    _store: PolicyStore | None = None
    _app: str = ""
    _calls: list[_Counted] = field(default_factory=list)
    _refunded: set[int] = field(default_factory=set)

    async def refund(self, indexes: Sequence[int]) -> None:
        """Give back the counts of the admitted recipients at ``indexes``
        (each once); nothing for verdicts an earlier call counted."""
        todo = {i for i in indexes if self.refusals[i] is None} - self._refunded
        if self._store is None or not todo:
            return
        self._refunded |= todo
        for counted in self._calls:
            if counted.replayed:
                continue
            span = range(counted.first, counted.first + len(counted.call.phones))
            mine = sorted(i - counted.first for i in todo if i in span)
            if not mine:
                continue
            # The call's verdicts are forgotten only once none of its messages
            # was stored: a retry must meet the same verdicts while any was,
            # or its messages would not line up with the stored ones.
            admitted = {i for i in span if self.refusals[i] is None}
            forget = admitted <= self._refunded
            await self._store.refund(self._app, counted.call, mine, forget=forget)


class SendingPolicy:
    """Checks requests against each app's sending policy (see the module docstring)."""

    def __init__(
        self,
        store: PolicyStore,
        settings: PolicySettings,
        secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        # Keys the numbers' tags: no phone number appears in a key name.
        self._tag_key = hashlib.sha256(b"smsgate policy tag" + secret).digest()
        self.clock = clock
        # app -> the day its warning was logged
        self._warned: dict[str, int] = {}
        # The policy day last computed: (day, when it was computed, when it
        # ends), in ms; reused for any moment in between, so a send does not
        # pay policy_day's datetime arithmetic (about 5 us) each time.
        self._day: tuple[int, int, int] = (0, 0, 0)

    def policy_for(self, own: PolicyOverrides) -> SendPolicy:
        """An app's policy: the server's with the app's own values."""
        return self.settings.policy.overridden(own)

    async def check(
        self,
        app: str,
        policy: SendPolicy,
        kind: TemplateKind,
        recipients: Sequence[tuple[str, str]],
        *,
        request_id: str = "",
        batch: bool = False,
    ) -> PolicyCheck:
        """Check ``recipients`` (number, rendered text) of one request of ``kind``
        and count those admitted; no Redis call when nothing applies. A
        ``batch`` remembers its verdicts under its request id even when every
        recipient is refused, as its accept remembers an empty batch."""
        same_content, per_day = policy.number_caps(kind)
        optouts = kind is TemplateKind.MARKETING
        if not recipients or not (optouts or same_content or per_day or policy.daily_cap):
            return PolicyCheck([None] * len(recipients))
        day, day_left_ms = self._policy_day(int(self.clock() * 1000))
        check = PolicyCheck([], self.store, app)
        # In chunks: one script call does not hold Redis for long. Each chunk
        # of a request with an id remembers its verdicts under its own id.
        for k, first in enumerate(range(0, len(recipients), POLICY_CHUNK)):
            chunk = recipients[first : first + POLICY_CHUNK]
            phones = [phone for phone, _ in chunk]
            call = PolicyCall(
                request_id=f"{request_id}#{k}" if request_id and k else request_id,
                request_ttl_ms=self.settings.request_ttl_ms,
                check_optouts=optouts,
                same_content_ms=same_content * 1000,
                per_number_day=per_day,
                daily_cap=policy.daily_cap,
                day=day,
                day_left_ms=day_left_ms,
                token=secrets.token_hex(8),
                phones=phones,
                tags=[self._tag(phone) for phone in phones],
                # Only the same-content cap reads the digest.
                digests=[content_digest(text) if same_content else "" for _, text in chunk],
                remember_all=batch,
            )
            taken = await self.store.take(app, call)
            check._calls.append(_Counted(first, call, taken.replayed))
            for phone, (verdict, wait_ms) in zip(phones, taken.verdicts, strict=True):
                refusal = self._refusal(app, phone, verdict, wait_ms, policy)
                if refusal is not None:
                    metrics.POLICY_REFUSALS.labels(verdict.name.lower()).inc()
                check.refusals.append(refusal)
            if policy.daily_cap:
                self._observe_daily(app, day, taken.app_today, policy.daily_cap)
        return check

    def _policy_day(self, now_ms: int) -> tuple[int, int]:
        """``policy_day(now_ms)`` in the server's day zone."""
        day, since_ms, end_ms = self._day
        if since_ms <= now_ms < end_ms:
            # The same day as when computed (the clock may also step back).
            return day, end_ms - now_ms
        day, left_ms = policy_day(now_ms, self.settings.day_zone)
        self._day = (day, now_ms, now_ms + left_ms)
        return day, left_ms

    def hold_until(self, policy: SendPolicy, kind: TemplateKind, phone: str, due_ms: int) -> int:
        """When a message of ``kind`` to ``phone`` due at ``due_ms`` may go:
        for marketing, after the quiet hours in the recipient's local time."""
        if kind is not TemplateKind.MARKETING or policy.quiet_hours is None:
            return due_ms
        release = quiet_release_ms(phone, due_ms, policy.quiet_hours)
        if release > due_ms:
            metrics.QUIET_HOURS_HELD.inc()
        return release

    def _tag(self, phone: str) -> str:
        return hashlib.blake2b(phone.encode(), key=self._tag_key, digest_size=10).hexdigest()

    def _refusal(
        self, app: str, phone: str, verdict: Verdict, wait_ms: int, policy: SendPolicy
    ) -> SmsgateError | None:
        wait = wait_ms / 1000
        masked = mask_phone(phone)
        if verdict is Verdict.ADMITTED:
            return None
        if verdict is Verdict.OPTED_OUT:
            return FailedPrecondition(OPTED_OUT, reason=Reason.RECIPIENT_OPTED_OUT)
        if verdict is Verdict.SAME_CONTENT:
            return QuotaExceeded(
                [
                    QuotaViolation(
                        f"phone:{masked}:same_content",
                        f"the same content went to this number less than "
                        f"{policy.same_content_seconds} s ago; it may go again in {wait:.1f} s",
                    )
                ],
                reason=Reason.SAME_CONTENT_TOO_SOON,
                retry_after=wait,
            )
        if verdict is Verdict.NUMBER_DAY_CAP:
            return QuotaExceeded(
                [
                    QuotaViolation(
                        f"phone:{masked}:day",
                        f"at most {policy.per_number_day} messages a day to one number; "
                        f"the next is allowed in {wait:.0f} s",
                    )
                ],
                reason=Reason.PHONE_DAILY_CAP,
                retry_after=wait,
            )
        return QuotaExceeded(
            [
                QuotaViolation(
                    f"app:{app}:daily_messages",
                    f"the app sent its {policy.daily_cap} messages of today; "
                    f"the next day starts in {wait:.0f} s",
                )
            ],
            reason=Reason.APP_DAILY_CAP,
            retry_after=wait,
        )

    def _observe_daily(self, app: str, day: int, used: int, cap: int) -> None:
        """The app's share of its daily cap, as a metric, and one warning a day
        when it passes the warning ratio."""
        ratio = min(used / cap, 1.0)
        metrics.APP_DAILY_CAP_USED.labels(app).set(ratio)
        if ratio < self.settings.warning_ratio or self._warned.get(app) == day:
            return
        self._warned.pop(app, None)
        if len(self._warned) >= WARNED_APPS:
            del self._warned[next(iter(self._warned))]
        self._warned[app] = day
        log.warning(
            "app passed its daily cap's warning threshold",
            extra={"app": app, "used": used, "daily_cap": cap, "ratio": round(ratio, 3)},
        )
