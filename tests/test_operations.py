"""Operations that do not surprise: a taken port, a Redis that would lose data,
a misspelt setting, a changed shard count, liveness and readiness, and one
``/metrics`` view over every server process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.processes import Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a taken gRPC port ------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_second_server_on_a_taken_grpc_port_is_refused(
    servers: Servers, tmp_path: Path, processes: str
) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = servers.start(tmp_path / "first", GRPC_ADDRESS=address, PROCESSES=processes)

    second = servers.spawn(tmp_path / "second", GRPC_ADDRESS=address, PROCESSES=processes)

    assert second.wait_exit() != 0
    assert f"cannot listen on SMSGATE_GRPC_ADDRESS={address}" in second.stderr
    assert first.process.poll() is None
