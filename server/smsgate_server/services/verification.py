"""VerificationService: issues one-time codes for an app and checks them.

Sits between ``api`` (protobuf) and ``store``: validates with the domain checks,
applies the app's abuse controls (destination countries, per-minute limit),
lets ``CodeStore`` apply the per-number resend policy atomically, and sends
codes by SMS through ``SendingService``, the durable pipeline every message
takes.

Plain codes exist only in this process's memory, in the caller's response
(caller delivery) and in the text of the SMS that carries them (SMS delivery);
they are never logged and never stored anywhere else.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from smsgate_server.config import Settings
from smsgate_server.domain.apps import App
from smsgate_server.domain.codes import (
    MAX_CODE_INPUT,
    Alphabet,
    CodeSigner,
    check_length,
    check_scope,
    check_validity,
    generate_code,
    normalize_code,
)
from smsgate_server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    QuotaViolation,
    RateLimited,
    Reason,
)
from smsgate_server.domain.phone import country_code
from smsgate_server.domain.templates import TemplateKind, check_template_id
from smsgate_server.domain.validation import (
    MAX_ID_CHARS,
    Violations,
    check_phone,
    check_recipient,
    check_sender,
)
from smsgate_server.logs import mask_phone
from smsgate_server.services.composing import PreparedTemplate, TemplateRef
from smsgate_server.services.sending import SendCommand, SendingService
from smsgate_server.store.codes import CodeCheck, CodeStore, IssueKind, NewCode
from smsgate_server.store.codes import VerifyOutcome as StoreOutcome
from smsgate_server.store.keys import CodeKeys

__all__ = [
    "CodePolicy",
    "Delivery",
    "GenerateCommand",
    "IssuedCode",
    "Verdict",
    "VerificationService",
    "VerifyCommand",
    "VerifyResult",
    "default_sms_text",
]

log = logging.getLogger("smsgate.verification")

# The placeholders a verification template may use: the code and its validity
# in minutes. Anything else would have no value to render with.
CODE_PARAMS = frozenset({"code", "minutes"})


class Delivery(enum.Enum):
    """How a code reaches the user."""

    SMS = "sms"
    CALLER = "caller"


class Verdict(enum.Enum):
    """The outcome of a verification."""

    VERIFIED = "verified"
    INCORRECT = "incorrect"
    EXPIRED_OR_NOT_FOUND = "gone"
    TOO_MANY_ATTEMPTS = "dead"


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """Server-wide verification settings (the values live once, in Settings);
    an app's own policy overrides the per-minute limit and the allowed countries."""

    max_attempts: int
    resend_cooldown_ms: int
    per_number_hour: int
    per_number_day: int
    per_app_minute: int
    # Empty: every country is allowed.
    allowed_countries: frozenset[int]

    @classmethod
    def from_settings(cls, settings: Settings) -> CodePolicy:
        return cls(
            max_attempts=settings.verify_max_attempts,
            resend_cooldown_ms=int(settings.verify_resend_cooldown_seconds * 1000),
            per_number_hour=settings.verify_per_number_hour,
            per_number_day=settings.verify_per_number_day,
            per_app_minute=settings.verify_per_minute,
            allowed_countries=settings.verify_allowed_countries,
        )


@dataclass(frozen=True, slots=True)
class GenerateCommand:
    """A request for a code. ``length`` 0 and ``validity_ms`` None mean the defaults."""

    phone: str
    scope: str
    length: int = 0
    alphabet: Alphabet = Alphabet.NUMERIC
    validity_ms: int | None = None
    delivery: Delivery = Delivery.SMS
    template_id: str = ""
    sender: str = ""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A code issued: its id and times; ``code`` only with caller delivery,
    ``message_id`` only with SMS delivery."""

    verification_id: str
    expire_ms: int
    resend_ms: int
    code: str = ""
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class VerifyCommand:
    """A code to check, named by ``verification_id`` or by ``phone`` and ``scope``."""

    code: str
    verification_id: str = ""
    phone: str = ""
    scope: str = ""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict and the wrong attempts still allowed."""

    verdict: Verdict
    attempts_left: int


def _span(ms: int) -> str:
    if ms % 60_000 == 0:
        minutes = ms // 60_000
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    seconds = -(-ms // 1000)
    return f"{seconds} second" + ("s" if seconds != 1 else "")


def _code_content(template: PreparedTemplate, code: str, validity_ms: int) -> TemplateRef:
    """The version of ``template`` checked, with the params its body uses: the
    code and the validity in whole minutes, rounded up."""
    values = {"code": code, "minutes": str(-(-validity_ms // 60_000))}
    return TemplateRef(
        template.template.id,
        version=template.template.version,
        params={name: values[name] for name in template.body.variables},
    )


def default_sms_text(code: str, validity_ms: int) -> str:
    """The built-in text of a code SMS (until apps have verification templates)."""
    return (
        f"Your verification code is {code}. It is valid for {_span(validity_ms)}. "
        "Do not share it with anyone."
    )


class VerificationService:
    """Generates and verifies the codes of one app at a time."""

    def __init__(
        self,
        codes: CodeStore,
        sending: SendingService,
        signer: CodeSigner,
        policy: CodePolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.codes = codes
        self.sending = sending
        self.signer = signer
        self.policy = policy
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def generate(
        self, app: App, cmd: GenerateCommand, violations: Violations | None = None
    ) -> IssuedCode:
        """Issue a code for ``cmd.phone`` and ``cmd.scope``, replacing the live one,
        and send it (SMS delivery) or return it (caller delivery). Every bad field
        (with those the caller found in ``violations``) is one InvalidArgument."""
        if violations is None:
            violations = Violations()
        # An SMS needs a number that can receive one; a caller may deliver the
        # code some other way (a voice call), so any valid number will do.
        if cmd.delivery is Delivery.SMS:
            phone = violations.check("", check_recipient, cmd.phone, "phone_number", app.numbers)
        else:
            region = app.numbers.default_region
            phone = violations.check("", check_phone, cmd.phone, "phone_number", region)
        scope = violations.check("", check_scope, cmd.scope)
        length = violations.check(0, check_length, cmd.length)
        validity_ms = violations.check(0, check_validity, cmd.validity_ms)
        sender = ""
        if cmd.delivery is Delivery.SMS:
            sender = violations.check("", check_sender, cmd.sender)
            if cmd.template_id:
                violations.check("", check_template_id, cmd.template_id)
        else:
            for name, value in (("template_id", cmd.template_id), ("sender_id", cmd.sender)):
                if value:
                    violations.add(InvalidArgument.field(name, "applies only to CODE_DELIVERY_SMS"))
        violations.raise_any()
        # Checked before a code is counted or issued.
        template = None
        if cmd.delivery is Delivery.SMS and cmd.template_id:
            template = await self._code_template(app.key, cmd.template_id)
            # A stand-in code of the same length and kind of characters renders
            # to the same length: a text too long fails before a code exists.
            trial = _code_content(template, "0" * length, validity_ms)
            try:
                template.compose(
                    phone, trial.params, max_segments=self.sending.limits.max_text_segments
                )
            except InvalidArgument as exc:
                raise InvalidArgument.field(
                    "template_id", exc.violations[0].description, reason=exc.reason
                ) from None

        # SMS pumping: refuse numbers outside the app's countries before anything
        # is counted or sent.
        allowed = app.allowed_countries or self.policy.allowed_countries
        calling_code = country_code(phone)
        if allowed and calling_code not in allowed:
            raise FailedPrecondition(
                f"the app may not send verification codes to country calling code "
                f"+{calling_code}; allowed: {', '.join(f'+{c}' for c in sorted(allowed))}",
                reason=Reason.COUNTRY_NOT_ALLOWED,
            )

        now = self._now_ms()
        per_minute = app.verify_per_minute or self.policy.per_app_minute
        wait_ms = await self.codes.take_app_slot(app.key, per_minute, now)
        if wait_ms:
            raise RateLimited(
                f"the app has issued {per_minute} verification codes this minute",
                retry_after=wait_ms / 1000,
                reason=Reason.APP_VERIFY_RATE_LIMITED,
            )

        tag = self.signer.phone_tag(app.key, phone)
        verification_id, parts = self.signer.new_id(app.key, tag)
        code = generate_code(length, cmd.alphabet)
        outcome = await self.codes.issue(
            NewCode(
                keys=CodeKeys(app.key, tag),
                scope=scope,
                nonce=parts.nonce,
                code_hash=self.signer.code_hash(app.key, tag, code),
                attempts=self.policy.max_attempts,
                validity_ms=validity_ms,
                cooldown_ms=self.policy.resend_cooldown_ms,
                per_hour=self.policy.per_number_hour,
                per_day=self.policy.per_number_day,
            ),
            now,
        )
        if outcome.kind is not IssueKind.OK:
            # No code was issued, so it does not count against the app's minute.
            await self.codes.give_back_app_slot(app.key, now)
            if outcome.kind is IssueKind.COOLDOWN:
                raise RateLimited(
                    f"a code for this number and scope was issued recently; retry in "
                    f"{outcome.cooldown_ms / 1000:.1f} s",
                    retry_after=outcome.cooldown_ms / 1000,
                    reason=Reason.RESEND_COOLDOWN,
                )
            raise QuotaExceeded(
                [
                    QuotaViolation(
                        f"phone:{phone}:{window}",
                        f"at most {cap} codes per {window} for one number; the next is "
                        f"allowed in {wait / 1000:.0f} s",
                    )
                    for window, cap, wait in (
                        ("hour", self.policy.per_number_hour, outcome.hour_ms),
                        ("day", self.policy.per_number_day, outcome.day_ms),
                    )
                    if wait > 0
                ],
                reason=Reason.PHONE_CODE_CAP,
            )

        expire_ms, resend_ms = now + validity_ms, now + self.policy.resend_cooldown_ms
        if cmd.delivery is Delivery.CALLER:
            issued = IssuedCode(verification_id, expire_ms, resend_ms, code=code)
        else:
            message = await self.sending.send(
                app.key,
                SendCommand(
                    phone=phone,
                    text="" if template else default_sms_text(code, validity_ms),
                    template=_code_content(template, code, validity_ms) if template else None,
                    sender=sender,
                    sensitive=True,
                    expire_at_ms=expire_ms,
                    # Codes count against the app's daily cap, its own one too.
                    policy=app.policy,
                ),
            )
            issued = IssuedCode(verification_id, expire_ms, resend_ms, message_id=message.id)
        # Guarded: the masked number and the fields cost work on every call even
        # when INFO records are dropped (the usual production level is WARNING).
        if log.isEnabledFor(logging.INFO):
            log.info(
                "verification code issued",
                extra={
                    "app": app.key,
                    "phone": mask_phone(phone),
                    "scope": scope,
                    "delivery": cmd.delivery.value,
                    "verification_id": verification_id,
                    "message_id": issued.message_id,
                },
            )
        return issued

    async def _code_template(self, app: str, template_id: str) -> PreparedTemplate:
        """The app's verification template ``template_id`` (latest version), with
        no placeholder but ``{code}`` and ``{minutes}`` and a registered sign."""
        composer = self.sending.composer
        if composer is None:
            raise InvalidArgument.field("template_id", "this server sends the built-in text only")
        prepared = await composer.prepare(app, TemplateRef(template_id))
        kind = prepared.template.kind
        if kind is not TemplateKind.VERIFICATION:
            raise InvalidArgument.field(
                "template_id",
                f"template {template_id!r} is a {kind.name} template; codes need a "
                "VERIFICATION template",
                reason=Reason.INVALID_TEMPLATE_KIND,
            )
        other = [v for v in prepared.body.variables if v not in CODE_PARAMS]
        if other:
            raise InvalidArgument.field(
                "template_id",
                f"template {template_id!r} has placeholders other than {{code}} and "
                f"{{minutes}}: {', '.join(other[:5])}",
                reason=Reason.INVALID_TEMPLATE_PARAMS,
            )
        return prepared

    async def verify(self, app: App, cmd: VerifyCommand) -> VerifyResult:
        """Check a code; a correct one verifies once and is consumed. Every bad
        field is reported in one InvalidArgument."""
        violations = Violations()
        code = ""
        # Measured before it is normalised: the input may be megabytes.
        if len(cmd.code) > MAX_CODE_INPUT:
            violations.add(
                InvalidArgument.field("code", f"must be at most {MAX_CODE_INPUT} characters")
            )
        elif not (code := normalize_code(cmd.code)):
            violations.add(InvalidArgument.field("code", "is required", reason=Reason.EMPTY_CODE))
        if len(cmd.verification_id) > MAX_ID_CHARS:
            violations.add(
                InvalidArgument.field(
                    "verification_id", f"must be at most {MAX_ID_CHARS} characters"
                )
            )
        phone = ""
        if cmd.phone:
            region = app.numbers.default_region
            phone = violations.check("", check_phone, cmd.phone, "phone_number", region)
        scope = violations.check("", check_scope, cmd.scope) if cmd.scope else ""
        if not cmd.verification_id and not (cmd.phone and cmd.scope):
            violations.add(
                InvalidArgument.field(
                    "verification_id",
                    "either verification_id, or both phone_number and scope, is required",
                    reason=Reason.VERIFICATION_UNNAMED,
                )
            )
        violations.raise_any()
        now = self._now_ms()

        if cmd.verification_id:
            parts = self.signer.open_id(app.key, cmd.verification_id)
            if parts is None:
                # The id is not echoed: it is caller input of any length.
                raise NotFound(
                    "verification_id: no such verification was issued to this app",
                    reason=Reason.VERIFICATION_NOT_FOUND,
                )
            keys = CodeKeys(app.key, parts.tag)
            code_hash = self.signer.code_hash(app.key, parts.tag, code)
            if phone and self.signer.phone_tag(app.key, phone) != parts.tag:
                outcome = StoreOutcome(CodeCheck.GONE, 0)  # the id belongs to another number
            else:
                outcome = await self.codes.verify_by_id(
                    keys, parts.nonce, code_hash, now, scope=scope
                )
        else:
            tag = self.signer.phone_tag(app.key, phone)
            code_hash = self.signer.code_hash(app.key, tag, code)
            outcome = await self.codes.verify_by_scope(
                CodeKeys(app.key, tag), scope, code_hash, now
            )
        result = VerifyResult(Verdict(outcome.kind), outcome.attempts_left)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "verification checked",
                extra={
                    "app": app.key,
                    "verification_id": cmd.verification_id,
                    "result": result.verdict.name,
                    "attempts_left": result.attempts_left,
                },
            )
        return result
