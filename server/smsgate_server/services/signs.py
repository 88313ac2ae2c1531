"""SignService: the sign names an app registers, and its default one."""

from __future__ import annotations

import time
from collections.abc import Callable

from smsgate_server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from smsgate_server.domain.templates import check_sign_name
from smsgate_server.store.signs import MAX_SIGN_NAMES, SignStore, SignWrite, StoredSign

__all__ = ["SignService"]


def _required(name: str, field: str) -> str:
    if not name:
        raise InvalidArgument.field(field, "is required", reason=Reason.INVALID_SIGN_NAME)
    return check_sign_name(name, field)


def _not_found(name: str) -> NotFound:
    return NotFound(f"sign name {name!r} is not registered", reason=Reason.SIGN_NAME_NOT_FOUND)


class SignService:
    """Registers, lists and unregisters the sign names of each app."""

    def __init__(self, store: SignStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def create(self, app: str, name: str, *, make_default: bool) -> StoredSign:
        """Register ``name``; ALREADY_EXISTS if it is, FAILED_PRECONDITION when full."""
        _required(name, "sign_name.name")
        now = int(self.clock() * 1000)
        outcome = await self.store.create(app, name, now_ms=now, make_default=make_default)
        if outcome is SignWrite.EXISTS:
            raise AlreadyExists(
                f"sign name {name!r} is registered already", reason=Reason.SIGN_NAME_ALREADY_EXISTS
            )
        if outcome is SignWrite.FULL:
            raise FailedPrecondition(
                f"the app has {MAX_SIGN_NAMES} sign names, as many as it may; delete one first",
                reason=Reason.TOO_MANY_SIGN_NAMES,
            )
        return StoredSign(name, now, make_default)

    async def list(self, app: str) -> list[StoredSign]:
        return await self.store.all(app)

    async def set_default(self, app: str, name: str) -> str:
        """Make ``name`` the default ('' clears it); the default now."""
        check_sign_name(name, "name")
        if await self.store.set_default(app, name) is SignWrite.GONE:
            raise _not_found(name)
        return name

    async def delete(self, app: str, name: str) -> None:
        _required(name, "name")
        if await self.store.delete(app, name) is SignWrite.GONE:
            raise _not_found(name)
