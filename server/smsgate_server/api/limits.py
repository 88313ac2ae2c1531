"""The gRPC maximum receive size, computed from the request limits.

The largest request the API accepts is a BatchSend with every field at its
documented maximum: ``batch_max_recipients`` recipients with the longest
phone number and their own template params at full size, the longer of the
longest text and the largest template content, every label at full length, a
send time, a request id and a sender id. ``max_request_bytes`` bounds its
encoding (every character counted as 4 UTF-8 bytes) and adds a margin; a
larger body is refused by gRPC with RESOURCE_EXHAUSTED before it is parsed.
"""

from __future__ import annotations

from smsgate_server.domain.phone import MAX_PHONE_CHARS
from smsgate_server.domain.templates import MAX_PARAM_LENGTH, MAX_SIGN_LENGTH, MAX_VARIABLES
from smsgate_server.domain.validation import (
    MAX_ID_CHARS,
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_RECIPIENT_PARAMS,
    MAX_RECIPIENT_PARAMS_BYTES,
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


# A placeholder name: 1-64 letters, digits and _ (domain.templates).
_PARAM_NAME_CHARS = 64
# A map entry of short strings: entry tag and length, key tag and length, value
# tag and length (each length one byte, under 128).
_SMALL_ENTRY_FRAMING = 6
# An int32 field (a template version): tag and a varint of up to 5 bytes.
_INT32_FIELD = 6


def _recipient() -> int:
    """A recipient: the longest phone number and its own params at full size
    (at most MAX_RECIPIENT_PARAMS entries of MAX_RECIPIENT_PARAMS_BYTES in all)."""
    params = MAX_RECIPIENT_PARAMS * _SMALL_ENTRY_FRAMING + MAX_RECIPIENT_PARAMS_BYTES
    return _length_delimited(_string(MAX_PHONE_CHARS) + params)


def _template_content() -> int:
    """A TemplateContent: id, every placeholder's value, version, sign name."""
    return _length_delimited(
        _string(MAX_ID_CHARS)
        + _map(MAX_VARIABLES, _PARAM_NAME_CHARS, MAX_PARAM_LENGTH)
        + _INT32_FIELD
        + _string(MAX_SIGN_LENGTH)
    )


def largest_batch_send_bytes(
    *, batch_max_recipients: int, max_text_segments: int, max_labels: int
) -> int:
    """An upper bound of the encoded size of the largest valid BatchSendRequest."""
    return (
        batch_max_recipients * _recipient()
        + max(_string(max_text_segments * TEXT_CHARS_PER_SEGMENT), _template_content())
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
