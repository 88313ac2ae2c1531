"""The HTTP/JSON face: the smsgate services over the Connect protocol
(https://connectrpc.com/docs/protocol) on the HTTP side port.

``POST /smsgate.v1.SmsService/SendSms`` with ``content-type: application/json``
(or ``application/proto``) is a unary call; WatchStatus, the one server stream,
takes ``application/connect+json`` (or ``+proto``) and answers with enveloped
messages and an end-of-stream message that carries the error, if any.

No RPC is implemented twice: each call goes to the guarded gRPC handler that
``RequestGuard`` registered for the gRPC port, with a context object standing
in for ``grpc.aio.ServicerContext``. Authentication, validation, admission,
metrics and the mapping of domain errors (api/errors.py) are therefore the
very same on both faces; this module only translates the transport: the
request body to the request message, the status the guard set to Connect's
error JSON (``code``, ``message``, ``details`` with base64 ``value`` and a
``debug`` rendering).

Why not the ``connect-python`` package (connectrpc, 0.9.0): it decodes the
request before any handler runs and answers a body that does not parse with
``unknown`` and the parser's text (no BadRequest, and before authentication),
reads the whole body before checking its size, and brings ``pyqwest`` (a
compiled HTTP client) the server has no use for. What it would have saved is
the part below: framing, codes and content types.

JSON requests are parsed strictly: an unknown field is INVALID_ARGUMENT naming
it, not silently dropped, so a misspelt ``sendTime`` cannot turn a scheduled
send into an immediate one. GET is not offered (Connect allows it only for
methods marked side-effect free; none are), nor is compression.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from smsgate_server.api.errors import STATUS_DETAILS_KEY, to_rpc_status
from smsgate_server.api.guard import RequestGuard, Undecodable
from smsgate_server.domain.errors import FieldViolation, InvalidArgument

__all__ = ["CONNECT_CODES", "JSON_SIZE_FACTOR", "ConnectFace"]

# Connect's name and HTTP status for each gRPC code (the protocol's table).
CONNECT_CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.CANCELLED: ("canceled", 499),
    grpc.StatusCode.UNKNOWN: ("unknown", 500),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid_argument", 400),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    grpc.StatusCode.NOT_FOUND: ("not_found", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("already_exists", 409),
    grpc.StatusCode.PERMISSION_DENIED: ("permission_denied", 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    grpc.StatusCode.FAILED_PRECONDITION: ("failed_precondition", 400),
    grpc.StatusCode.ABORTED: ("aborted", 409),
    grpc.StatusCode.OUT_OF_RANGE: ("out_of_range", 400),
    grpc.StatusCode.UNIMPLEMENTED: ("unimplemented", 501),
    grpc.StatusCode.INTERNAL: ("internal", 500),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", 503),
    grpc.StatusCode.DATA_LOSS: ("data_loss", 500),
    grpc.StatusCode.UNAUTHENTICATED: ("unauthenticated", 401),
}
# A JSON body may be this many times the gRPC receive limit: field names are
# spelt out, and a client may escape every non-ASCII character as \\uXXXX.
JSON_SIZE_FACTOR = 3
PACKAGE = "smsgate.v1"
_UNARY_TYPES = {"application/json": "json", "application/proto": "proto"}
_STREAM_TYPES = {"application/connect+json": "json", "application/connect+proto": "proto"}
# An envelope: one flags byte and a big-endian length (Connect streaming).
_ENVELOPE = struct.Struct(">BI")
_END_STREAM = 0b10
_COMPRESSED = 0b01
# Connect-Timeout-Ms: at most 10 digits.
_TIMEOUT = re.compile(r"[0-9]{1,10}")
# What json_format's ParseError says about a field, to name it in the violation:
# an unknown field and where it is, or a bad value's path (or its name alone).
_UNKNOWN_FIELD = re.compile(r'no field named "([^"]+)" at "\w+\.?([^"]*)"')
_BAD_VALUE_AT = re.compile(r" at \w+\.([\w.\[\]]+?)\.?$")
_BAD_VALUE = re.compile(r"Failed to parse (\w+) field")
MAX_PARSE_ERROR_CHARS = 300
# The google.rpc details the guard sets, rendered as "debug" in errors.
_DETAIL_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        error_details_pb2.QuotaFailure,
    )
}


class _CallContext:
    """The part of ``grpc.aio.ServicerContext`` the guarded handlers use, for
    a call that came over HTTP."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.status: bytes | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: tuple[tuple[str, bytes], ...]) -> None:
        for key, value in metadata:
            if key == STATUS_DETAILS_KEY:
                self.status = value

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        # The stream's HTTP headers went out before the handler ran.
        return None

    def error(self) -> dict[str, Any] | None:
        """Connect's error object for the status the handler set; None if OK."""
        if self.code is None or self.code is grpc.StatusCode.OK:
            return None
        status = status_pb2.Status.FromString(self.status) if self.status else None
        return _error_object(self.code, self.details, status)


@dataclass(frozen=True)
class _Method:
    """A Connect procedure: the guarded handler and the request's message class."""

    handler: grpc.RpcMethodHandler[Any, Any]
    request: type[Message]
    streaming: bool


class ConnectFace:
    """The ASGI endpoint serving every smsgate RPC over Connect.

    Mounted before the gRPC services exist (the side port starts first), it
    answers ``unavailable`` until ``serve`` hands it the guard."""

    def __init__(self, *, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self._guard: RequestGuard | None = None
        # Bounded: only paths of registered handlers are kept.
        self._methods: dict[str, _Method] = {}

    def serve(self, guard: RequestGuard) -> None:
        """Answer calls with the handlers registered through ``guard``."""
        self._guard = guard

    def routes(self) -> list[BaseRoute]:
        """The side port's route for ``/smsgate.v1.<Service>/<Method>``."""
        # An ASGI callable, not a function: Starlette then leaves every HTTP
        # method to it, and the 405 answer is a Connect one.
        return [Route(f"/{PACKAGE}.{{service}}/{{method}}", endpoint=_Endpoint(self))]

    def method(self, path: str) -> _Method | None:
        """The procedure at ``path``, or None: not an smsgate RPC."""
        known = self._methods.get(path)
        if known is not None:
            return known
        assert self._guard is not None
        found: _Method | None = None
        handler = self._guard.handler(path)
        if handler is not None:
            try:
                desc = descriptor_pool.Default().FindMethodByName(path[1:].replace("/", "."))
            except KeyError:
                desc = None
            if desc is not None:
                found = _Method(
                    handler,
                    message_factory.GetMessageClass(desc.input_type),
                    handler.unary_stream is not None,
                )
        if found is not None:
            self._methods[path] = found
        return found

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request: what the protocol refuses first (before any
        authentication, as gRPC refuses an unknown method or an oversized
        message), then the call itself through the guarded handler."""
        request = Request(scope, receive)
        if self._guard is None:
            await _reply_error(send, grpc.StatusCode.UNAVAILABLE, "the server is starting")
            return
        method = self.method(request.url.path)
        if method is None:
            # Connect (like connect-go) answers an unknown procedure 404.
            await _reply_error(
                send, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {request.url.path}", http=404
            )
            return
        if request.method != "POST":
            await _reply_error(
                send,
                grpc.StatusCode.UNIMPLEMENTED,
                "use POST (GET is not offered)",
                http=405,
                headers=[(b"allow", b"POST")],
            )
            return
        types = _STREAM_TYPES if method.streaming else _UNARY_TYPES
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        codec = types.get(content_type)
        if codec is None:
            accepted = ", ".join(types)
            await _reply_error(
                send,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"content-type must be one of: {accepted}",
                http=415,
                headers=[(b"accept-post", accepted.encode())],
            )
            return
        problem = _header_problem(request, streaming=method.streaming)
        if problem is not None:
            await _reply_error(send, *problem)
            return
        try:
            body = await _read_body(request, self.max_body_bytes)
        except ClientDisconnect:
            return  # gone before it finished sending
        if body is None:
            await _reply_error(
                send,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request body is larger than {self.max_body_bytes} bytes",
            )
            return
        timeout = _timeout_seconds(request)
        context = _CallContext(
            tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        )
        if method.streaming:
            message = _decode(_unwrap(body), method.request, codec)
            await _stream(method, message, context, codec, timeout, receive, send)
        else:
            message = _decode(body, method.request, codec)
            await _unary(method, message, context, codec, timeout, send)


class _Endpoint:
    """ConnectFace as an ASGI app, so Starlette's Route passes every method."""

    def __init__(self, face: ConnectFace) -> None:
        self.face = face

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.face.handle(scope, receive, send)


async def _unary(
    method: _Method,
    message: Message | Undecodable,
    context: _CallContext,
    codec: str,
    timeout: float | None,
    send: Send,
) -> None:
    # The guarded handler takes our context in place of grpc's (duck-typed).
    call: Callable[..., Awaitable[Message | None]] = method.handler.unary_unary  # type: ignore[assignment]
    try:
        async with asyncio.timeout(timeout):
            reply = await call(message, context)
    except TimeoutError:
        await _reply_error(send, grpc.StatusCode.DEADLINE_EXCEEDED, "the call timed out")
        return
    error = context.error()
    if error is None and reply is None:
        error = _error_object(grpc.StatusCode.INTERNAL, "the handler gave no response", None)
    if error is not None:
        await _reply(send, CONNECT_HTTP[error["code"]], error)
        return
    assert reply is not None
    content_type, body = _encode(reply, codec)
    await _send(send, 200, content_type, body)


async def _stream(
    method: _Method,
    message: Message | Undecodable,
    context: _CallContext,
    codec: str,
    timeout: float | None,
    receive: Receive,
    send: Send,
) -> None:
    """A server stream: headers at once (Connect streams always answer 200),
    then one envelope per message, then the end-of-stream envelope. A client
    that goes away cancels the handler, as on the gRPC port."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", f"application/connect+{codec}".encode())],
        }
    )

    async def produce() -> dict[str, Any] | None:
        stream: Callable[..., AsyncIterator[Message]] = method.handler.unary_stream  # type: ignore[assignment]
        items = stream(message, context)
        try:
            async with asyncio.timeout(timeout):
                async for item in items:
                    payload = _encode(item, codec)[1]
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _ENVELOPE.pack(0, len(payload)) + payload,
                            "more_body": True,
                        }
                    )
        except TimeoutError:
            return _error_object(grpc.StatusCode.DEADLINE_EXCEEDED, "the call timed out", None)
        return context.error()

    producer = asyncio.create_task(produce())
    gone = asyncio.create_task(_disconnected(receive))
    try:
        await asyncio.wait([producer, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (producer, gone):
            task.cancel()
        await asyncio.gather(producer, gone, return_exceptions=True)
    if gone.done() and not gone.cancelled():
        return  # nobody to tell
    error = producer.result()
    end = json.dumps({"error": error} if error else {}).encode()
    await send(
        {
            "type": "http.response.body",
            "body": _ENVELOPE.pack(_END_STREAM, len(end)) + end,
            "more_body": False,
        }
    )


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _decode(body: bytes | Undecodable, cls: type[Message], codec: str) -> Message | Undecodable:
    """The request message, or what was wrong with the body; the handler
    answers the latter once the caller is authenticated."""
    if isinstance(body, Undecodable):
        return body
    message = cls()
    try:
        if codec == "proto":
            message.ParseFromString(body)
        elif body.strip():
            # An empty body is the empty message, as in protobuf.
            document = json.loads(body)
            if not isinstance(document, dict):
                return Undecodable(FieldViolation("", "the request body must be a JSON object"))
            json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except Exception as exc:  # any parser failure is the caller's bad body
        return Undecodable(_parse_violation(exc, codec))
    return message


def _parse_violation(exc: Exception, codec: str) -> FieldViolation:
    if codec == "proto":
        return FieldViolation("", "the request body is not a valid protobuf request message")
    text = str(exc).replace("\n", " ").strip()
    field = ""
    if unknown := _UNKNOWN_FIELD.search(text):
        field = ".".join(part for part in (unknown[2], unknown[1]) if part)
    elif at := _BAD_VALUE_AT.search(text):
        field = at[1]
    elif named := _BAD_VALUE.search(text):
        field = named[1]
    if len(text) > MAX_PARSE_ERROR_CHARS:
        text = text[: MAX_PARSE_ERROR_CHARS - 1] + "…"
    return FieldViolation(field, f"the request body is not the request message in JSON: {text}")


def _unwrap(body: bytes) -> bytes | Undecodable:
    """The one message of a streaming request's body (one envelope)."""
    if len(body) < _ENVELOPE.size:
        return Undecodable(FieldViolation("", "the body is not one Connect envelope"))
    flags, length = _ENVELOPE.unpack_from(body)
    if flags & _COMPRESSED:
        return Undecodable(FieldViolation("", "compressed envelopes are not accepted"))
    if flags != 0 or length != len(body) - _ENVELOPE.size:
        return Undecodable(FieldViolation("", "the body is not one Connect envelope"))
    return body[_ENVELOPE.size :]


def _encode(message: Message, codec: str) -> tuple[str, bytes]:
    if codec == "proto":
        return "application/proto", message.SerializeToString()
    text = json_format.MessageToJson(message, indent=None, ensure_ascii=False)
    return "application/json", text.encode()


def _header_problem(request: Request, *, streaming: bool) -> tuple[grpc.StatusCode, str] | None:
    """A protocol header this server cannot honour: its status and message."""
    version = request.headers.get("connect-protocol-version")
    if version is not None and version != "1":
        return grpc.StatusCode.INVALID_ARGUMENT, "connect-protocol-version must be 1"
    name = "connect-content-encoding" if streaming else "content-encoding"
    encoding = request.headers.get(name, "identity").strip().lower()
    if encoding != "identity":
        return grpc.StatusCode.UNIMPLEMENTED, f"{name} {encoding!r} is not supported: send identity"
    timeout = request.headers.get("connect-timeout-ms")
    if timeout is not None and not _TIMEOUT.fullmatch(timeout):
        return grpc.StatusCode.INVALID_ARGUMENT, "connect-timeout-ms must be 1 to 10 digits"
    return None


def _timeout_seconds(request: Request) -> float | None:
    timeout = request.headers.get("connect-timeout-ms")
    return int(timeout) / 1000 if timeout is not None else None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (not read further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_object(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> dict[str, Any]:
    """Connect's JSON error: code, message, and each detail as type, unpadded
    base64 value and (for the google.rpc types we send) a readable debug."""
    error: dict[str, Any] = {"code": CONNECT_CODES[code][0], "message": message}
    if status is not None and status.details:
        details = []
        for detail in status.details:
            name = detail.type_url.rsplit("/", 1)[-1]
            item: dict[str, Any] = {
                "type": name,
                "value": base64.b64encode(detail.value).decode().rstrip("="),
            }
            cls = _DETAIL_TYPES.get(name)
            if cls is not None:
                item["debug"] = json_format.MessageToDict(cls.FromString(detail.value))
            details.append(item)
        error["details"] = details
    return error


CONNECT_HTTP = {name: http for name, http in CONNECT_CODES.values()}


async def _reply_error(
    send: Send,
    code: grpc.StatusCode,
    message: str,
    *,
    http: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An error this module finds itself (before any handler ran); invalid
    arguments get their ErrorInfo and BadRequest like every other."""
    status = None
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        status = to_rpc_status(InvalidArgument(FieldViolation("", message)))
    error = _error_object(code, message, status)
    await _reply(send, http or CONNECT_CODES[code][1], error, headers)


async def _reply(
    send: Send,
    status: int,
    error: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await _send(send, status, "application/json", json.dumps(error).encode(), headers)


async def _send(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
