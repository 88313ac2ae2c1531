"""The price table of the providers file: ``[prices.NAME]`` per provider account.

One table per provider (an account of ``[providers.NAME]``, or ``simulator``)
with the ``currency`` it bills in, an optional ``default`` price per SMS
segment and one price per destination region (ISO 3166-1, ``CN``, ``US``)::

    [prices.tencent]
    currency = "CNY"
    default = "0.045"
    CN = "0.04"

Prices are written as strings (or whole numbers) so they stay exact: a TOML
float is refused. A provider without a table, or a region without a price in
a table without ``default``, costs 0. A wrong table stops the server with a
message naming its key.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from smsgate_server.domain.phone import is_region
from smsgate_server.domain.prices import PriceList, PriceTable, to_micros

__all__ = ["PricesError", "load_prices"]

SIMULATOR = "simulator"
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class PricesError(ValueError):
    """The price table cannot be used; the message names the file and key."""


def load_prices(path: Path | None) -> PriceTable:
    """The ``[prices.NAME]`` tables of the providers file at ``path`` (none
    without a file); ``PricesError`` naming the key at fault."""
    if path is None:
        return PriceTable()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # The providers file's own loader reports these with more care.
        raise PricesError(f"providers file {path}: cannot read it ({exc})") from None
    tables = document.get("prices", {})
    if not isinstance(tables, dict):
        raise PricesError(f"providers file {path}: prices: must be [prices.NAME] tables")
    providers = document.get("providers", {})
    known = {SIMULATOR, *(providers if isinstance(providers, dict) else {})}
    lists = {}
    for name, table in tables.items():
        where = f"providers file {path}: prices.{name}"
        if name not in known:
            raise PricesError(f"{where}: no provider {name!r} (known: {', '.join(sorted(known))})")
        lists[name] = _price_list(table, where)
    return PriceTable(lists)


def _price_list(table: Any, where: str) -> PriceList:
    if not isinstance(table, dict):
        raise PricesError(f"{where}: must be a table")
    currency = table.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise PricesError(f"{where}.currency: required, an ISO 4217 code such as CNY or USD")
    default = None
    by_region = {}
    for key, value in table.items():
        if key == "currency":
            continue
        if key != "default" and not is_region(key):
            raise PricesError(
                f"{where}.{key}: neither 'currency', 'default' nor a region (CN, US, ...)"
            )
        micros = _micros(value, f"{where}.{key}")
        if key == "default":
            default = micros
        else:
            by_region[key] = micros
    return PriceList(currency, default, by_region)


def _micros(value: Any, where: str) -> int:
    if isinstance(value, float):
        raise PricesError(f'{where}: write the price as a string (e.g. "0.045") to keep it exact')
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PricesError(f'{where}: must be a price such as "0.045"')
    try:
        return to_micros(Decimal(value))
    except InvalidOperation:
        raise PricesError(f'{where}: {value!r} is not a decimal number such as "0.045"') from None
    except ValueError as exc:
        raise PricesError(f"{where}: {exc}") from None
