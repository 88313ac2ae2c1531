"""Twilio's ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` as the vendor
answers it: HTTP basic auth (account SID and token, or an API key), 201 with
the Message resource, or a 4xx/5xx with Twilio's error object; and
``GET .../Messages/{MessageSid}.json``, the resource as it is now, and
``GET .../Messages.json``, the list by number."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.vendor_fakes.common import FakeControls

__all__ = ["TwilioFake"]

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class TwilioFake:
    """One Twilio account with one number and one messaging service.

    ``opted_out`` numbers answered STOP (21610); ``throttled`` answers that
    many next messages with 429 / 20429. ``resources`` holds each message
    created, by sid; ``set_status`` moves one on as the carrier would;
    ``created_at`` back-dates one (its ``date_created``).
    """

    account_sid: str = "AC" + "f" * 32
    auth_token: str = "fake-twilio-auth-token"
    api_keys: dict[str, str] = field(default_factory=lambda: {"SK" + "e" * 32: "key-secret"})
    numbers: set[str] = field(default_factory=lambda: {"+15005550006"})
    messaging_services: set[str] = field(default_factory=lambda: {"MG" + "d" * 32})
    opted_out: set[str] = field(default_factory=set)
    throttled: int = 0
    controls: FakeControls = field(default_factory=FakeControls)
    messages: list[dict[str, str]] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)
    lists: list[dict[str, str]] = field(default_factory=list)

    def providers_section(self, url: str, extra: str = "") -> str:
        """The ``[providers.twilio]`` table of a providers file sending to this
        fake at ``url``, with ``extra`` lines (status_callback, limits) after it."""
        return (
            '[providers.twilio]\ntype = "twilio"\n'
            f'account_sid = "{self.account_sid}"\nauth_token = "{self.auth_token}"\n'
            f'from_number = "+15005550006"\nbase_url = "{url}"\n{extra}'
        )

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self._create, methods=["POST"]),
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self._list, methods=["GET"]),
                Route(
                    "/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
                    self._fetch,
                    methods=["GET"],
                ),
            ]
        )

    async def _create(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        status = self.controls.next_server_error()
        if status is not None:
            return self._error(20500, "Internal Server Error", status)
        if not self._authenticated(request):
            return self._error(20003, "Authenticate", 401)
        if request.path_params["sid"] != self.account_sid:
            return self._error(20404, "The requested resource was not found", 404)
        self.messages.append(form)
        # Decided (and a message created) before any stall: a client that
        # times out after writing its request leaves the message at Twilio.
        answer = self._answer(form)
        await self.controls.maybe_stall()
        return answer

    def _answer(self, form: dict[str, str]) -> Response:
        if self.throttled:
            self.throttled -= 1
            return self._error(20429, "Too Many Requests", 429)
        to = form.get("To", "")
        if not _E164.match(to):
            return self._error(21211, f"The 'To' number {to} is not a valid phone number.", 400)
        if to in self.opted_out:
            return self._error(21610, "Attempt to send to unsubscribed recipient", 400)
        sender, service = form.get("From", ""), form.get("MessagingServiceSid", "")
        if service and service not in self.messaging_services:
            return self._error(21703, "The Messaging Service Sid is invalid", 400)
        if not service and sender not in self.numbers:
            return self._error(
                21606, f"The From phone number {sender} is not a valid, SMS-capable number", 400
            )
        if not form.get("Body"):
            return self._error(21602, "Message body is required.", 400)
        resource = self._resource(form)
        self.resources[resource["sid"]] = resource
        return JSONResponse(resource, status_code=201)

    async def _fetch(self, request: Request) -> Response:
        status = self.controls.next_server_error()
        if status is not None:
            return self._error(20500, "Internal Server Error", status)
        if not self._authenticated(request):
            return self._error(20003, "Authenticate", 401)
        message_sid = request.path_params["message_sid"]
        self.fetches.append(message_sid)
        resource = self.resources.get(message_sid)
        if request.path_params["sid"] != self.account_sid or resource is None:
            return self._error(20404, "The requested resource was not found", 404)
        return JSONResponse(resource)

    async def _list(self, request: Request) -> Response:
        """The account's messages, newest first, filtered by ``To`` and
        ``From`` and cut to ``PageSize`` (one page: ``next_page_uri`` null)."""
        if not self._authenticated(request):
            return self._error(20003, "Authenticate", 401)
        if request.path_params["sid"] != self.account_sid:
            return self._error(20404, "The requested resource was not found", 404)
        self.lists.append(dict(request.query_params))
        to, sender = request.query_params.get("To"), request.query_params.get("From")
        size = int(request.query_params.get("PageSize", "50"))
        found = [
            r
            for r in reversed(self.resources.values())
            if (to is None or r["to"] == to) and (sender is None or r["from"] == sender)
        ][:size]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        return JSONResponse(
            {
                "messages": found,
                "end": len(found) - 1,
                "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{uri}?PageSize={size}&Page=0",
            }
        )

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """The carrier's word on a message (``delivered``, ``undelivered``, ...)."""
        resource = self.resources[sid]
        resource["status"] = status
        resource["error_code"] = error_code
        resource["date_updated"] = format_datetime(datetime.now(UTC), usegmt=True)

    def created_at(self, sid: str, when: datetime) -> None:
        """Back-date a message's ``date_created`` (Twilio's whole seconds)."""
        self.resources[sid]["date_created"] = format_datetime(when, usegmt=True)

    def _authenticated(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        user, _, password = base64.b64decode(credentials).decode().partition(":")
        if user == self.account_sid:
            return secrets.compare_digest(password, self.auth_token)
        return user in self.api_keys and secrets.compare_digest(password, self.api_keys[user])

    def _resource(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        service = form.get("MessagingServiceSid")
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    @staticmethod
    def _error(code: int, message: str, status: int) -> Response:
        return JSONResponse(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
        )
