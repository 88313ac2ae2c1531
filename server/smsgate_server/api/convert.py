"""Domain objects to protobuf messages and back."""

from __future__ import annotations

import json

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2

from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.events import StatusEvent
from smsgate_server.domain.message import StoredMessage
from smsgate_server.domain.prices import format_micros

__all__ = ["event_to_proto", "message_to_proto", "ms_from_timestamp", "timestamp_from_ms"]


# Shown instead of the text of a message that carries a verification code.
REDACTED = "[redacted: verification code]"


def timestamp_from_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def ms_from_timestamp(message: Message, field: str) -> int:
    """``message.field`` in ms; 0 when unset. A Timestamp outside what
    protobuf allows (nanos past 1e9, years past 9999) is INVALID_ARGUMENT."""
    if not message.HasField(field):
        return 0
    ts = getattr(message, field)
    try:
        return int(ts.ToMilliseconds())
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field, "is not a valid timestamp") from None


def message_to_proto(m: StoredMessage) -> message_pb2.Message:
    """The API view of a stored message."""
    out = message_pb2.Message(
        id=m.id,
        batch_id=m.batch_id,
        phone_number=m.phone,
        rendered_text=REDACTED if m.sensitive else m.rendered,
        segments=m.segments,
        status=m.status.value,  # type: ignore[arg-type]
        create_time=timestamp_from_ms(m.created_ms),
        send_time=timestamp_from_ms(m.send_at_ms),
        update_time=timestamp_from_ms(m.updated_ms),
        provider=m.provider,
        provider_message_id=m.provider_message_id,
        attempts=m.attempts,
        sender_id=m.sender,
        encoding=m.encoding,  # type: ignore[arg-type]
    )
    if m.cost_micros is not None:
        out.estimated_cost = format_micros(m.cost_micros)
        out.cost_currency_code = m.cost_currency
    if m.template_id:
        out.template.template_id = m.template_id
        out.template.version = m.template_version
        out.template.sign_name = m.sign
        # A code's params hold the code (sealed in storage): never shown.
        if m.params_json and not m.sensitive:
            out.template.params.update(json.loads(m.params_json))
    else:
        out.text = REDACTED if m.sensitive else m.text
    if m.labels_json:
        out.labels.update(json.loads(m.labels_json))
    if m.error_code:
        out.error.code = m.error_code
        out.error.reason = m.error_reason
        out.error.retryable = m.error_retryable
    for h in m.history:
        out.history.add(
            status=h.status.value,
            time=timestamp_from_ms(h.time_ms),
            detail=h.detail,
        )
    return out


def snapshot_to_proto(m: StoredMessage, resume_token: str) -> message_pb2.StatusEvent:
    """A watch's snapshot of a message: its current status as an event."""
    latest = m.history[-1] if m.history else None
    out = message_pb2.StatusEvent(
        message_id=m.id,
        batch_id=m.batch_id,
        status=m.status.value,  # type: ignore[arg-type]
        time=timestamp_from_ms(latest.time_ms if latest else m.updated_ms),
        detail=latest.detail if latest else "",
        resume_token=resume_token,
        snapshot=True,
    )
    if m.error_code:
        out.error.code = m.error_code
        out.error.reason = m.error_reason
        out.error.retryable = m.error_retryable
    return out


def event_to_proto(e: StatusEvent, resume_token: str) -> message_pb2.StatusEvent:
    """The API view of a status event."""
    out = message_pb2.StatusEvent(
        message_id=e.message_id,
        batch_id=e.batch_id,
        status=e.status.value,  # type: ignore[arg-type]
        time=timestamp_from_ms(e.time_ms),
        detail=e.detail,
        resume_token=resume_token,
    )
    if e.error_code:
        out.error.code = e.error_code
        out.error.reason = e.error_reason
    return out
