"""The Lua scripts agree with Python: the field names of store/keys.py and the
transition table of domain/status.py, which scripts.py generates into them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from smsgate_server.domain.status import INITIAL, Status, can_enter
from smsgate_server.store.keys import (
    CodeField,
    EventField,
    MessageField,
    QueueField,
    TemplateField,
)
from smsgate_server.store.scripts import status_prelude

LUA = resources.files("smsgate_server.store") / "lua"
MESSAGE_SCRIPTS = ["accept", "cancel", "claim", "hand_over", "lib", "promote", "receipt", "settle"]
CODE_SCRIPTS = ["code_issue", "code_verify"]
TEMPLATE_SCRIPTS = ["template_create", "template_delete", "template_update"]


def calls(source: str, command: str, *, call: str = "") -> list[list[str]]:
    """The argument expressions of every ``redis.call('<command>', ...)`` (or,
    with ``call``, of every call that starts so, such as ``f(``)."""
    found = []
    start_of = re.escape(call) if call else rf"redis\.call\('{command}',"
    for match in re.finditer(start_of, source):
        args, depth, start, i = [], 0, match.end(), match.end()
        while True:
            c = source[i]
            if c in "({":
                depth += 1
            elif c in ")}":
                if depth == 0:
                    args.append(source[start:i].strip())
                    break
                depth -= 1
            elif c == "," and depth == 0:
                args.append(source[start:i].strip())
                start = i + 1
            i += 1
        found.append(args)
    return found


def literal_fields(source: str) -> set[str]:
    """Field names spelled as literals in hash and stream commands."""
    names: list[str] = []
    for args in calls(source, "HSET"):
        names += args[1::2]
    for command in ("HGET", "HINCRBY"):
        names += [args[1] for args in calls(source, command)]
    for args in calls(source, "HMGET"):
        names += args[1:]
    for args in calls(source, "XADD"):
        names += args[args.index("'*'") + 1 :: 2]
    # accept.lua's fields that are set, for one HSET.
    for args in calls(source, "HSET", call="present("):
        names += args[1::2]
    # Field lists read or written at once: claim.lua's FIELDS, the pairs a
    # script gives enter() to set.
    for args in calls(source, "", call="FIELDS = {"):
        names += args
    for args in calls(source, "", call="set = {"):
        names += args[0::2]
    return {n.strip("'") for n in names if re.fullmatch(r"'[a-z_]+'", n)}


def test_message_scripts_use_only_the_fields_listed_in_keys() -> None:
    listed = {*MessageField, *EventField, *QueueField}
    for name in MESSAGE_SCRIPTS:
        used = literal_fields((LUA / f"{name}.lua").read_text())
        assert used <= listed, f"{name}.lua uses unlisted fields {used - listed}"


def test_code_scripts_use_only_the_fields_listed_in_keys() -> None:
    for name in CODE_SCRIPTS:
        used = literal_fields((LUA / f"{name}.lua").read_text())
        assert used <= set(CodeField), f"{name}.lua uses unlisted fields {used - set(CodeField)}"


def test_template_scripts_use_only_the_fields_listed_in_keys() -> None:
    for name in TEMPLATE_SCRIPTS:
        used = literal_fields((LUA / f"{name}.lua").read_text())
        assert used <= set(TemplateField), f"{name}.lua: unlisted {used - set(TemplateField)}"


def test_the_field_check_sees_the_fields_of_a_script() -> None:
    used = literal_fields((LUA / "claim.lua").read_text())
    assert {"at", "ex", "p", "r", "snd", "ct", "b", "sa", "ec", "er", "ery"} <= used


def test_no_status_number_is_written_by_hand_in_the_scripts() -> None:
    for name in MESSAGE_SCRIPTS:
        source = (LUA / f"{name}.lua").read_text()
        assert not re.search(r"local (SCHEDULED|TERMINAL|ALLOWED)\b", source), name


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_the_lua_transition_table_is_the_python_one(redis: Redis) -> None:
    script = status_prelude() + (
        "local out = {}\n"
        "for to = 1, 9 do for from = 0, 9 do\n"
        "  if ALLOWED[to][from] then out[#out + 1] = from * 10 + to end\n"
        "end end\n"
        "return out"
    )
    pairs = {divmod(int(x), 10) for x in await redis.eval(script, 0)}
    expected = {
        (0 if current is None else current.value, new.value)
        for new in Status
        for current in [None, *Status]
        if can_enter(new, current)
    }
    assert pairs == expected
    assert {new for current, new in pairs if current == 0} == {s.value for s in INITIAL}


async def test_a_transition_the_table_forbids_stops_the_script(redis: Redis) -> None:
    lib = (LUA / "lib.lua").read_text()
    # A message the provider took (SENT) must never be queued again.
    script = status_prelude() + lib + "\nenter('ak', 'id1', '', SENT, QUEUED, 'bad')\nreturn 1"
    with pytest.raises(ResponseError, match="illegal transition 4 -> 2"):
        await redis.eval(script, 1, "sg:{sg0}:ev", "sg:{sg0}:", 0, "0-0", 60)
    assert await redis.exists("sg:{sg0}:m:ak:id1") == 0
