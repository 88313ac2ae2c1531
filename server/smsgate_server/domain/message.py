"""Messages as the domain sees them: what is accepted and what is stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from smsgate_server.domain.status import Status

__all__ = ["HistoryEntry", "NewMessage", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated message about to be accepted."""

    id: str
    phone: str
    rendered: str
    segments: int
    send_at_ms: int
    text: str = ""
    template_id: str = ""
    params_json: str = ""
    sender: str = ""
    labels_json: str = ""
    # The text carries a secret (a verification code): hidden from the API,
    # stored only sealed (domain.sealed_text; ``text`` empty, ``rendered`` the
    # sealed text) and wiped from Redis once a provider has it.
    sensitive: bool = False
    # When it is no use sending any more (a verification code that expired):
    # a message not yet with a provider then ends EXPIRED. 0: never.
    expire_at_ms: int = 0
    # Sent by template: the version rendered, the sign it went under (in the
    # text for China, else the sender id) and the vendor template id per
    # provider (JSON), which vendors that send only reviewed templates need.
    template_version: int = 0
    sign: str = ""
    vendor_ids_json: str = ""
    # domain.encoding.Encoding of ``rendered`` (0: not recorded): with
    # ``segments``, what the vendor bills.
    encoding: int = 0
    # A marketing message (a marketing template, or free text named marketing):
    # its recipient's opt-out is checked again just before it is sent, as a
    # STOP may arrive while it is held for quiet hours or scheduled.
    marketing: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One status change: the status entered, when (ms) and why."""

    status: Status
    time_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back from the store, with its history."""

    id: str
    batch_id: str
    phone: str
    text: str
    template_id: str
    params_json: str
    rendered: str
    segments: int
    status: Status
    created_ms: int
    send_at_ms: int
    updated_ms: int
    provider: str
    provider_message_id: str
    attempts: int
    error_code: str
    error_reason: str
    error_retryable: bool
    sender: str
    labels_json: str
    history: list[HistoryEntry] = field(default_factory=list)
    sensitive: bool = False
    template_version: int = 0
    sign: str = ""
    vendor_ids_json: str = ""
    encoding: int = 0
    # Its estimated cost in micro-units of ``cost_currency`` ('' when its
    # provider has no prices), fixed when it entered SENT; None before.
    cost_micros: int | None = None
    cost_currency: str = ""
