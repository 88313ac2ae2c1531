"""What stands between the dispatcher and a provider account: its circuit
breaker and its pace.

The router asks which providers of a route may take a call now (``usable``);
the dispatcher takes pacing tokens before each call (``pace``) and reports what
the call returned (``record``), which feeds the breaker (call-level failures)
and the pace (a throttle lowers the rate for a while). State is shared by every
replica, so the implementations keep it in Redis; ``OpenGate`` lets every call
through, for a process without a guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from smsgate_server.providers.base import RecipientResult

__all__ = ["OpenGate", "ProviderGate"]


class ProviderGate(Protocol):
    """Breakers and pacing of the provider accounts, shared by all replicas."""

    async def usable(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` (in their order) whose breaker lets a call through
        now: closed, or half-open with this caller holding the probe."""
        ...

    async def pace(self, name: str, messages: int) -> float:
        """Take the tokens of one call carrying ``messages`` recipients: 0.0 when
        taken, else the seconds until they would be (nothing is taken then)."""
        ...

    async def record(self, name: str, results: Sequence[RecipientResult]) -> None:
        """What one call to ``name`` returned, one result per recipient."""
        ...

    def unpaced(self, name: str) -> bool:
        """Whether ``name`` has no pace: ``pace`` then answers without Redis
        and never asks a call to wait but for a probe's verdict."""
        ...


class OpenGate:
    """No breaker, no pace: every provider usable, every call at once."""

    async def usable(self, names: Sequence[str]) -> list[str]:
        return list(names)

    async def pace(self, name: str, messages: int) -> float:
        return 0.0

    async def record(self, name: str, results: Sequence[RecipientResult]) -> None:
        return None

    def unpaced(self, name: str) -> bool:
        return True
