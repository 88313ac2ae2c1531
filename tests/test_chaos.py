"""The short fault run (``make chaos`` runs the full one): messages sent from
two client processes while the server and then Redis are killed with SIGKILL
and restarted; nothing accepted is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import Conductor, Plan

SHORT = Plan(
    messages=5_000,
    clients=2,
    batch_size=250,
    server_kills=1,
    redis_kills=1,
    give_up_seconds=60,
    settle_seconds=60,
)


@pytest.mark.slow
def test_accepted_messages_survive_a_server_kill_and_a_redis_kill(tmp_path: Path) -> None:
    report = Conductor(SHORT, tmp_path, say=False).run()
    figures = "\n".join(report.lines())
    assert report.accepted == SHORT.messages, figures
    assert report.lost == [], figures
    # Messages SENT at a server kill lose the simulator's receipt and expire;
    # the simulator fails and does not deliver some on purpose.
    outcomes = {"DELIVERED", "EXPIRED", "FAILED", "UNDELIVERED"}
    assert report.terminal.keys() <= {f"MESSAGE_STATUS_{o}" for o in outcomes}, figures
    assert report.duplicates <= report.in_flight_at_kills, figures
    assert report.sent_not_accepted == 0, figures
    # Outages answer UNAVAILABLE, never UNKNOWN or INTERNAL.
    assert report.answers.keys() <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, figures
