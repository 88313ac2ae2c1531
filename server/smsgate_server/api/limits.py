"""The gRPC maximum receive size, computed from the request limits.

The largest request the API accepts is a BatchSend with every field at its
documented maximum: ``batch_max_recipients`` recipients with the longest
phone number, the longest text, every label at full length, a send time, a
request id and a sender id. ``max_request_bytes`` bounds its encoding (every
character counted as 4 UTF-8 bytes) and adds a margin; a larger body is
refused by gRPC with RESOURCE_EXHAUSTED before it is parsed. Template content
and per-recipient parameters are not accepted yet (UNIMPLEMENTED); when they
are, their bounds belong here too.
"""

from __future__ import annotations

from smsgate_server.domain.phone import MAX_PHONE_CHARS
from smsgate_server.domain.validation import (
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_REQUEST_ID_CHARS,
    MAX_SENDER_CHARS,
    TEXT_CHARS_PER_SEGMENT,
)

__all__ = ["largest_batch_send_bytes", "max_request_bytes"]

# UTF-8 takes at most 4 bytes per character.
_UTF8_MAX = 4
# A google.protobuf.Timestamp: tag and length, seconds (tag + 10-byte varint),
# nanos (tag + 5-byte varint).
_TIMESTAMP_FIELD = 2 + 11 + 6
# Room above the computed bound, for what the bound does not foresee (unknown
# fields a newer client sends, encoder differences).
MARGIN = 1.25
MARGIN_BYTES = 64 * 1024


def _varint_bytes(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _length_delimited(payload: int) -> int:
    """A string, bytes or message field of ``payload`` bytes: tag, length, payload."""
    return 1 + _varint_bytes(payload) + payload


def _string(chars: int) -> int:
    return _length_delimited(chars * _UTF8_MAX)


def _map(entries: int, key_chars: int, value_chars: int) -> int:
    return entries * _length_delimited(_string(key_chars) + _string(value_chars))


def _recipient() -> int:
    return _length_delimited(_string(MAX_PHONE_CHARS))


def largest_batch_send_bytes(
    *, batch_max_recipients: int, max_text_segments: int, max_labels: int
) -> int:
    """An upper bound of the encoded size of the largest valid BatchSendRequest."""
    return (
        batch_max_recipients * _recipient()
        + _string(max_text_segments * TEXT_CHARS_PER_SEGMENT)
        + _TIMESTAMP_FIELD
        + _string(MAX_REQUEST_ID_CHARS)
        + _string(MAX_SENDER_CHARS)
        + _map(max_labels, MAX_LABEL_KEY_CHARS, MAX_LABEL_VALUE_CHARS)
    )


def max_request_bytes(*, batch_max_recipients: int, max_text_segments: int, max_labels: int) -> int:
    """``grpc.max_receive_message_length``: the largest valid BatchSend, with margin."""
    largest = largest_batch_send_bytes(
        batch_max_recipients=batch_max_recipients,
        max_text_segments=max_text_segments,
        max_labels=max_labels,
    )
    return int(largest * MARGIN) + MARGIN_BYTES
