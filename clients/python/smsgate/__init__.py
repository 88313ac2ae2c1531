"""smsgate: the Python client of the smsgate SMS service.

A thin typed client, sync (:class:`Client`) and async (:class:`AsyncClient`),
over the generated ``smsgate.v1`` stubs (also importable on their own)::

    import smsgate

    with smsgate.Client.from_env() as sms:  # SMSGATE_TARGET, SMSGATE_TOKEN
        message = sms.send_and_wait("+14155550123", "Your order has shipped")
"""

from smsgate.aio import AsyncClient
from smsgate.build import TERMINAL, Recipient
from smsgate.client import Client
from smsgate.connection import TLS, Connection
from smsgate.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    Error,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from smsgate.v1.inbound_service_pb2 import Reply
from smsgate.v1.message_pb2 import Message, MessageStatus, StatusEvent

__version__ = "0.1.0"

__all__ = [
    "TERMINAL",
    "TLS",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Connection",
    "DataLoss",
    "DeadlineExceeded",
    "Error",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "Message",
    "MessageStatus",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QuotaViolation",
    "Recipient",
    "Reply",
    "ResourceExhausted",
    "StatusEvent",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
]
