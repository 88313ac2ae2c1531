"""SmsService: sending, reading and watching messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import sms_service_pb2_grpc as pb_grpc

from smsgate_server.api.convert import (
    message_to_proto,
    ms_from_timestamp,
    snapshot_to_proto,
)
from smsgate_server.api.guard import current_app
from smsgate_server.api.watch_events import EventResponses
from smsgate_server.domain.errors import InvalidArgument
from smsgate_server.domain.status import Status
from smsgate_server.domain.validation import MAX_STATUSES, Violations, check_count, check_id
from smsgate_server.services.composing import TemplateRef
from smsgate_server.services.sending import BatchCommand, ListQuery, SendCommand, SendingService
from smsgate_server.services.watch import WatchFilter, WatchHub, current_messages

__all__ = ["SmsServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
MAX_WATCHED_IDS = 1000


class SmsServicer(pb_grpc.SmsServiceServicer):
    """Translates SmsService calls to SendingService calls."""

    def __init__(self, sending: SendingService, hub: WatchHub) -> None:
        self.sending = sending
        self.hub = hub
        self.responses = EventResponses()

    async def SendSms(self, request: pb.SendSmsRequest, context: Context) -> pb.SendSmsResponse:
        violations = Violations()
        app = current_app()
        message = await self.sending.send(
            app.key,
            SendCommand(
                phone=request.phone_number,
                text=request.text,
                template=_template_ref(request),
                numbers=app.numbers,
                policy=app.policy,
                kind=request.kind,
                send_at_ms=violations.check(0, ms_from_timestamp, request, "send_time"),
                request_id=request.request_id,
                sender=request.sender_id,
                labels=dict(request.labels),
                fingerprint=_fingerprint(request),
            ),
            violations,
        )
        return pb.SendSmsResponse(message=message_to_proto(message))

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Context
    ) -> pb.GetMessageResponse:
        message = await self.sending.get(current_app().key, request.message_id)
        return pb.GetMessageResponse(message=message_to_proto(message))

    async def CancelMessage(
        self, request: pb.CancelMessageRequest, context: Context
    ) -> pb.CancelMessageResponse:
        message = await self.sending.cancel(current_app().key, request.message_id)
        return pb.CancelMessageResponse(message=message_to_proto(message))

    async def BatchSend(
        self, request: pb.BatchSendRequest, context: Context
    ) -> pb.BatchSendResponse:
        violations = Violations()
        app = current_app()
        outcome = await self.sending.send_batch(
            app.key,
            BatchCommand(
                phones=[r.phone_number for r in request.recipients],
                text=request.text,
                template=_template_ref(request),
                recipient_params=[r.params for r in request.recipients],
                numbers=app.numbers,
                policy=app.policy,
                kind=request.kind,
                send_at_ms=violations.check(0, ms_from_timestamp, request, "send_time"),
                request_id=request.request_id,
                sender=request.sender_id,
                labels=dict(request.labels),
                fingerprint=_fingerprint(request),
            ),
            violations,
        )
        reply = pb.BatchSendResponse(batch_id=outcome.batch_id)
        for index, (recipient, result) in enumerate(
            zip(request.recipients, outcome.results, strict=True)
        ):
            item = reply.results.add(index=index, phone_number=recipient.phone_number)
            if isinstance(result, str):
                item.message_id = result
                reply.accepted_count += 1
            else:
                item.error.reason, item.error.description = result
                reply.rejected_count += 1
        return reply

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        violations = Violations()
        app = current_app()
        page, token = await self.sending.list_messages(
            app.key,
            ListQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                statuses=violations.check(frozenset(), _statuses, request.statuses),
                phone=request.phone_number,
                batch_id=request.batch_id,
                start_ms=violations.check(0, ms_from_timestamp, request, "start_time"),
                end_ms=violations.check(0, ms_from_timestamp, request, "end_time"),
                region=app.numbers.default_region,
            ),
            violations,
        )
        return pb.ListMessagesResponse(
            messages=[message_to_proto(m) for m in page], next_page_token=token
        )

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Context
    ) -> pb.CancelBatchResponse:
        canceled, not_canceled = await self.sending.cancel_batch(
            current_app().key, request.batch_id
        )
        return pb.CancelBatchResponse(canceled_count=canceled, not_canceled_count=not_canceled)

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        violations = Violations()
        violations.check(None, check_count, request.message_ids, MAX_WATCHED_IDS, "message_ids")
        for i, message_id in enumerate(request.message_ids[:MAX_WATCHED_IDS]):
            violations.check("", check_id, message_id, f"message_ids[{i}]")
        if request.batch_id:
            violations.check("", check_id, request.batch_id, "batch_id")
        statuses = violations.check(frozenset(), _statuses, request.statuses)
        violations.raise_any()
        wanted = WatchFilter(
            message_ids=frozenset(request.message_ids),
            batch_id=request.batch_id,
            statuses=statuses,
        )
        app = current_app().key
        watch = await self.hub.open(app, wanted, request.resume_token)
        try:
            # Headers go out now, so a client knows the subscription is live.
            await context.send_initial_metadata(())
            shown: frozenset[tuple[str, Status]] = frozenset()
            # Read after subscribing, so no change falls between the two; a
            # resume sends none (the client has seen everything up to its token).
            if not request.resume_token and (wanted.message_ids or wanted.batch_id):
                start = watch.start_token()
                snapshot = await current_messages(self.sending, app, wanted)
                shown = frozenset((m.id, h.status) for m in snapshot for h in m.history)
                for message in snapshot:
                    yield pb.WatchStatusResponse(event=snapshot_to_proto(message, start))
            async for event, token in watch.events(shown):
                yield self.responses.get(event, token)
        finally:
            # Also on cancellation (client gone), which must propagate.
            watch.close()


def _statuses(values: Sequence[int]) -> frozenset[Status]:
    """Requested statuses (at most MAX_STATUSES); UNSPECIFIED or unknown values
    are INVALID_ARGUMENT."""
    check_count(values, MAX_STATUSES, "statuses")
    out = set()
    for value in values:
        try:
            out.add(Status(value))
        except ValueError:
            raise InvalidArgument.field(
                "statuses", f"{value} is not a MessageStatus (UNSPECIFIED is not allowed)"
            ) from None
    return frozenset(out)


def _template_ref(request: pb.SendSmsRequest | pb.BatchSendRequest) -> TemplateRef | None:
    """The template content of a send; None for free text (no content at all is
    an empty text: EMPTY_CONTENT, from the text check)."""
    if request.WhichOneof("content") != "template":
        return None
    t = request.template
    return TemplateRef(
        template_id=t.template_id, version=t.version, params=t.params, sign_name=t.sign_name
    )


def _fingerprint(request: pb.SendSmsRequest | pb.BatchSendRequest) -> bytes:
    """What identifies a request for idempotency; only needed with a request id."""
    return request.SerializeToString(deterministic=True) if request.request_id else b""
