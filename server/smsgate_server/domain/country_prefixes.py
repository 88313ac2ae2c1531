"""The country of a phone number from its leading digits alone, for the Lua
scripts that count usage (store/lua/lib.lua), which cannot run ``phonenumbers``.

The table maps E.164 digit prefixes to ISO 3166-1 regions; the longest prefix
of a number that is in the table gives its region. A calling code of one
region maps to that region. Where regions share a calling code, the code maps
to its main region (``1`` the US, ``7`` Russia, ``44`` the UK) and longer
prefixes pick out the others: by area code across the North American
Numbering Plan (Canada and the Caribbean), by ``phonenumbers``' leading digits
elsewhere (Kazakhstan, Åland, Isle of Man, ...). The few regions
``phonenumbers`` tells apart only by whole-number patterns (Guernsey and
Jersey within +44, Cocos and Christmas Island within +61, ...) count as the
main region of their code.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from functools import cache
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = ["MAX_PREFIX_DIGITS", "UNKNOWN_REGION", "country_prefixes", "region_by_prefix"]

# What a number of no country (non-geographic services, +800 ...) counts as:
# CLDR's "unknown region", which phonenumbers uses too.
UNKNOWN_REGION = "ZZ"
# Leading-digit patterns expand to at most this many digits (with the calling
# code): the longest prefix the Lua lookup tries.
MAX_PREFIX_DIGITS = 8
# Probes per North American area code: an area code counts for a region when
# every probe that parses as a valid number there says that region.
_NANP_PROBES = ("2345678", "5550123", "8675309")


@cache
def country_prefixes() -> dict[str, str]:
    """E.164 digit prefix (calling code and leading digits) -> ISO region."""
    table: dict[str, str] = {}
    for code, regions in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()):
        main = regions[0]
        if main == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
            continue
        table[str(code)] = main
        if len(regions) == 1:
            continue
        if code == 1:
            table.update(_nanp_area_codes())
            continue
        # In list order, as phonenumbers tries them: the first region wins.
        for region in regions[1:]:
            metadata = PhoneMetadata.metadata_for_region(region)
            pattern = metadata.leading_digits if metadata is not None else None
            if pattern is None:
                continue
            for digits in _expand(pattern):
                table.setdefault(f"{code}{digits}", region)
    return table


def region_by_prefix(e164: str) -> str:
    """The region of a number by the table, as the Lua scripts find it."""
    table = country_prefixes()
    digits = e164.removeprefix("+")
    for n in range(min(len(digits), MAX_PREFIX_DIGITS), 0, -1):
        region = table.get(digits[:n])
        if region is not None:
            return region
    return UNKNOWN_REGION


def _nanp_area_codes() -> dict[str, str]:
    """``1`` + area code -> region, for the area codes outside the US."""
    found = {}
    for area in range(200, 1000):
        regions = set()
        for probe in _NANP_PROBES:
            number = phonenumbers.parse(f"+1{area}{probe}")
            region = phonenumbers.region_code_for_number(number)
            if region is not None:
                regions.add(region)
        if len(regions) == 1 and "US" not in regions:
            found[f"1{area}"] = regions.pop()
    return found


def _expand(pattern: str) -> list[str]:
    """Every digit string a leading-digits pattern matches at its start (they
    are alternations of digits and digit classes); [] when it has a form
    this does not follow, so its region counts as the main one."""
    try:
        strings = sorted(set(_strings(sre_parse.parse(pattern))))
    except _Unsupported:
        return []
    # A pattern matching every longer string too is cut at MAX_PREFIX_DIGITS.
    if any(re.fullmatch(pattern, s) is None for s in strings):
        return []
    return strings


class _Unsupported(Exception):
    pass


def _strings(items: Any) -> Iterator[str]:
    parts: list[list[str]] = [list(_item(op, av)) for op, av in items]
    for combo in itertools.product(*parts):
        s = "".join(combo)
        if len(s) > MAX_PREFIX_DIGITS:
            raise _Unsupported
        yield s


def _item(op: Any, av: Any) -> Iterator[str]:
    if op is sre_constants.LITERAL:
        yield chr(av)
    elif op is sre_constants.IN:
        for kind, value in av:
            if kind is sre_constants.LITERAL:
                yield chr(value)
            elif kind is sre_constants.RANGE:
                yield from (chr(c) for c in range(value[0], value[1] + 1))
            else:
                raise _Unsupported
    elif op is sre_constants.BRANCH:
        for branch in av[1]:
            yield from _strings(branch)
    elif op is sre_constants.SUBPATTERN:
        yield from _strings(av[-1])
    else:
        raise _Unsupported
