"""Faults: the short chaos run (``make chaos`` runs the full one), messages
sent from two client processes and watched by a third while the server and
then Redis are killed with SIGKILL and restarted; and calls cut off by their
deadline. Nothing accepted is lost or accepted twice, no event missed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from smsgate.v1 import sms_service_pb2 as pb

from tests.chaos import Conductor, Plan
from tests.support import bearer

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

SHORT = Plan(
    messages=5_000,
    clients=2,
    batch_size=250,
    server_kills=1,
    redis_kills=1,
    give_up_seconds=60,
    settle_seconds=60,
)


@pytest.mark.slow
def test_accepted_messages_survive_a_server_kill_and_a_redis_kill(tmp_path: Path) -> None:
    report = Conductor(SHORT, tmp_path, say=False).run()
    figures = "\n".join(report.lines())
    assert report.accepted == SHORT.messages, figures
    assert report.lost == [], figures
    # Messages SENT at a server kill lose the simulator's receipt and expire;
    # the simulator fails and does not deliver some on purpose.
    outcomes = {"DELIVERED", "EXPIRED", "FAILED", "UNDELIVERED"}
    assert report.terminal.keys() <= {f"MESSAGE_STATUS_{o}" for o in outcomes}, figures
    assert report.duplicates <= report.in_flight_at_kills, figures
    assert report.sent_not_accepted == 0, figures
    # Outages answer UNAVAILABLE, never UNKNOWN or INTERNAL (the app's accept
    # rate may answer RESOURCE_EXHAUSTED; the clients wait and retry).
    retried = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
    assert report.answers.keys() <= {"OK", *retried}, figures
    # A watcher resuming from its last token after every error saw each status
    # change of each accepted message once, in order.
    assert report.watched > 0, figures
    assert (report.watch_missing, report.watch_repeated, report.watch_out_of_order) == (0, 0, 0)
    assert not report.watch_answers.keys() & {"UNKNOWN", "INTERNAL"}, figures


async def test_a_batch_cut_off_by_deadlines_and_retried_accepts_each_recipient_once(
    sms: SmsServiceAsyncStub, token: str
) -> None:
    request = pb.BatchSendRequest(
        recipients=[pb.BatchRecipient(phone_number=f"+1415555{i:04d}") for i in range(5_000)],
        text="cut off",
        request_id="cut-off",
    )
    # Deadlines from 1 ms up: attempts end before, during and after the accept.
    timeout, codes = 0.001, []
    while True:
        try:
            reply = await sms.BatchSend(request, metadata=bearer(token), timeout=timeout)
            break
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())
            assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}, codes
            timeout *= 1.5
    ids = [r.message_id for r in reply.results]
    assert reply.accepted_count == len(set(ids)) == 5_000
    stored: list[str] = []
    page = ""
    while True:
        listed = await sms.ListMessages(
            pb.ListMessagesRequest(page_size=500, page_token=page), metadata=bearer(token)
        )
        stored += [m.id for m in listed.messages]
        page = listed.next_page_token
        if not page:
            break
    assert sorted(stored) == sorted(ids), f"{len(stored)} stored after {len(codes)} cut-offs"
