"""The provider interface every vendor adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "Capabilities",
    "ContentKind",
    "OutboundBatch",
    "OutcomeClass",
    "Provider",
    "ReceiptSink",
    "ReceiptSource",
    "Recipient",
    "RecipientResult",
    "StatusAnswer",
    "StatusQuery",
    "StatusSource",
    "VendorStatus",
]


# Called with (provider message id, delivered, error code, error reason, and
# ``app:reference`` when the vendor echoes what we sent, else ""). It only hands
# the receipt over (the dispatcher stores receipts in batches), so it is cheap
# enough to call from a timer for every message.
ReceiptSink = Callable[[str, bool, str, str, str], None]


class OutcomeClass(StrEnum):
    """What a vendor did with one recipient of a call."""

    # It took the message; ``vendor_id`` names it in receipts.
    ACCEPTED = "accepted"
    # Refused before sending (vendor fault, connection never made): try again.
    RETRYABLE = "retryable"
    # Refused for rate or quota: try later, or another vendor.
    THROTTLED = "throttled"
    # Refused for good by this vendor (bad number, opt-out, bad credentials).
    PERMANENT = "permanent"
    # The request may have been delivered: never blindly re-sent.
    UNKNOWN = "unknown"


class ContentKind(StrEnum):
    """What a vendor sends: its own approved templates, or any text."""

    TEMPLATE = "template"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one vendor call can carry.

    ``max_recipients`` share one parameter set; ``max_personalized`` may each
    have their own (1 when the vendor cannot). ``regions`` are ISO 3166 codes
    of the countries served, or None for everywhere.
    """

    max_recipients: int
    max_personalized: int
    content: ContentKind
    regions: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """One message of a batch: our id (sent where the vendor allows), the E.164
    number, its rendered text and its ordered template parameters."""

    reference: str
    phone: str
    text: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundBatch:
    """Recipients of one template (or text) from one app, with what each vendor
    needs to send it: sign name, sender id, the vendor's template id by provider."""

    app: str
    recipients: tuple[Recipient, ...]
    sign_name: str = ""
    sender: str = ""
    template_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """A vendor's answer for one recipient.

    ``retry_after`` (seconds, 0 for the usual backoff) comes with THROTTLED;
    ``opted_out`` says the vendor refused because the number unsubscribed.
    """

    outcome: OutcomeClass
    vendor_id: str = ""
    code: str = ""
    reason: str = ""
    retry_after: float = 0.0
    opted_out: bool = False


class Provider(Protocol):
    """An SMS vendor behind one method: send a batch, one result per recipient."""

    name: str
    capabilities: Capabilities

    async def send_batch(self, batch: OutboundBatch) -> list[RecipientResult]:
        """Send to every recipient (in as many calls as the vendor needs);
        results in recipient order. Never raises for a vendor or network fault."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (not the injected HTTP client)."""
        ...


@runtime_checkable
class ReceiptSource(Protocol):
    """A provider that reports delivery receipts itself (the simulator); vendors'
    receipts come to the HTTP side port instead."""

    def set_receipt_sink(self, sink: ReceiptSink) -> None:
        """Where delivery receipts go once the vendor reports them."""
        ...


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """One sent message a vendor is asked about: our id, the number, the
    vendor's id ('' when the send's outcome was unknown) and when it was sent (ms)."""

    reference: str
    phone: str
    vendor_id: str
    sent_ms: int


@dataclass(frozen=True, slots=True)
class VendorStatus:
    """A vendor's final word on a message, as a receipt would say it."""

    delivered: bool
    code: str = ""
    reason: str = ""
    time_ms: int = 0  # the vendor's time of the outcome, 0 when it names none


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """What a vendor said to a status query: one entry per query, in order (None
    while it has no final word, or could not be asked), and the outcomes of
    other messages it reported meanwhile by vendor id (a pull hands each
    report out once, so they are stored as receipts rather than lost)."""

    statuses: list[VendorStatus | None]
    others: list[tuple[str, VendorStatus]] = field(default_factory=list)


@runtime_checkable
class StatusSource(Protocol):
    """A provider that answers status queries (pull reconciliation of lost receipts)."""

    async def query_status(self, queries: Sequence[StatusQuery]) -> StatusAnswer:
        """Ask about ``queries``; never raises for a vendor or network fault."""
        ...
