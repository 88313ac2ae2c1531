"""Routes: which providers may send a message, in the order to try them.

Pure: the router reads the routes of the providers file, the providers'
capabilities and a draw (by default fixed by the message id), and answers for
one message. The
dispatcher asks it once per claimed message, then groups the messages by the
provider chosen, so vendor calls are made per provider as before.

A route is looked up by the message's app first (its routes win over the
global ones), then globally; within each, the number's region (``CN``) before
its calling code (``+1``) before ``default``. A route with weights draws its
first provider by weight among those able to send the message; the rest
follow in the route's order, for failover. The draw is a hash of the message
id, not a fresh random number: a message routed again (a retry) starts at the
same provider. A message a provider may have is never routed at all: the
dispatcher records the provider just before each vendor call, and a re-claimed
message carrying that record (its worker died or stopped mid-call) is settled
as an unknown outcome at that provider, whatever the breakers say, never sent
to a second one (nor again to the same one: no vendor of ours deduplicates).
With no routes at all, every message goes to the one default provider
(``SMSGATE_PROVIDER``), as before routes existed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from smsgate_server.domain.phone import country_code, region_of
from smsgate_server.providers.base import Capabilities, ContentKind
from smsgate_server.providers.providers_file import DEFAULT_DESTINATION, Route

__all__ = ["RouteChoice", "Router", "stable_draw"]


def stable_draw(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` and spread evenly over keys."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route a message takes: ``label`` names it ("" with no routes at
    all), ``candidates`` are the providers able to send it that have not
    refused it yet, in the order to try them; ``skipped`` says why the route's
    other providers were left out."""

    label: str
    candidates: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def why_none(self) -> str:
        """Why no provider is left, in words."""
        where = f"{self.label}: " if self.label else ""
        return where + ("; ".join(self.skipped) if self.skipped else "no provider")


class Router:
    """Chooses the providers of a message from the routes of the providers file."""

    def __init__(
        self,
        routes: Sequence[Route],
        capabilities: Mapping[str, Capabilities],
        *,
        default: str,
        draw: Callable[[str], float] = stable_draw,
    ) -> None:
        self.capabilities = dict(capabilities)
        self.default = default
        # Maps a message's key to [0, 1): where it falls among a route's weights.
        self.draw = draw
        self._routes = {(r.app, r.destination): r for r in routes}
        # Apps with routes of their own: every other app goes straight to the global ones.
        self._apps = {r.app for r in routes if r.app}

    @property
    def routed(self) -> bool:
        """Whether the providers file has routes (else: the default provider only)."""
        return bool(self._routes)

    def route(
        self,
        app: str,
        phone: str,
        *,
        key: str,
        template: bool,
        vendor_ids: Mapping[str, str],
        refused: Collection[str] = (),
    ) -> RouteChoice:
        """The providers for message ``key`` (its id) to ``phone`` (E.164) of
        ``app``, sent by template (with the vendor template ids by provider) or
        as free text, leaving out those in ``refused``."""
        if not self._routes:
            # As before routes: the default provider takes everything, and says
            # itself what it cannot send.
            left = () if self.default in refused else (self.default,)
            return RouteChoice("", left, (f"{self.default} refused it",) if not left else ())
        route = self._find(app, phone)
        if route is None:
            return RouteChoice("", (), (f"no route for {region_of(phone) or phone[:3]}",))
        label = f"route {route.destination}" + (" of the app" if route.app else "")
        able: list[str] = []
        weights: list[int] = []
        skipped: list[str] = []
        for i, name in enumerate(route.providers):
            why = self._cannot(name, phone, template, vendor_ids)
            if name in refused:
                skipped.append(f"{name} refused it")
            elif why:
                skipped.append(f"{name} {why}")
            else:
                able.append(name)
                weights.append(route.weights[i] if route.weights else 0)
        if len(able) > 1 and sum(weights) > 0:
            first = _weighted(weights, self.draw(key))
            able.insert(0, able.pop(first))
        return RouteChoice(label, tuple(able), tuple(skipped))

    def _find(self, app: str, phone: str) -> Route | None:
        region = region_of(phone)
        code = f"+{country_code(phone)}"
        scopes = (app, "") if app in self._apps else ("",)
        for scope in scopes:
            for destination in (region, code, DEFAULT_DESTINATION):
                route = self._routes.get((scope, destination))
                if route is not None:
                    return route
        return None

    def _cannot(self, name: str, phone: str, template: bool, vendor_ids: Mapping[str, str]) -> str:
        """Why provider ``name`` cannot send the message ("" when it can)."""
        caps = self.capabilities[name]
        if caps.regions is not None and region_of(phone) not in caps.regions:
            return f"does not serve {region_of(phone) or 'this number'}"
        if caps.content is ContentKind.TEMPLATE:
            if not template:
                return "sends templates only, and this is free text"
            if not vendor_ids.get(name):
                return "has no vendor template id for this template"
        return ""


def _weighted(weights: Sequence[int], draw: float) -> int:
    """The index whose share of the weights ``draw`` (in [0, 1)) falls in."""
    point = draw * sum(weights)
    for i, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)
