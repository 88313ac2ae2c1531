"""The sync client, on blocking ``grpc`` channels."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, message

from smsgate.build import (
    TERMINAL,
    Recipient,
    batch_request,
    load_token,
    new_request_id,
    outlives,
    save_token,
    send_request,
)
from smsgate.connection import TLS, Backoff, Connection
from smsgate.errors import DeadlineExceeded, Error, error_from_rpc
from smsgate.v1 import (
    inbound_service_pb2,
    inbound_service_pb2_grpc,
    message_pb2,
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    verification_service_pb2,
    verification_service_pb2_grpc,
)

__all__ = ["Client"]

Req = TypeVar("Req", bound=message.Message)
Resp = TypeVar("Resp", bound=message.Message)
Status: TypeAlias = message_pb2.MessageStatus.ValueType


class Client:
    """An smsgate client: one channel, the app token on every call, failures
    raised as :class:`smsgate.Error` subclasses. Safe to share between threads.

    Use as ``with Client.from_env() as sms: ...`` or call ``close()``.
    """

    def __init__(self, target: str, token: str, *, tls: TLS | bool | None = None) -> None:
        """Connect to ``target`` (host:port) as the app of ``token``; ``tls=True``
        trusts the system's roots, a :class:`TLS` says more."""
        self.connection = Connection(target, token, TLS() if tls is True else tls or None)
        self._channel = self.connection.channel()
        self._metadata = self.connection.metadata
        self.sms = sms_service_pb2_grpc.SmsServiceStub(self._channel)
        self.templates = template_service_pb2_grpc.TemplateServiceStub(self._channel)
        self.verification = verification_service_pb2_grpc.VerificationServiceStub(self._channel)
        self.inbound = inbound_service_pb2_grpc.InboundServiceStub(self._channel)
        self.usage = usage_service_pb2_grpc.UsageServiceStub(self._channel)

    @classmethod
    def from_env(cls) -> Client:
        """A client configured by ``SMSGATE_TARGET``, ``SMSGATE_TOKEN`` and
        ``SMSGATE_TLS*`` (see :meth:`smsgate.Connection.from_env`)."""
        c = Connection.from_env()
        return cls(c.target, c.token, tls=c.tls)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
    ) -> Resp:
        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    # -- messages ---------------------------------------------------------

    def send(
        self,
        phone_number: str,
        text: str | None = None,
        *,
        template_id: str | None = None,
        params: Mapping[str, str] | None = None,
        template_version: int = 0,
        sign_name: str = "",
        send_time: datetime | None = None,
        sender_id: str = "",
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        marketing: bool = False,
        timeout: float | None = 30.0,
    ) -> message_pb2.Message:
        """Send ``text`` (or the template ``template_id`` with ``params``) to one
        number; returns the accepted message. A request id (uuid4) is made when
        none is given, so the automatic retries of UNAVAILABLE are safe.
        ``marketing`` marks free text as marketing (opt-outs and quiet hours apply)."""
        request = send_request(
            phone_number,
            text,
            template_id=template_id,
            params=params,
            template_version=template_version,
            sign_name=sign_name,
            send_time=send_time,
            sender_id=sender_id,
            labels=labels,
            request_id=request_id,
            marketing=marketing,
        )
        return (self._call(self.sms.SendSms, request, timeout)).message

    def send_batch(
        self,
        recipients: Iterable[Recipient],
        text: str | None = None,
        *,
        template_id: str | None = None,
        params: Mapping[str, str] | None = None,
        template_version: int = 0,
        sign_name: str = "",
        send_time: datetime | None = None,
        sender_id: str = "",
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        marketing: bool = False,
        timeout: float | None = 60.0,
    ) -> sms_service_pb2.BatchSendResponse:
        """Send one content to many numbers (each a number, or a number with its
        own params); each recipient's result says accepted (an id) or why not."""
        request = batch_request(
            recipients,
            text,
            template_id=template_id,
            params=params,
            template_version=template_version,
            sign_name=sign_name,
            send_time=send_time,
            sender_id=sender_id,
            labels=labels,
            request_id=request_id,
            marketing=marketing,
        )
        return self._call(self.sms.BatchSend, request, timeout)

    def get(self, message_id: str, *, timeout: float | None = 30.0) -> message_pb2.Message:
        """One message with its status history."""
        request = sms_service_pb2.GetMessageRequest(message_id=message_id)
        return (self._call(self.sms.GetMessage, request, timeout)).message

    def list(
        self,
        *,
        statuses: Iterable[Status] = (),
        phone_number: str = "",
        batch_id: str = "",
        page_size: int = 0,
        timeout: float | None = 30.0,
    ) -> Iterator[message_pb2.Message]:
        """The app's messages, newest first, fetching page after page as iterated."""
        request = sms_service_pb2.ListMessagesRequest(
            statuses=statuses, phone_number=phone_number, batch_id=batch_id, page_size=page_size
        )
        while True:
            page = self._call(self.sms.ListMessages, request, timeout)
            yield from page.messages
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def cancel(self, message_id: str, *, timeout: float | None = 30.0) -> message_pb2.Message:
        """Cancel a message not yet handed to a provider; returns it, CANCELED."""
        request = sms_service_pb2.CancelMessageRequest(message_id=message_id)
        return (self._call(self.sms.CancelMessage, request, timeout)).message

    def cancel_batch(
        self, batch_id: str, *, timeout: float | None = 30.0
    ) -> sms_service_pb2.CancelBatchResponse:
        """Cancel every message of a batch not yet handed to a provider."""
        request = sms_service_pb2.CancelBatchRequest(batch_id=batch_id)
        return self._call(self.sms.CancelBatch, request, timeout)

    # -- watching ---------------------------------------------------------

    def watch(
        self,
        *,
        message_ids: Iterable[str] = (),
        batch_id: str = "",
        statuses: Iterable[Status] = (),
        resume_token: str = "",
        token_file: str | Path | None = None,
    ) -> Iterator[message_pb2.StatusEvent]:
        """Status events as they happen, for ever: after a disconnect (a server
        restart, UNAVAILABLE, a subscriber asked to slow down) it reconnects and
        resumes after the last event it yielded, so none is missed or repeated.
        Other errors end it, among them :class:`smsgate.OutOfRange` for a token
        older than the server keeps events.

        With ``token_file``, it starts from the token saved there and saves each
        event's token once the caller asks for the next event, so a program
        that restarts resumes after the last event it finished with.
        """
        path = Path(token_file) if token_file is not None else None
        token = resume_token or load_token(path)
        ids, wanted = list(message_ids), list(statuses)
        backoff = Backoff()
        while True:
            request = sms_service_pb2.WatchStatusRequest(
                message_ids=ids, batch_id=batch_id, statuses=wanted, resume_token=token
            )
            call = self.sms.WatchStatus(request, metadata=self._metadata)
            error: Error | None = None
            try:
                for response in call:
                    backoff.reset()
                    yield response.event
                    token = response.event.resume_token
                    if path is not None:
                        save_token(path, token)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if not outlives(error):
                    raise error from None
            finally:
                call.cancel()
            time.sleep(backoff.delay(error.retry_after if error else None))

    def watch_replies(
        self,
        *,
        resume_token: str = "",
        token_file: str | Path | None = None,
    ) -> Iterator[inbound_service_pb2.Reply]:
        """Replies (mobile-originated SMS) to the app as they arrive, for ever:
        after a disconnect it reconnects and resumes after the last reply it
        yielded, so none is missed or repeated. Other errors end it, among them
        :class:`smsgate.OutOfRange` for a token whose replies were dropped.

        With ``token_file``, it starts from the token saved there and saves the
        token of where the stream starts, then each reply's once the caller asks
        for the next, so a program that restarts misses no reply.
        """
        path = Path(token_file) if token_file is not None else None
        token = resume_token or load_token(path)
        backoff = Backoff()
        while True:
            request = inbound_service_pb2.WatchRepliesRequest(resume_token=token)
            call = self.inbound.WatchReplies(request, metadata=self._metadata)
            error: Error | None = None
            try:
                for response in call:
                    backoff.reset()
                    # The first response only says where the stream starts.
                    if response.HasField("reply"):
                        yield response.reply
                    token = response.resume_token
                    if path is not None:
                        save_token(path, token)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if not outlives(error):
                    raise error from None
            finally:
                call.cancel()
            time.sleep(backoff.delay(error.retry_after if error else None))

    def wait(
        self,
        message_id: str,
        *,
        until: Collection[Status] = TERMINAL,
        timeout: float = 60.0,
    ) -> message_pb2.Message:
        """Wait until the message is in one of ``until`` (by default any terminal
        status) and return it; ``TimeoutError`` after ``timeout`` seconds.

        It cannot miss the change: the watch is open on the server (its headers
        arrived) before the message is read, so a change is either in that read
        or comes down the stream afterwards.
        """
        backoff = Backoff()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"message {message_id} not in {sorted(until)} after {timeout}s")
            request = sms_service_pb2.WatchStatusRequest(message_ids=[message_id])
            call = self.sms.WatchStatus(request, metadata=self._metadata, timeout=left)
            error: Error | None = None
            try:
                call.initial_metadata()
                message = self.get(message_id, timeout=left)
                if message.status in until:
                    return message
                for response in call:
                    if response.event.status in until:
                        return self.get(message_id, timeout=left)
            except (grpc.RpcError, Error) as exc:
                error = exc if isinstance(exc, Error) else error_from_rpc(exc)
                if isinstance(error, DeadlineExceeded):
                    raise TimeoutError(
                        f"message {message_id} not in {sorted(until)} after {timeout}s"
                    ) from None
                if not outlives(error):
                    raise error from None
            finally:
                call.cancel()
            time.sleep(min(backoff.delay(error.retry_after if error else None), left))

    def send_and_wait(
        self,
        phone_number: str,
        text: str | None = None,
        *,
        template_id: str | None = None,
        params: Mapping[str, str] | None = None,
        template_version: int = 0,
        sign_name: str = "",
        send_time: datetime | None = None,
        sender_id: str = "",
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        until: Collection[Status] = TERMINAL,
        timeout: float = 60.0,
    ) -> message_pb2.Message:
        """:meth:`send`, then :meth:`wait` for the message (``timeout`` covers both)."""
        started = time.monotonic()
        sent = self.send(
            phone_number,
            text,
            template_id=template_id,
            params=params,
            template_version=template_version,
            sign_name=sign_name,
            send_time=send_time,
            sender_id=sender_id,
            labels=labels,
            request_id=request_id,
            timeout=timeout,
        )
        left = timeout - (time.monotonic() - started)
        return self.wait(sent.id, until=until, timeout=left)

    # -- verification codes -----------------------------------------------

    def generate_code(
        self,
        phone_number: str,
        scope: str,
        *,
        length: int = 0,
        alphabet: verification_service_pb2.CodeAlphabet.ValueType = (
            verification_service_pb2.CODE_ALPHABET_UNSPECIFIED
        ),
        validity_seconds: int = 0,
        delivery: verification_service_pb2.CodeDelivery.ValueType = (
            verification_service_pb2.CODE_DELIVERY_UNSPECIFIED
        ),
        template_id: str = "",
        sender_id: str = "",
        timeout: float | None = 30.0,
    ) -> verification_service_pb2.GenerateCodeResponse:
        """Issue a code for ``phone_number`` and ``scope`` (sent by SMS unless
        ``delivery`` is CODE_DELIVERY_CALLER, which returns it). Not retried
        automatically: a repeat would issue a second code."""
        request = verification_service_pb2.GenerateCodeRequest(
            phone_number=phone_number,
            scope=scope,
            length=length,
            alphabet=alphabet,
            validity=duration_pb2.Duration(seconds=validity_seconds) if validity_seconds else None,
            delivery=delivery,
            template_id=template_id,
            sender_id=sender_id,
        )
        return self._call(self.verification.GenerateCode, request, timeout)

    def verify_code(
        self,
        code: str,
        *,
        verification_id: str = "",
        phone_number: str = "",
        scope: str = "",
        timeout: float | None = 30.0,
    ) -> verification_service_pb2.VerifyCodeResponse:
        """Check a code, by its verification id or by phone number and scope."""
        request = verification_service_pb2.VerifyCodeRequest(
            verification_id=verification_id, phone_number=phone_number, scope=scope, code=code
        )
        return self._call(self.verification.VerifyCode, request, timeout)

    # -- templates --------------------------------------------------------

    def create_template(
        self,
        body: str,
        *,
        kind: template_service_pb2.TemplateKind.ValueType,
        template_id: str = "",
        display_name: str = "",
        sign_name: str = "",
        provider_template_ids: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = 30.0,
    ) -> template_service_pb2.Template:
        """Create a template (version 1); the id is generated when not given."""
        template = template_service_pb2.Template(
            id=template_id,
            body=body,
            kind=kind,
            display_name=display_name,
            sign_name=sign_name,
            provider_template_ids=provider_template_ids,
        )
        request = template_service_pb2.CreateTemplateRequest(
            template=template, request_id=request_id or new_request_id()
        )
        return (self._call(self.templates.CreateTemplate, request, timeout)).template

    def get_template(
        self, template_id: str, *, version: int = 0, timeout: float | None = 30.0
    ) -> template_service_pb2.Template:
        """A template's latest version, or ``version``."""
        request = template_service_pb2.GetTemplateRequest(template_id=template_id, version=version)
        return (self._call(self.templates.GetTemplate, request, timeout)).template

    def list_templates(
        self, *, page_size: int = 0, timeout: float | None = 30.0
    ) -> Iterator[template_service_pb2.Template]:
        """The app's templates, fetching page after page as iterated."""
        request = template_service_pb2.ListTemplatesRequest(page_size=page_size)
        while True:
            page = self._call(self.templates.ListTemplates, request, timeout)
            yield from page.templates
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def render_template(
        self,
        template_id: str = "",
        *,
        body: str = "",
        params: Mapping[str, str] | None = None,
        template_version: int = 0,
        sign_name: str = "",
        phone_number: str = "",
        region_code: str = "",
        timeout: float | None = 30.0,
    ) -> template_service_pb2.RenderTemplateResponse:
        """Preview a template (or a ``body``): the text as it would be sent, its
        encoding and segments, for a number or a region."""
        request = template_service_pb2.RenderTemplateRequest(
            params=params, template_version=template_version, sign_name=sign_name
        )
        if template_id:
            request.template_id = template_id
        else:
            request.body = body
        if phone_number:
            request.phone_number = phone_number
        elif region_code:
            request.region_code = region_code
        return self._call(self.templates.RenderTemplate, request, timeout)

    # -- usage ------------------------------------------------------------

    def get_usage(
        self, start: date | str, end: date | str | None = None, *, timeout: float | None = 30.0
    ) -> usage_service_pb2.GetUsageResponse:
        """The app's messages, segments and cost per day (UTC) from ``start`` to
        ``end`` (included; ``start`` alone: that one day), at most 93 days."""
        request = usage_service_pb2.GetUsageRequest(
            start_date=str(start), end_date=str(start if end is None else end)
        )
        return self._call(self.usage.GetUsage, request, timeout)
