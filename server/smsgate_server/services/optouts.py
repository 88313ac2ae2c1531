"""OptOutService: the numbers that asked an app for no more marketing.

Marketing sends check the list (``services.sending``); this is the list's own
API: add, remove, check, and page through it.
"""

from __future__ import annotations

from smsgate_server.domain.errors import InvalidArgument, Reason
from smsgate_server.domain.phone import NumberPolicy
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer
from smsgate_server.domain.validation import check_phone
from smsgate_server.store.optouts import OptOutStore

__all__ = ["OptOutService"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
# Binds page tokens to this listing: a ListMessages token never opens here.
_PAGE_CONTEXT = b"optouts"


class OptOutService:
    """Adds, removes, checks and lists the opted-out numbers of each app."""

    def __init__(self, store: OptOutStore, tokens: TokenSealer) -> None:
        self.store = store
        self.tokens = tokens

    async def add(self, app: str, phone: str, numbers: NumberPolicy) -> tuple[str, bool]:
        """``phone`` in E.164 and whether it was newly listed."""
        e164 = _phone(phone, numbers)
        return e164, await self.store.add(app, e164)

    async def remove(self, app: str, phone: str, numbers: NumberPolicy) -> tuple[str, bool]:
        """``phone`` in E.164 and whether it was listed."""
        e164 = _phone(phone, numbers)
        return e164, await self.store.remove(app, e164)

    async def check(self, app: str, phone: str, numbers: NumberPolicy) -> tuple[str, bool]:
        """``phone`` in E.164 and whether it is listed."""
        e164 = _phone(phone, numbers)
        return e164, bool(await self.store.opted_out(app, [e164]))

    async def page(self, app: str, page_size: int, page_token: str) -> tuple[list[str], str]:
        """One page of the app's numbers, in number order, and the next page's token."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument.field("page_size", f"must be 0-{MAX_PAGE_SIZE}")
        after = ""
        if page_token:
            try:
                after = self.tokens.open(
                    TokenKind.PAGE, app, page_token, context=_PAGE_CONTEXT
                ).decode()
            except InvalidToken:
                raise InvalidArgument.field(
                    "page_token",
                    "is not a token of an earlier ListOptOuts call",
                    reason=Reason.INVALID_PAGE_TOKEN,
                ) from None
        phones, last = await self.store.page(app, after, page_size or DEFAULT_PAGE_SIZE)
        token = (
            self.tokens.seal(TokenKind.PAGE, app, last.encode(), context=_PAGE_CONTEXT)
            if last
            else ""
        )
        return phones, token


def _phone(phone: str, numbers: NumberPolicy) -> str:
    if not phone:
        raise InvalidArgument.field(
            "phone_number", "is required", reason=Reason.INVALID_PHONE_NUMBER
        )
    return check_phone(phone, "phone_number", numbers.default_region)
