"""What every fake shares: the requests it took, a way to stall it, a way to
make it answer a server error."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["FakeControls"]


@dataclass
class FakeControls:
    """Knobs a test turns on a fake.

    ``server_errors`` answers that many next requests with that HTTP status
    (the vendor's own error body); ``stalled`` makes requests wait until
    ``release()`` (the client times out after writing its request).
    """

    server_errors: list[int] = field(default_factory=list)
    stalled: bool = False
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def maybe_stall(self) -> None:
        if self.stalled:
            await self._released.wait()

    def next_server_error(self) -> int | None:
        return self.server_errors.pop(0) if self.server_errors else None

    def release(self) -> None:
        self._released.set()
