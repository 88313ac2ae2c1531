"""A simulated SMS vendor: configurable latency, failures and delivery receipts.

The default provider, so the whole pipeline runs on a laptop. Seedable, so a
test can make it fail the same way every run. With ``log_path`` set it appends
one line per message it "sends" (``reference provider_id``), which lets
crash tests count what reached the provider across process restarts.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from smsgate_server.providers.base import OutboundSms, ReceiptSink, SendResult

__all__ = ["SimulatorProvider"]


class SimulatorProvider:
    """Pretends to be a vendor; see the module docstring."""

    name = "simulator"

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
    ) -> None:
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.permanent_failure_rate = permanent_failure_rate
        self.undelivered_rate = undelivered_rate
        self.receipt_delay = receipt_delay_ms / 1000
        self.max_batch = max_batch
        self._random = random.Random(seed)
        self._log = log_path.open("a", buffering=1) if log_path else None
        self._sink: ReceiptSink | None = None
        self._closed = False
        self.sent = 0
        # The last messages it took, as a handset would see them (for tests
        # and demos; bounded so a long run does not grow).
        self.outbox: deque[OutboundSms] = deque(maxlen=1000)

    def set_receipt_sink(self, sink: ReceiptSink) -> None:
        self._sink = sink

    async def send(self, messages: Sequence[OutboundSms]) -> list[SendResult]:
        if self.latency:
            await asyncio.sleep(self.latency)
        results = []
        for sms in messages:
            roll = self._random.random()
            if roll < self.permanent_failure_rate:
                results.append(SendResult(False, "", "SIM_REJECTED", "rejected by simulator"))
                continue
            if roll < self.permanent_failure_rate + self.failure_rate:
                results.append(
                    SendResult(False, "", "SIM_THROTTLED", "simulated throttling", retryable=True)
                )
                continue
            pid = "sim-" + secrets.token_hex(8)
            self.sent += 1
            self.outbox.append(sms)
            if self._log is not None:
                self._log.write(f"{sms.reference} {pid}\n")
            results.append(SendResult(True, pid))
            delivered = self._random.random() >= self.undelivered_rate
            self._schedule_receipt(pid, delivered, f"{sms.app}:{sms.reference}")
        return results

    def _schedule_receipt(self, pid: str, delivered: bool, member: str) -> None:
        # A timer, not a task per message: thousands in flight cost little.
        if self._sink is None:
            return
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
