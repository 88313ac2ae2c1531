"""A simulated SMS vendor: configurable latency, failures and delivery receipts.

The default provider, so the whole pipeline runs on a laptop. Seedable, so a
test can make it fail the same way every run. With ``log_path`` set it appends
one line per message it "sends" (``reference provider_id``), which lets
crash tests count what reached the provider across process restarts.

``TEST_NUMBERS`` always meet the same fate, so anyone can watch failure
handling without a vendor account.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from smsgate_server.providers.base import (
    Capabilities,
    ContentKind,
    OutboundBatch,
    OutcomeClass,
    ReceiptSink,
    Recipient,
    RecipientResult,
)

__all__ = ["TEST_NUMBERS", "ScriptedNumber", "SimulatorProvider"]


@dataclass(frozen=True, slots=True)
class ScriptedNumber:
    """A scripted fate: refused with ``refusal``, or accepted and then a receipt
    (delivered or not), or no receipt ever."""

    refusal: RecipientResult | None = None
    receipt: bool = True
    delivered: bool = True


# In the 555-0100..0199 range North America keeps for fiction: valid numbers
# that no handset has.
TEST_NUMBERS: dict[str, ScriptedNumber] = {
    "+12025550101": ScriptedNumber(
        RecipientResult(OutcomeClass.PERMANENT, "", "SIM_INVALID_NUMBER", "no such handset")
    ),
    "+12025550102": ScriptedNumber(
        RecipientResult(
            OutcomeClass.PERMANENT, "", "SIM_OPTED_OUT", "the recipient unsubscribed", 0.0, True
        )
    ),
    "+12025550103": ScriptedNumber(
        RecipientResult(OutcomeClass.THROTTLED, "", "SIM_THROTTLED", "always throttled")
    ),
    "+12025550104": ScriptedNumber(
        RecipientResult(OutcomeClass.UNKNOWN, "", "SIM_NO_ANSWER", "no answer from the vendor")
    ),
    "+12025550105": ScriptedNumber(receipt=False),
    "+12025550106": ScriptedNumber(delivered=False),
}


class SimulatorProvider:
    """Pretends to be a vendor; see the module docstring."""

    def __init__(
        self,
        *,
        latency_ms: float = 20.0,
        failure_rate: float = 0.0,
        permanent_failure_rate: float = 0.0,
        undelivered_rate: float = 0.0,
        receipt_delay_ms: float = 200.0,
        seed: int | None = None,
        log_path: Path | None = None,
        max_batch: int = 200,
        name: str = "simulator",
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(max_batch, max_batch, ContentKind.TEXT)
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.permanent_failure_rate = permanent_failure_rate
        self.undelivered_rate = undelivered_rate
        self.receipt_delay = receipt_delay_ms / 1000
        self._random = random.Random(seed)
        self._log = log_path.open("a", buffering=1) if log_path else None
        self._sink: ReceiptSink | None = None
        self._closed = False
        self.sent = 0
        # The last messages it took, as a handset would see them (for tests
        # and demos; bounded so a long run does not grow).
        self.outbox: deque[Recipient] = deque(maxlen=1000)

    def set_receipt_sink(self, sink: ReceiptSink) -> None:
        self._sink = sink

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        if self.latency:
            await asyncio.sleep(self.latency)
        return [self._send(batch.app, r) for r in batch.recipients]

    def _send(self, app: str, sms: Recipient) -> RecipientResult:
        script = TEST_NUMBERS.get(sms.phone)
        if script is not None and script.refusal is not None:
            return script.refusal
        roll = self._random.random()
        if roll < self.permanent_failure_rate:
            return RecipientResult(OutcomeClass.PERMANENT, "", "SIM_REJECTED", "rejected")
        if roll < self.permanent_failure_rate + self.failure_rate:
            return RecipientResult(OutcomeClass.THROTTLED, "", "SIM_THROTTLED", "throttled")
        pid = "sim-" + secrets.token_hex(8)
        self.sent += 1
        self.outbox.append(sms)
        if self._log is not None:
            self._log.write(f"{sms.reference} {pid}\n")
        if script is None:
            self._schedule_receipt(pid, self._random.random() >= self.undelivered_rate, app, sms)
        elif script.receipt:
            self._schedule_receipt(pid, script.delivered, app, sms)
        return RecipientResult(OutcomeClass.ACCEPTED, pid)

    def _schedule_receipt(self, pid: str, delivered: bool, app: str, sms: Recipient) -> None:
        # A timer, not a task per message: thousands in flight cost little.
        if self._sink is None:
            return
        member = f"{app}:{sms.reference}"
        if delivered:
            args = (pid, True, "", "", member)
        else:
            args = (pid, False, "SIM_UNREACHABLE", "handset unreachable", member)
        asyncio.get_running_loop().call_later(self.receipt_delay, self._fire, args)

    def _fire(self, args: tuple[str, bool, str, str, str]) -> None:
        # Like a vendor's callback, it carries our reference back.
        if self._sink is not None and not self._closed:
            self._sink(*args)

    async def aclose(self) -> None:
        # Pending receipts are dropped; the messages expire if none comes.
        self._closed = True
        if self._log is not None:
            self._log.close()
