"""The message state machine (domain/status.py), pure."""

from __future__ import annotations

from smsgate_server.domain.status import ALLOWED_FROM, INITIAL, TERMINAL, Status, can_enter


def reachable() -> set[Status]:
    seen = set(INITIAL)
    frontier = list(INITIAL)
    while frontier:
        current = frontier.pop()
        for new in Status:
            if can_enter(new, current) and new not in seen:
                seen.add(new)
                frontier.append(new)
    return seen


def test_every_status_is_reachable_from_acceptance() -> None:
    assert reachable() == set(Status)


def test_a_message_is_accepted_only_scheduled_or_queued() -> None:
    assert {s for s in Status if can_enter(s, None)} == {Status.SCHEDULED, Status.QUEUED}


def test_a_terminal_status_is_never_left() -> None:
    for current in TERMINAL:
        assert [new for new in Status if can_enter(new, current)] == []


def test_every_status_that_is_not_terminal_can_still_end() -> None:
    for current in set(Status) - TERMINAL:
        assert any(can_enter(new, current) for new in Status), current


def test_a_provider_error_queues_the_message_again() -> None:
    assert can_enter(Status.QUEUED, Status.SENDING)


def test_a_message_a_provider_took_is_never_queued_again() -> None:
    assert not can_enter(Status.QUEUED, Status.SENT)
    assert not can_enter(Status.SENDING, Status.SENT)


def test_only_a_message_no_provider_has_can_be_canceled() -> None:
    assert {s for s in Status if can_enter(Status.CANCELED, s)} == {
        Status.SCHEDULED,
        Status.QUEUED,
    }


def test_a_dead_workers_send_can_be_reclaimed() -> None:
    assert can_enter(Status.SENDING, Status.SENDING)


def test_receipts_apply_only_to_sent_messages() -> None:
    assert ALLOWED_FROM[Status.DELIVERED] == ALLOWED_FROM[Status.UNDELIVERED] == {Status.SENT}


def test_the_terminal_property_matches_the_set() -> None:
    assert {s for s in Status if s.terminal} == TERMINAL
