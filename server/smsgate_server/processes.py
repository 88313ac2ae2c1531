"""Several server processes on one gRPC port (``SMSGATE_PROCESSES``).

One ``grpc.aio`` event loop tops out at a few thousand unary calls/s, so more
cores need more processes. The parent starts the embedded Redis (if any) and
creates shared files, then forks the processes *before any gRPC object exists*
(grpc/grpc examples/python/multiprocessing); each process binds the same port
with ``SO_REUSEPORT`` and the kernel spreads connections over them. Process 0
keeps the HTTP side port; the others take a free one, and each one's
``/metrics`` shows all of them (shared_metrics.py). SIGTERM/SIGINT to the
parent stop every process gracefully; one that dies takes the rest down.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from smsgate_server.config import Settings, parse_address
from smsgate_server.runtime import (
    StartError,
    bind_address,
    check_data_dir_free,
    load_server_secret,
)
from smsgate_server.store.embedded_redis import EmbeddedRedis

__all__ = ["serve_processes"]


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve_processes(settings: Settings, run_one: Callable[[Settings], None]) -> int:
    """Fork ``settings.processes`` processes that each call ``run_one``; wait for them."""
    port = parse_address(settings.grpc_address)[1]
    if port == 0:
        raise StartError("SMSGATE_PROCESSES > 1 needs a fixed port in SMSGATE_GRPC_ADDRESS")
    # The processes bind with SO_REUSEPORT, which would also join a group
    # already serving this port: bind once without it first, so a taken port
    # stops the start instead of splitting calls with another server.
    bind_address(settings.grpc_address, "SMSGATE_GRPC_ADDRESS").close()
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        check_data_dir_free(settings.data_dir)
        embedded = EmbeddedRedis(settings.data_dir)
        url = embedded.start()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_server_secret(settings)  # created once here, not raced by the processes
    http_host = parse_address(settings.http_address)[0]
    alive: set[int] = set()
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(alive):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                alive.discard(pid)

    sys.stdout.flush()
    sys.stderr.flush()
    for i in range(settings.processes):
        update: dict[str, object] = {"redis_url": url}
        if i > 0:
            update["http_address"] = f"[{http_host}]:0" if ":" in http_host else f"{http_host}:0"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with_parent()
                run_one(settings.model_copy(update=update))
                code = 0
            except StartError as exc:
                print(f"smsgate-server process {i}: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        alive.add(pid)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    status = 0
    try:
        while alive:
            pid, wait_status = os.wait()
            alive.discard(pid)
            # Its live gauges leave the merged /metrics view (shared_metrics.py);
            # prometheus_client's multiprocess module is not annotated.
            mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if os.waitstatus_to_exitcode(wait_status) != 0 or not stopping:
                status = 1
                stop_all()
    finally:
        if embedded is not None:
            embedded.stop()
    return status
