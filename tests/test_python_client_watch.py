"""The sync Python client against ``smsgate-server`` processes: ``watch()``
outlives a server killed with SIGKILL and restarted on the same port, missing
no status change and repeating none, and saves its resume token."""

from __future__ import annotations

import json
import signal
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import smsgate
from smsgate.v1 import sms_service_pb2

from tests.processes import Servers
from tests.waiting import wait_until_blocking

S = smsgate.MessageStatus


class Watcher(threading.Thread):
    """Follows ``client.watch()`` in a thread, recording every event."""

    def __init__(self, client: smsgate.Client, token_file: Path) -> None:
        super().__init__(daemon=True)
        self.client, self.token_file = client, token_file
        self.events: list[smsgate.StatusEvent] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.client.watch(token_file=self.token_file):
                self.events.append(event)
        except smsgate.Cancelled:
            pass  # the test closed the client
        except BaseException as exc:
            self.error = exc

    def terminal(self) -> set[str]:
        return {e.message_id for e in self.events if e.status in smsgate.TERMINAL}


def accepted(reply: sms_service_pb2.BatchSendResponse) -> list[str]:
    return [r.message_id for r in reply.results]


@pytest.mark.slow
def test_watch_resumes_across_a_server_kill_without_loss_or_duplicates(
    servers: Servers, tmp_path: Path, redis_url: str
) -> None:
    data = tmp_path / "data"
    first = servers.start(data, redis_url=redis_url)
    port = first.grpc_port
    made = servers.run(data, "apps", "create", "watcher", "--json", redis_url=redis_url)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    token_file = tmp_path / "watch.token"

    with smsgate.Client(f"127.0.0.1:{port}", token) as client:
        watcher = Watcher(client, token_file)
        watcher.start()
        try:
            # The watch is open once the server has a subscriber; a send before
            # would not be seen (no token yet), so wait for the first event.
            wait_until_blocking(
                lambda: (client.send("+14155550199", "hello"), watcher.events)[1],
                lambda events: bool(events),
                what="the watcher's first event",
                timeout=10,
                interval=0.3,
            )
            before = accepted(client.send_batch([f"+1415555{i:04d}" for i in range(20)], "a"))
            wait_until_blocking(
                watcher.terminal,
                lambda done: set(before) <= done,
                what="the first batch delivered and watched",
            )

            first.signal(signal.SIGKILL)
            first.wait_exit()
            servers.start(data, redis_url=redis_url, grpc_address=f"127.0.0.1:{port}")
            # Sent (and delivered) while the watcher is likely still reconnecting:
            # it gets these events from its resume token.
            after = accepted(client.send_batch([f"+1415556{i:04d}" for i in range(20)], "b"))
            wait_until_blocking(
                watcher.terminal,
                lambda done: set(after) <= done,
                what="the second batch delivered and watched",
                timeout=30,
                describe=lambda done: f"{len(set(after) & done)} of 20; error {watcher.error!r}",
            )

            seen: dict[str, list[int]] = defaultdict(list)
            for event in watcher.events:
                seen[event.message_id].append(event.status)
            for message_id in before + after:
                history = [h.status for h in client.get(message_id).history]
                assert seen[message_id] == history, message_id
            assert token_file.read_text() in {e.resume_token for e in watcher.events[-2:]}
        finally:
            client.close()
            watcher.join(10)
    assert watcher.error is None
