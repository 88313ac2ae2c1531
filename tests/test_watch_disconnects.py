"""WatchStatus streams end with their client, however it disappears: the
subscription and its buffers go, the live-subscriptions gauge returns to zero
and the server's memory stays where it was."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from smsgate_server.runtime import Running
from smsgate_server.services.watch import WatchFilter
from smsgate_server.store.apps import AppStore
from smsgate_server.store.connection import connect

from tests.processes import Servers
from tests.waiting import wait_until, wait_until_blocking

WATCH_PATH = "/smsgate.v1.SmsService/WatchStatus"
# An empty WatchStatusRequest in gRPC's length-prefixed framing.
EMPTY_REQUEST = b"\x00\x00\x00\x00\x00"
DISCONNECTS = 1_000  # of each kind
RSS_SLACK_KB = 50 * 1024
# A WatchStatus client that says when its stream is open, then reads on.
WATCHER = """
import sys, grpc
from smsgate.v1 import sms_service_pb2 as pb, sms_service_pb2_grpc as rpc
channel = grpc.insecure_channel(sys.argv[1])
call = rpc.SmsServiceStub(channel).WatchStatus(
    pb.WatchStatusRequest(), metadata=(("authorization", "Bearer " + sys.argv[2]),)
)
call.initial_metadata()
print("open", flush=True)
for _ in call:
    pass
"""


def watch_then_reset(port: int, token: str, *, after_headers: bool) -> None:
    """Open a WatchStatus stream over raw HTTP/2 (prior knowledge) and reset the
    TCP connection (SO_LINGER 0: an RST, no goodbye), before or after the
    server's response headers."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", WATCH_PATH),
                (":authority", f"127.0.0.1:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("authorization", f"Bearer {token}"),
            ],
        )
        conn.send_data(stream, EMPTY_REQUEST, end_stream=True)
        sock.sendall(conn.data_to_send())
        while after_headers:
            data = sock.recv(65536)
            assert data, "the server closed the connection before its response headers"
            for event in conn.receive_data(data):
                assert not isinstance(event, h2.events.StreamEnded | h2.events.StreamReset), event
                if isinstance(event, h2.events.ResponseReceived):
                    after_headers = False
            sock.sendall(conn.data_to_send())
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1])


def live_subscriptions(http_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
    match = re.search(r"^smsgate_watch_subscriptions (\S+)$", text, re.MULTILINE)
    assert match, "no smsgate_watch_subscriptions gauge on /metrics"
    return float(match[1])


@pytest.mark.slow
def test_abrupt_disconnects_release_subscriptions_and_memory(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = servers.start(data_dir)
    token = json.loads((data_dir / "dev-app.json").read_text())["token"]
    # Warm up: the first watch starts the shard readers and fills lazy caches.
    watch_then_reset(server.grpc_port, token, after_headers=True)
    wait_until_blocking(
        lambda: live_subscriptions(server.http_port),
        lambda n: n == 0,
        what="the warm-up subscription to go",
    )
    start_kb = rss_kb(server.process.pid)

    for _ in range(DISCONNECTS):
        watch_then_reset(server.grpc_port, token, after_headers=True)
    for _ in range(DISCONNECTS):
        watch_then_reset(server.grpc_port, token, after_headers=False)

    wait_until_blocking(
        lambda: live_subscriptions(server.http_port),
        lambda n: n == 0,
        what="every subscription of a reset connection to go",
    )
    grown_kb = rss_kb(server.process.pid) - start_kb
    assert grown_kb < RSS_SLACK_KB, f"RSS grew {grown_kb} kB over {2 * DISCONNECTS} disconnects"


@pytest.mark.slow
def test_a_client_that_falls_silent_loses_its_subscription(
    servers: Servers, tmp_path: Path
) -> None:
    """A peer that neither reads nor closes (host gone, process stopped) is found
    by HTTP/2 keepalive: no ack within the ping timeout drops its connection."""
    data_dir = tmp_path / "data"
    server = servers.start(data_dir, KEEPALIVE_SECONDS="1")
    token = json.loads((data_dir / "dev-app.json").read_text())["token"]
    client = subprocess.Popen(
        [sys.executable, "-c", WATCHER, f"127.0.0.1:{server.grpc_port}", token],
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"open\n"
        assert live_subscriptions(server.http_port) == 1
        client.send_signal(signal.SIGSTOP)  # its kernel still acks TCP; it answers nothing
        wait_until_blocking(
            lambda: live_subscriptions(server.http_port),
            lambda n: n == 0,
            what="the silent client's subscription to go",
            timeout=30,
            interval=0.5,
        )
    finally:
        client.kill()
        client.wait()


async def test_a_cancellation_landing_in_a_redis_command_is_never_lost(redis_url: str) -> None:
    """redis-py's asyncio.wait_for can swallow a cancellation on Python 3.11;
    the store edge raises it again, whichever step of the command it lands in."""
    redis = await connect(redis_url, pool_size=8)
    try:
        apps = AppStore(redis.client)
        for steps in range(16):
            task = asyncio.ensure_future(apps.count())
            for _ in range(steps):
                await asyncio.sleep(0)
            if not task.cancel():
                continue  # finished before the cancellation: nothing to lose
            await asyncio.wait([task])
            assert task.cancelled(), f"cancelled after {steps} steps, the call returned"
    finally:
        await redis.aclose()


async def test_a_watch_whose_task_lost_its_cancellation_is_cancelled_again(
    server: Running,
) -> None:
    """The hub's sweep is the backstop for a cancellation swallowed anywhere
    below a handler: the subscription still goes."""
    hub = server.hub
    assert hub is not None
    hub.sweep_seconds = 0.05

    async def handler() -> None:
        watch = await hub.open("ak_" + "0" * 20, WatchFilter(), "")
        try:
            # Like asyncio.wait_for on Python 3.11: the cancellation lands here
            # and is swallowed; the handler goes on to wait for events.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            async for _ in watch.events():
                pass
        finally:
            watch.close()

    task = asyncio.create_task(handler())

    async def subscribers() -> int:
        return hub.subscriber_count

    await wait_until(subscribers, lambda n: n == 1, what="the watch to open")
    task.cancel()

    async def ended() -> bool:
        return task.done()

    await wait_until(ended, what="the handler to be cancelled again")
    assert task.cancelled()
    assert hub.subscriber_count == 0
