"""Prices of SMS per provider account and destination country, as exact money.

Amounts are ``Decimal`` where people write them and whole micro-units (a
millionth of the currency's unit) where they are stored and summed, so no
float ever rounds a cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "MAX_PRICE",
    "MICROS",
    "PriceList",
    "PriceTable",
    "format_micros",
    "to_micros",
]

# Micro-units per unit of a currency.
MICROS = 1_000_000
# The highest price of one segment: far above any vendor's, and low enough that
# a day of costs stays an exact integer in Lua's doubles (2^53 micros).
MAX_PRICE = Decimal(1000)


def to_micros(amount: Decimal) -> int:
    """``amount`` in micro-units; ValueError when it is negative, above
    ``MAX_PRICE`` or finer than a micro-unit."""
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a price of 0 or more")
    if amount > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE}")
    micros = amount * MICROS
    if micros != micros.to_integral_value():
        raise ValueError("must have at most 6 decimal places")
    return int(micros)


def format_micros(micros: int) -> str:
    """Micro-units as a plain decimal string: 90000 -> ``0.09``, 0 -> ``0``."""
    text = format(Decimal(micros).scaleb(-6).normalize(), "f")
    return text


@dataclass(frozen=True, slots=True)
class PriceList:
    """What one provider account charges per segment, in ``currency``: by
    destination region, else ``default`` (None: unpriced, counted as 0)."""

    currency: str
    default_micros: int | None = None
    by_region: Mapping[str, int] = field(default_factory=dict)

    def micros(self, region: str) -> int:
        """The price of one segment to ``region``."""
        price = self.by_region.get(region, self.default_micros)
        return 0 if price is None else price


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The price lists of the provider accounts that have one; a provider
    without one (the simulator, unless configured) sends for nothing."""

    lists: Mapping[str, PriceList] = field(default_factory=dict)

    def micros(self, provider: str, region: str) -> int:
        """The price of one segment sent by ``provider`` to ``region``."""
        prices = self.lists.get(provider)
        return 0 if prices is None else prices.micros(region)

    def currency(self, provider: str) -> str:
        """The currency of ``provider``'s prices ('' when it has none)."""
        prices = self.lists.get(provider)
        return "" if prices is None else prices.currency
