"""InboundService: the replies an app received, a page at a time."""

from __future__ import annotations

from smsgate_server.domain.errors import InvalidArgument, Reason
from smsgate_server.domain.tokens import InvalidToken, TokenKind, TokenSealer
from smsgate_server.store.replies import ReplyStore, StoredReply

__all__ = ["ReplyService"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
# Binds page tokens to this listing.
_PAGE_CONTEXT = b"replies"


class ReplyService:
    """Lists the replies of each app, newest first."""

    def __init__(self, store: ReplyStore, tokens: TokenSealer) -> None:
        self.store = store
        self.tokens = tokens

    async def page(
        self, app: str, page_size: int, page_token: str
    ) -> tuple[list[StoredReply], str]:
        """One page of the app's replies and the next page's token."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument.field("page_size", f"must be 0-{MAX_PAGE_SIZE}")
        before = ""
        if page_token:
            try:
                before = self.tokens.open(
                    TokenKind.PAGE, app, page_token, context=_PAGE_CONTEXT
                ).decode()
            except InvalidToken:
                raise InvalidArgument.field(
                    "page_token",
                    "is not a token of an earlier ListReplies call",
                    reason=Reason.INVALID_PAGE_TOKEN,
                ) from None
        replies, last = await self.store.page(app, before, page_size or DEFAULT_PAGE_SIZE)
        token = (
            self.tokens.seal(TokenKind.PAGE, app, last.encode(), context=_PAGE_CONTEXT)
            if last
            else ""
        )
        return replies, token
