"""The provider interface every vendor adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["OutboundSms", "Provider", "ReceiptSink", "SendResult"]


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One message to hand to a provider. ``reference`` is our id, sent along
    where the vendor's API allows so duplicates stay traceable."""

    reference: str
    phone: str
    text: str
    sender: str = ""
    app: str = ""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider's answer for one message.

    ``ok`` with ``provider_message_id``; otherwise ``error_code`` and
    ``error_reason`` and whether the error is worth retrying (timeouts, 5xx,
    throttling) or permanent (invalid number, blocked content).
    """

    ok: bool
    provider_message_id: str = ""
    error_code: str = ""
    error_reason: str = ""
    retryable: bool = False


# Called with (provider message id, delivered, error code, error reason, and
# ``app:reference`` when the vendor echoes what we sent, else ""). It only hands
# the receipt over (the dispatcher stores receipts in batches), so it is cheap
# enough to call from a timer for every message.
ReceiptSink = Callable[[str, bool, str, str, str], None]


class Provider(Protocol):
    """An SMS vendor. ``max_batch`` messages of the same text may go in one call."""

    name: str
    max_batch: int

    async def send(self, messages: Sequence[OutboundSms]) -> list[SendResult]:
        """Hand messages to the vendor; one result per message, in order."""
        ...

    def set_receipt_sink(self, sink: ReceiptSink) -> None:
        """Where delivery receipts go once the vendor reports them."""
        ...

    async def aclose(self) -> None:
        """Release connections and pending work."""
        ...
