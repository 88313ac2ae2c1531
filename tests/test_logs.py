"""RepeatedLog: a failure that repeats is one line per interval with a count."""

from __future__ import annotations

import logging

import pytest
from smsgate_server.logs import RepeatedLog


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def counts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    return [(r.getMessage(), getattr(r, "count", 0)) for r in caplog.records]


def test_repeats_within_an_interval_are_one_line_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    repeated = RepeatedLog(logging.getLogger("test.repeated"), "it failed", every=5, clock=clock)
    with caplog.at_level(logging.WARNING, "test.repeated"):
        for _ in range(100):
            repeated.occurred()
        clock.now = 5.0
        repeated.occurred()
    # The first line stands for the first occurrence; the next for the 100 since.
    assert counts(caplog) == [("it failed", 1), ("it failed", 100)]


def test_each_kind_has_its_own_interval(caplog: pytest.LogCaptureFixture) -> None:
    repeated = RepeatedLog(logging.getLogger("test.kinds"), "bad body", every=5, clock=Clock())
    with caplog.at_level(logging.WARNING, "test.kinds"):
        for _ in range(3):
            repeated.occurred("SendSms", method="SendSms")
            repeated.occurred("GetMessage", method="GetMessage")
    assert [getattr(r, "method", "") for r in caplog.records] == ["SendSms", "GetMessage"]


def test_only_the_first_line_of_an_interval_carries_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repeated = RepeatedLog(logging.getLogger("test.exc"), "bug", every=5, clock=Clock())
    with caplog.at_level(logging.WARNING, "test.exc"):
        for _ in range(3):
            try:
                raise KeyError("x")
            except KeyError as exc:
                repeated.occurred("KeyError", exc=exc)
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
