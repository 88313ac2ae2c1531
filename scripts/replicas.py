"""Run smsgate replicas on one machine, Procfile style, until Ctrl-C.

Usage: python scripts/replicas.py [--api N] [--worker N] [--port P] [--app NAME]

Starts N api processes (SMSGATE_ROLE=api, gRPC on ports P, P+1, ...) and N
worker processes (SMSGATE_ROLE=worker) on the Redis of SMSGATE_REDIS_URL (for
instance the cluster `make cluster` prints), all with one
SMSGATE_SERVER_SECRET (generated when unset), each with its own data
directory under .smsgate/replicas. Every line a process writes is printed
with its name in front, like a Procfile runner. With --app, an app of that
name is created first and its token printed. Ctrl-C (or SIGTERM) stops every
process gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(sys.executable).parent / "smsgate-server"


def _pipe(name: str, stream: object) -> None:
    assert hasattr(stream, "readline")
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<9}| {line.decode(errors='replace')}")
        sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", type=int, default=3, help="api processes (default 3)")
    parser.add_argument("--worker", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--port", type=int, default=50051, help="first api's gRPC port")
    parser.add_argument("--app", help="create an app of this name and print its token")
    args = parser.parse_args()
    if not os.environ.get("SMSGATE_REDIS_URL"):
        parser.error("set SMSGATE_REDIS_URL (make cluster prints one)")
    env = dict(os.environ)
    if not env.get("SMSGATE_SERVER_SECRET"):
        env["SMSGATE_SERVER_SECRET"] = secrets.token_hex(32)
        print(f"export SMSGATE_SERVER_SECRET={env['SMSGATE_SERVER_SECRET']}  # shared by all")
    env.setdefault("SMSGATE_LOG_FORMAT", "text")
    base = ROOT / ".smsgate" / "replicas"

    if args.app:
        made = subprocess.run(
            [str(SERVER), "apps", "create", args.app, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr)
            return made.returncode
        print(f"app {args.app!r}: export SMSGATE_TOKEN={json.loads(made.stdout)['token']}")

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    roles = [("api", i) for i in range(args.api)] + [("worker", i) for i in range(args.worker)]
    for role, i in roles:
        name = f"{role}-{i + 1}"
        grpc_port = args.port + i if role == "api" else 0
        proc_env = dict(
            env,
            SMSGATE_ROLE=role,
            SMSGATE_GRPC_ADDRESS=f"127.0.0.1:{grpc_port}",
            SMSGATE_HTTP_ADDRESS="127.0.0.1:0",
            SMSGATE_DATA_DIR=str(base / name),
        )
        proc = subprocess.Popen(
            [str(SERVER)],
            env=proc_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches this runner only, which
            # then stops each process in order.
            start_new_session=True,
        )
        threading.Thread(target=_pipe, args=(name, proc.stdout), daemon=True).start()
        procs.append((name, proc))
        print(f"{name:<9}| started (pid {proc.pid}, gRPC 127.0.0.1:{grpc_port or 'any'})")

    # SIGTERM stops it like Ctrl-C. (Not by setting an Event from the handler:
    # that deadlocks when the signal lands while the main thread holds the
    # Event's lock in wait().)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while all(proc.poll() is None for _, proc in procs):
            time.sleep(0.5)
        name, proc = next((n, p) for n, p in procs if p.poll() is not None)
        print(f"{name:<9}| exited with {proc.returncode}; stopping the others")
    except KeyboardInterrupt:
        pass
    # All at once: each finishes its calls and sends within its grace period.
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{name:<9}| did not stop in 30 s; killed")
            proc.kill()
            proc.wait()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
