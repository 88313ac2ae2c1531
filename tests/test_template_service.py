"""TemplateService over a real gRPC channel and a real Redis: CRUD, versions,
etags, pagination, previews, and the status of every bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from smsgate.v1 import template_service_pb2 as pb
from smsgate.v1 import template_service_pb2_grpc as pb_grpc
from smsgate_server.runtime import Running

from tests.support import Details, bearer, details_of

NOTIFY = pb.TEMPLATE_KIND_NOTIFICATION
VERIFY = pb.TEMPLATE_KIND_VERIFICATION
PARAMS, BODY = "INVALID_TEMPLATE_PARAMS", "INVALID_TEMPLATE_BODY"
INVALID = "INVALID_ARGUMENT"


@pytest.fixture
def templates(channel: grpc.aio.Channel) -> pb_grpc.TemplateServiceAsyncStub:
    return pb_grpc.TemplateServiceStub(channel)


class Calls:
    """The TemplateService of one app."""

    def __init__(self, stub: pb_grpc.TemplateServiceAsyncStub, token: str) -> None:
        self.stub, self.md = stub, bearer(token)

    async def create(self, request_id: str = "", **fields: Any) -> pb.Template:
        fields.setdefault("kind", NOTIFY)
        fields.setdefault("body", "Hi {name}")
        reply = await self.stub.CreateTemplate(
            pb.CreateTemplateRequest(template=pb.Template(**fields), request_id=request_id),
            metadata=self.md,
        )
        return reply.template

    async def get(self, template_id: str, version: int = 0) -> pb.Template:
        request = pb.GetTemplateRequest(template_id=template_id, version=version)
        return (await self.stub.GetTemplate(request, metadata=self.md)).template

    async def update(self, paths: list[str], **fields: Any) -> pb.Template:
        request = pb.UpdateTemplateRequest(
            template=pb.Template(**fields), update_mask=FieldMask(paths=paths)
        )
        return (await self.stub.UpdateTemplate(request, metadata=self.md)).template

    async def render(self, **fields: Any) -> pb.RenderTemplateResponse:
        return await self.stub.RenderTemplate(pb.RenderTemplateRequest(**fields), metadata=self.md)

    async def fails(self, method: str, request: Any) -> Details:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(self.stub, method)(request, metadata=self.md)
        return details_of(caught.value)


@pytest.fixture
def calls(templates: pb_grpc.TemplateServiceAsyncStub, token: str) -> Calls:
    return Calls(templates, token)


async def test_a_created_template_reads_back_as_version_1(calls: Calls) -> None:
    created = await calls.create(
        id="order_shipped",
        display_name="Order shipped",
        body="Order {order} ships {day}; {{ref}} {order}",
        sign_name="Acme",
        provider_template_ids={"tencent": "1234567"},
    )
    got = await calls.get("order_shipped")
    assert got == created
    assert (got.version, list(got.variables)) == (1, ["order", "day"])
    assert got.etag and got.create_time == got.update_time
    assert dict(got.provider_template_ids) == {"tencent": "1234567"}


async def test_a_template_without_an_id_gets_one(calls: Calls) -> None:
    created = await calls.create()
    assert created.id.startswith("tpl_")
    assert (await calls.get(created.id)).body == "Hi {name}"


async def test_a_taken_id_is_already_exists(calls: Calls) -> None:
    await calls.create(id="welcome")
    request = pb.CreateTemplateRequest(template=pb.Template(id="welcome", kind=NOTIFY, body="x"))
    details = await calls.fails("CreateTemplate", request)
    assert (details.code, details.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TEMPLATE_ALREADY_EXISTS",
    )


async def test_a_create_retried_with_its_request_id_returns_the_first(calls: Calls) -> None:
    first = await calls.create(request_id="r-1", body="Hello {name}")
    again = await calls.create(request_id="r-1", body="Hello {name}")
    assert again == first
    other = pb.CreateTemplateRequest(
        template=pb.Template(kind=NOTIFY, body="Bye {name}"), request_id="r-1"
    )
    details = await calls.fails("CreateTemplate", other)
    assert (details.code, details.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


BAD_TEMPLATES = {
    "missing template": ({}, "template", "INVALID_ARGUMENT"),
    "blank body": ({"kind": NOTIFY, "body": "  "}, "template.body", "EMPTY_CONTENT"),
    "unbalanced brace": (
        {"kind": NOTIFY, "body": "Hi {name"},
        "template.body",
        BODY,
    ),
    "verification without code": (
        {"kind": VERIFY, "body": "Your pin is {pin}"},
        "template.body",
        BODY,
    ),
    "huge placeholder": (
        {"kind": NOTIFY, "body": "{" + "中" * 998 + "}"},
        "template.body",
        "INVALID_TEMPLATE_BODY",
    ),
    "sign bracket in the body": (
        {"kind": NOTIFY, "body": "【Acme】Hi {name}"},
        "template.body",
        "INVALID_TEMPLATE_BODY",
    ),
    "unspecified kind": ({"body": "Hi"}, "template.kind", "INVALID_TEMPLATE_KIND"),
    "unknown kind": ({"kind": 99, "body": "Hi"}, "template.kind", "INVALID_TEMPLATE_KIND"),
    "bad id": ({"id": "a b", "kind": NOTIFY, "body": "Hi"}, "template.id", "INVALID_ARGUMENT"),
    "bracketed sign": (
        {"kind": NOTIFY, "body": "Hi", "sign_name": "【Acme】"},
        "template.sign_name",
        "INVALID_SIGN_NAME",
    ),
    "bad provider name": (
        {"kind": NOTIFY, "body": "Hi", "provider_template_ids": {"Tencent!": "1"}},
        "template.provider_template_ids[Tencent!]",
        "INVALID_ARGUMENT",
    ),
}


@pytest.mark.parametrize(
    ("fields", "field", "reason"), BAD_TEMPLATES.values(), ids=BAD_TEMPLATES.keys()
)
async def test_bad_templates_are_invalid_argument_naming_the_field(
    calls: Calls, fields: dict[str, Any], field: str, reason: str
) -> None:
    request = pb.CreateTemplateRequest(template=pb.Template(**fields) if fields else None)
    details = await calls.fails("CreateTemplate", request)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (field in details.fields, details.reason) == (True, reason)


@pytest.mark.cluster
async def test_an_update_makes_a_new_version_and_the_old_stays_readable(calls: Calls) -> None:
    first = await calls.create(id="promo", body="Sale {pct}% off", display_name="Promo")
    second = await calls.update(["body"], id="promo", body="Sale: {pct}% off today")
    assert (second.version, second.body, second.display_name) == (
        2,
        "Sale: {pct}% off today",
        "Promo",
    )
    assert second.etag != first.etag
    assert second.create_time == first.create_time
    assert await calls.get("promo", 1) == first
    assert await calls.get("promo") == second


async def test_an_update_with_a_stale_etag_is_aborted(calls: Calls) -> None:
    first = await calls.create(id="promo")
    await calls.update(["display_name"], id="promo", display_name="v2", etag=first.etag)
    request = pb.UpdateTemplateRequest(
        template=pb.Template(id="promo", display_name="v3", etag=first.etag),
        update_mask=FieldMask(paths=["display_name"]),
    )
    details = await calls.fails("UpdateTemplate", request)
    assert (details.code, details.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert (await calls.get("promo")).display_name == "v2"


async def test_concurrent_updates_without_etag_all_land_as_versions(calls: Calls) -> None:
    await calls.create(id="busy", body="v1 {x}")
    updates = [calls.update(["body"], id="busy", body=f"v{n} {{x}}") for n in range(2, 7)]
    made = await asyncio.gather(*updates)
    assert sorted(t.version for t in made) == [2, 3, 4, 5, 6]
    bodies = {(await calls.get("busy", v)).body for v in range(2, 7)}
    assert bodies == {f"v{n} {{x}}" for n in range(2, 7)}


async def test_an_update_checks_the_template_it_makes(calls: Calls) -> None:
    await calls.create(id="notice", body="Hi {name}")
    request = pb.UpdateTemplateRequest(
        template=pb.Template(id="notice", kind=VERIFY), update_mask=FieldMask(paths=["kind"])
    )
    details = await calls.fails("UpdateTemplate", request)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "{code}" in details.fields["template.body"]


@pytest.mark.parametrize(("paths", "says"), [([], "is required"), (["id"], "cannot change 'id'")])
async def test_an_update_names_the_fields_it_changes(
    calls: Calls, paths: list[str], says: str
) -> None:
    await calls.create(id="notice")
    request = pb.UpdateTemplateRequest(
        template=pb.Template(id="notice"), update_mask=FieldMask(paths=paths)
    )
    details = await calls.fails("UpdateTemplate", request)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in details.fields["update_mask"]


async def test_unknown_templates_and_versions_are_not_found(calls: Calls) -> None:
    await calls.create(id="known")
    requests = [
        ("GetTemplate", pb.GetTemplateRequest(template_id="unknown")),
        ("GetTemplate", pb.GetTemplateRequest(template_id="known", version=2)),
        ("DeleteTemplate", pb.DeleteTemplateRequest(template_id="unknown")),
        ("RenderTemplate", pb.RenderTemplateRequest(template_id="unknown")),
        (
            "UpdateTemplate",
            pb.UpdateTemplateRequest(
                template=pb.Template(id="unknown", display_name="x"),
                update_mask=FieldMask(paths=["display_name"]),
            ),
        ),
    ]
    for method, request in requests:
        details = await calls.fails(method, request)
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND")


async def test_list_pages_through_templates_by_id(calls: Calls) -> None:
    for name in ["e", "a", "d", "c", "b"]:
        await calls.create(id=name)
    seen: list[str] = []
    token = ""
    for _ in range(5):
        reply = await calls.stub.ListTemplates(
            pb.ListTemplatesRequest(page_size=2, page_token=token), metadata=calls.md
        )
        seen += [t.id for t in reply.templates]
        token = reply.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]


async def test_a_negative_page_size_is_invalid_argument(calls: Calls) -> None:
    details = await calls.fails("ListTemplates", pb.ListTemplatesRequest(page_size=-1))
    assert (details.code, list(details.fields)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["page_size"],
    )


async def test_a_bad_page_token_is_invalid_argument(calls: Calls) -> None:
    details = await calls.fails("ListTemplates", pb.ListTemplatesRequest(page_token="abc"))
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


@pytest.mark.cluster
async def test_delete_removes_every_version(calls: Calls) -> None:
    first = await calls.create(id="gone")
    await calls.update(["display_name"], id="gone", display_name="v2")
    stale = pb.DeleteTemplateRequest(template_id="gone", etag=first.etag)
    assert (await calls.fails("DeleteTemplate", stale)).code == grpc.StatusCode.ABORTED
    await calls.stub.DeleteTemplate(pb.DeleteTemplateRequest(template_id="gone"), metadata=calls.md)
    for version in (0, 1, 2):
        details = await calls.fails(
            "GetTemplate", pb.GetTemplateRequest(template_id="gone", version=version)
        )
        assert details.code == grpc.StatusCode.NOT_FOUND
    assert (await calls.create(id="gone")).version == 1


async def test_an_app_never_sees_another_apps_templates(
    server: Running, templates: pb_grpc.TemplateServiceAsyncStub, calls: Calls
) -> None:
    await calls.create(id="mine")
    other = Calls(templates, (await server.apps.create("other-app")).token)
    details = await other.fails("GetTemplate", pb.GetTemplateRequest(template_id="mine"))
    assert details.code == grpc.StatusCode.NOT_FOUND
    reply = await other.stub.ListTemplates(pb.ListTemplatesRequest(), metadata=other.md)
    assert list(reply.templates) == []


async def test_render_puts_the_sign_in_the_text_for_chinese_numbers(calls: Calls) -> None:
    await calls.create(id="code", kind=VERIFY, body="您的验证码是{code}", sign_name="腾讯云")
    reply = await calls.render(
        template_id="code", params={"code": "123456"}, phone_number="+8613800138000"
    )
    assert reply.text == "【腾讯云】您的验证码是123456"
    assert (reply.encoding, reply.characters, reply.segments) == (pb.TEXT_ENCODING_UCS2, 17, 1)
    assert (reply.sender_id, reply.template_version) == ("", 1)


async def test_render_makes_the_sign_the_sender_id_elsewhere(calls: Calls) -> None:
    await calls.create(id="code", kind=VERIFY, body="Your code is {code}", sign_name="Acme")
    reply = await calls.render(template_id="code", params={"code": "1234"}, region_code="GB")
    assert (reply.text, reply.sender_id) == ("Your code is 1234", "Acme")
    assert reply.encoding == pb.TEXT_ENCODING_GSM7


async def test_render_shows_each_segment_of_an_inline_body(calls: Calls) -> None:
    reply = await calls.render(body="{a}" + "x" * 150 + "€", params={"a": "y" * 10})
    assert (reply.encoding, reply.characters, reply.segments) == (pb.TEXT_ENCODING_GSM7, 162, 2)
    assert [len(s) for s in reply.segment_texts] == [153, 8]
    assert "".join(reply.segment_texts) == reply.text


async def test_render_reads_the_version_asked_for(calls: Calls) -> None:
    await calls.create(id="promo", body="Old {x}")
    await calls.update(["body"], id="promo", body="New {x}")
    old = await calls.render(template_id="promo", template_version=1, params={"x": "1"})
    new = await calls.render(template_id="promo", params={"x": "1"})
    assert (old.text, old.template_version, new.text, new.template_version) == (
        "Old 1", 1, "New 1", 2,
    )  # fmt: skip


MANY = {f"p{i}": "1" for i in range(5000)}
BAD_RENDERS = {
    "no source": ({}, "template_id", "INVALID_ARGUMENT"),
    "missing param": ({"body": "Hi {a} {b}", "params": {"a": "1"}}, "params[b]", PARAMS),
    "unknown param": ({"body": "Hi", "params": {"z": "1"}}, "params[z]", PARAMS),
    "sign bracket in a param": ({"body": "Hi {a}", "params": {"a": "【x】"}}, "params[a]", PARAMS),
    "verification body without code": ({"body": "Hi", "kind": VERIFY}, "body", BODY),
    "thousands of params": ({"body": "Hi", "params": MANY}, "params", PARAMS),
    "bad sign": ({"body": "Hi", "sign_name": "x"}, "sign_name", "INVALID_SIGN_NAME"),
    "bad region": ({"body": "Hi", "region_code": "XX"}, "region_code", "INVALID_ARGUMENT"),
    "bad phone": ({"body": "Hi", "phone_number": "12"}, "phone_number", "INVALID_PHONE_NUMBER"),
    "negative version": ({"template_id": "t", "template_version": -1}, "template_version", INVALID),
}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "field", "reason"), BAD_RENDERS.values(), ids=BAD_RENDERS.keys()
)
async def test_bad_renders_are_invalid_argument_naming_the_field(
    calls: Calls, fields: dict[str, Any], field: str, reason: str
) -> None:
    details = await calls.fails("RenderTemplate", pb.RenderTemplateRequest(**fields))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (field in details.fields, details.reason) == (True, reason)


@pytest.mark.parametrize("name", ["a" * 64, "中" * 64])
async def test_many_long_bad_param_names_still_answer_invalid_argument(
    calls: Calls, name: str
) -> None:
    params = {f"{i:02d}{name[2:]}": "x" for i in range(32)}
    details = await calls.fails(
        "RenderTemplate", pb.RenderTemplateRequest(body="Hi", params=params)
    )
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, PARAMS)
    assert details.fields and set(details.fields) <= {f"params[{n}]" for n in params}
