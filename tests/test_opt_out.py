"""The opt-out list, against a real server and Redis: a marketing template is
refused to an opted-out number (alone in a batch), verification and
notification templates are not, and a vendor's "unsubscribed" refusal puts the
number on the list."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from smsgate.v1 import message_pb2 as mpb
from smsgate.v1 import opt_out_service_pb2 as opb
from smsgate.v1 import opt_out_service_pb2_grpc
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1 import template_service_pb2 as tpb
from smsgate.v1 import verification_service_pb2 as vpb
from smsgate_server.runtime import Running
from smsgate_server.store.optouts import OptOutStore

from tests.pipeline_support import wait_for_statuses
from tests.support import details_of
from tests.test_sending_by_template import Api, fails

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    from smsgate.v1.opt_out_service_pb2_grpc import OptOutServiceAsyncStub

S = mpb.MessageStatus
OUT = "+14155552671"
IN = "+14155552672"
# The simulator refuses this number as unsubscribed (SIM_OPTED_OUT).
SIM_UNSUBSCRIBED = "+12025550102"


@pytest.fixture
def api(channel: grpc.aio.Channel, token: str) -> Api:
    return Api(channel, token)


@pytest.fixture
def optouts(server: Running) -> OptOutStore:
    return OptOutStore(server.redis.client)


def app_of(api: Api) -> str:
    return api.token.partition(".")[0]


async def templates(api: Api) -> None:
    await api.sign("Acme", default=True)
    await api.template(id="promo", kind=tpb.TEMPLATE_KIND_MARKETING, body="Sale today")
    await api.template(id="order", kind=tpb.TEMPLATE_KIND_NOTIFICATION, body="Order shipped")
    await api.template(id="otp", kind=tpb.TEMPLATE_KIND_VERIFICATION, body="Code {code}")


async def test_numbers_are_added_checked_removed_and_listed_by_pages(
    optouts: OptOutStore,
) -> None:
    numbers = [f"+1415555260{i}" for i in range(5)]
    for n in reversed(numbers):
        assert await optouts.add("a", n)
    assert not await optouts.add("a", numbers[0])
    assert await optouts.opted_out("a", [numbers[1], IN]) == {numbers[1]}
    assert await optouts.opted_out("b", [numbers[1]]) == set()

    pages, after = [], ""
    while True:
        page, after = await optouts.page("a", after, 2)
        pages.append(page)
        if not after:
            break
    assert pages == [numbers[0:2], numbers[2:4], numbers[4:5]]

    assert await optouts.remove("a", numbers[2])
    assert not await optouts.remove("a", numbers[2])
    assert await optouts.opted_out("a", numbers) == set(numbers) - {numbers[2]}


async def test_a_marketing_send_to_an_opted_out_number_is_a_failed_precondition(
    api: Api, optouts: OptOutStore
) -> None:
    await templates(api)
    await optouts.add(app_of(api), OUT)

    details = await fails(api.send(OUT, "promo"))

    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "RECIPIENT_OPTED_OUT"
    assert (await api.send(IN, "promo")).id


async def test_notifications_and_codes_still_reach_an_opted_out_number(
    api: Api, optouts: OptOutStore
) -> None:
    await templates(api)
    await optouts.add(app_of(api), OUT)

    assert (await api.send(OUT, "order")).id
    issued = await api.verification.GenerateCode(
        vpb.GenerateCodeRequest(
            phone_number=OUT, scope="login", delivery=vpb.CODE_DELIVERY_SMS, template_id="otp"
        ),
        metadata=api.meta,
    )
    assert issued.message_id


async def test_a_batch_refuses_only_the_opted_out_recipient(api: Api, optouts: OptOutStore) -> None:
    await templates(api)
    await optouts.add(app_of(api), OUT)

    reply = await api.sms.BatchSend(
        pb.BatchSendRequest(
            recipients=[pb.BatchRecipient(phone_number=n) for n in (IN, OUT)],
            template=mpb.TemplateContent(template_id="promo"),
        ),
        metadata=api.meta,
    )

    assert reply.results[0].message_id
    assert reply.results[1].error.reason == "RECIPIENT_OPTED_OUT"


async def test_one_apps_opt_out_does_not_refuse_another_apps_marketing(
    api: Api, optouts: OptOutStore
) -> None:
    await templates(api)
    await optouts.add("another-app", OUT)

    assert (await api.send(OUT, "promo")).id


async def test_a_vendors_unsubscribed_refusal_blocks_the_next_marketing_send(
    api: Api, optouts: OptOutStore
) -> None:
    await templates(api)
    first = await api.send(SIM_UNSUBSCRIBED, "order")
    await wait_for_statuses(api.sms, api.token, [first.id], {S.MESSAGE_STATUS_FAILED})

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.send(SIM_UNSUBSCRIBED, "promo")

    assert details_of(caught.value).reason == "RECIPIENT_OPTED_OUT"
    assert await optouts.opted_out(app_of(api), [SIM_UNSUBSCRIBED]) == {SIM_UNSUBSCRIBED}


# --- OptOutService --------------------------------------------------------


@pytest.fixture
def opt(channel: grpc.aio.Channel) -> OptOutServiceAsyncStub:
    stub: OptOutServiceAsyncStub = opt_out_service_pb2_grpc.OptOutServiceStub(channel)
    return stub


async def test_the_api_adds_checks_removes_and_blocks_marketing(
    api: Api, opt: OptOutServiceAsyncStub
) -> None:
    await templates(api)
    m = api.meta

    added = await opt.AddOptOut(opb.AddOptOutRequest(phone_number=OUT), metadata=m)
    again = await opt.AddOptOut(opb.AddOptOutRequest(phone_number=OUT), metadata=m)
    assert (added.phone_number, added.added, again.added) == (OUT, True, False)
    checked = await opt.CheckOptOut(opb.CheckOptOutRequest(phone_number=OUT), metadata=m)
    assert checked.opted_out
    assert (await fails(api.send(OUT, "promo"))).reason == "RECIPIENT_OPTED_OUT"

    removed = await opt.RemoveOptOut(opb.RemoveOptOutRequest(phone_number=OUT), metadata=m)
    assert removed.removed
    assert not (
        await opt.CheckOptOut(opb.CheckOptOutRequest(phone_number=OUT), metadata=m)
    ).opted_out
    assert (await api.send(OUT, "promo")).id


async def test_the_api_lists_by_pages_and_refuses_a_forged_token(
    api: Api, opt: OptOutServiceAsyncStub
) -> None:
    numbers = [f"+1415555260{i}" for i in range(5)]
    for n in numbers:
        await opt.AddOptOut(opb.AddOptOutRequest(phone_number=n), metadata=api.meta)

    listed: list[str] = []
    token, pages = "", 0
    while True:
        page = await opt.ListOptOuts(
            opb.ListOptOutsRequest(page_size=2, page_token=token), metadata=api.meta
        )
        listed += page.phone_numbers
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (listed, pages) == (numbers, 3)

    details = await fails(
        opt.ListOptOuts(opb.ListOptOutsRequest(page_token="forged"), metadata=api.meta)
    )
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_a_bad_number_is_invalid_argument(api: Api, opt: OptOutServiceAsyncStub) -> None:
    details = await fails(opt.AddOptOut(opb.AddOptOutRequest(phone_number="12"), metadata=api.meta))
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PHONE_NUMBER",
    )
    assert "phone_number" in details.fields
