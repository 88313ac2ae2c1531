"""The fault suite: many messages accepted by a real ``smsgate-server`` while
the server is killed (SIGKILL, restarted on the same Redis) and Redis is
killed (SIGKILL, restarted from its AOF); then every accepted message must
reach a terminal status, none lost, and the provider may have seen a message
twice only if it was in flight at a kill.

``python -m tests.chaos`` (``make chaos``) runs the full plan and exits
non-zero on any loss; ``tests/test_chaos.py`` runs a short one. Client
processes (``python -m tests.chaos client ...``) send with BatchSend and
SendSms and retry UNAVAILABLE with the same ``request_id``, so a message is
accepted exactly when some attempt answered OK: they record those ids. A
watching process (``... watch``) follows WatchStatus through the kills,
resuming from its last token, and must see each message's history exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import grpc
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from smsgate.v1 import message_pb2
from smsgate.v1 import sms_service_pb2 as pb
from smsgate.v1.sms_service_pb2_grpc import SmsServiceStub
from smsgate_server.store.embedded_redis import EmbeddedRedis

from tests.pipeline_support import sent_counts
from tests.processes import ServerProcess, Servers

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

ROOT = Path(__file__).resolve().parents[1]
S = message_pb2.MessageStatus
TERMINAL = {
    S.MESSAGE_STATUS_DELIVERED,
    S.MESSAGE_STATUS_UNDELIVERED,
    S.MESSAGE_STATUS_FAILED,
    S.MESSAGE_STATUS_CANCELED,
    S.MESSAGE_STATUS_EXPIRED,
}
# Answers after which the same request is sent again: the server or Redis is
# down, or the call outlived its deadline while they were.
RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# How far ahead a scheduled batch asks to be sent.
SCHEDULE_SECONDS = 3.0
# Reconnect quickly after a kill (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
SERVER_SETTINGS = {
    "sim_latency_ms": "20",
    "sim_receipt_delay_ms": "100",
    "visibility_timeout_seconds": "5",
    # The simulator's receipts die with its process: what a kill leaves SENT expires.
    "receipt_timeout_seconds": "10",
    # Some sends fail for a while, some for good, some are not delivered: the
    # retry, failure and undelivered paths run through the kills as well.
    "sim_failure_rate": "0.02",
    "sim_permanent_failure_rate": "0.005",
    "sim_undelivered_rate": "0.005",
    "retry_base_seconds": "0.2",
    "retry_max_seconds": "2",
}


@dataclass(frozen=True)
class Plan:
    """What one run sends and breaks."""

    messages: int = 100_000
    clients: int = 4
    batch_size: int = 500
    # Every this-many-th message of a client goes through SendSms.
    single_every: int = 20
    # Every this-many-th batch of a client is scheduled a little ahead.
    scheduled_every: int = 10
    calls_in_flight: int = 4
    server_kills: int = 3
    redis_kills: int = 1
    # Server processes on the one port (SMSGATE_PROCESSES); a kill takes them all.
    processes: int = 1
    # Bounds: how long a client keeps retrying one call, how long terminal may take.
    give_up_seconds: float = 120.0
    settle_seconds: float = 180.0

    def kills(self) -> list[str]:
        """The kinds of kill in order; Redis kills between server kills."""
        kinds = ["server"] * self.server_kills
        for r in range(self.redis_kills):
            kinds.insert(min(1 + 2 * r, len(kinds)), "redis")
        return kinds


@dataclass
class Report:
    """The figures of one run."""

    planned: int
    accepted: int = 0
    stored: int = 0
    terminal: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    sent: int = 0
    duplicates: int = 0
    in_flight_at_kills: int = 0
    sent_not_accepted: int = 0
    kills: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    given_up: int = 0
    watched: int = 0
    watch_missing: int = 0
    watch_repeated: int = 0
    watch_out_of_order: int = 0
    watch_answers: Counter[str] = field(default_factory=Counter)
    redis_bytes: int = 0
    log_bytes: int = 0
    log_errors: int = 0
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.accepted == self.planned
            and not self.lost
            and self.duplicates <= self.in_flight_at_kills
            and not (self.watch_missing or self.watch_repeated or self.watch_out_of_order)
        )

    def lines(self) -> list[str]:
        terminal = ", ".join(f"{k} {v}" for k, v in sorted(self.terminal.items()))
        answers = ", ".join(f"{k} {v}" for k, v in sorted(self.answers.items()))
        return [
            f"accepted      {self.accepted} of {self.planned} planned; "
            f"{self.stored} messages in Redis",
            f"terminal      {sum(self.terminal.values())} ({terminal})",
            f"lost          {len(self.lost)} {self.lost[:5] if self.lost else ''}".rstrip(),
            f"provider      {self.sent} sends, {self.duplicates} duplicates, "
            f"{self.in_flight_at_kills} in flight at the kills",
            f"not accepted  {self.sent_not_accepted} sent to the provider, "
            f"{self.given_up} calls given up",
            f"kills         {', '.join(self.kills)}",
            f"watched       {self.watched} events: {self.watch_missing} missing, "
            f"{self.watch_repeated} repeated, {self.watch_out_of_order} messages out of order; "
            f"reconnects after {dict(self.watch_answers)}",
            f"answers       {answers}",
            f"redis memory  {self.redis_bytes / 2**20:.0f} MiB used at the end "
            f"({self.redis_bytes // max(1, self.stored)} bytes per message)",
            f"server logs   {self.log_bytes / 1024:.0f} KiB, {self.log_errors} error events",
            f"wall time     {self.wall_seconds:.0f} s",
            "PASS" if self.ok else "FAIL",
        ]


# --- the clients -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a client: a batch or a single send."""

    request_id: str
    phones: list[str]
    # Seconds ahead to schedule the messages; 0 sends now.
    schedule: float = 0.0

    @property
    def single(self) -> bool:
        return len(self.phones) == 1


def client_calls(plan: Plan, run: str, client: int) -> list[Call]:
    """Client ``client``'s share of the plan, singles spread among the batches."""
    share = plan.messages // plan.clients + (client < plan.messages % plan.clients)
    singles = share // plan.single_every
    calls = [Call(f"{run}-{client}-s{i}", [f"+1415555{i % 10_000:04d}"]) for i in range(singles)]
    batched = share - singles
    batches = [
        Call(
            f"{run}-{client}-b{j}",
            [f"+1415555{i:04d}" for i in range(min(plan.batch_size, batched - start))],
            schedule=SCHEDULE_SECONDS if j % plan.scheduled_every == 0 else 0.0,
        )
        for j, start in enumerate(range(0, batched, plan.batch_size))
    ]
    step = max(1, len(calls) // max(1, len(batches)))
    out: list[Call] = []
    for j, batch in enumerate(batches):
        out += [*calls[j * step : (j + 1) * step], batch]
    return out + calls[len(batches) * step :]


async def send_call(
    stub: SmsServiceAsyncStub, token: str, call: Call, give_up: float, answers: Counter[str]
) -> list[str] | None:
    """Send ``call`` until an attempt answers OK (its accepted ids) or it gives up."""
    metadata = (("authorization", f"Bearer {token}"),)
    text = f"chaos {call.request_id}"
    # Set once: a retry must be the same request, or it is ALREADY_EXISTS.
    send_time = None
    if call.schedule:
        send_time = Timestamp()
        send_time.FromMilliseconds(int((time.time() + call.schedule) * 1000))
    deadline = time.monotonic() + give_up
    delay = 0.05
    while True:
        try:
            if call.single:
                reply = await stub.SendSms(
                    pb.SendSmsRequest(
                        phone_number=call.phones[0], text=text, request_id=call.request_id
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                answers["OK"] += 1
                return [reply.message.id]
            batch = await stub.BatchSend(
                pb.BatchSendRequest(
                    recipients=[pb.BatchRecipient(phone_number=p) for p in call.phones],
                    text=text,
                    request_id=call.request_id,
                    send_time=send_time,
                ),
                metadata=metadata,
                timeout=30,
            )
            answers["OK"] += 1
            if batch.rejected_count:
                answers["recipient rejected"] += batch.rejected_count
            return [r.message_id for r in batch.results if r.WhichOneof("result") == "message_id"]
        except grpc.aio.AioRpcError as err:
            answers[err.code().name] += 1
            if err.code() not in RETRY or time.monotonic() + delay > deadline:
                return None
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


async def run_client(address: str, token: str, calls: list[Call], plan: Plan, out: Path) -> None:
    """Send ``calls`` with ``plan.calls_in_flight`` at a time, appending accepted
    ids to ``out``; print the answers seen as JSON."""
    answers: Counter[str] = Counter()
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = SmsServiceStub(channel)
        with out.open("a") as accepted:

            async def worker() -> None:
                while not queue.empty():
                    ids = await send_call(
                        stub, token, queue.get_nowait(), plan.give_up_seconds, answers
                    )
                    if ids is None:
                        answers["given up"] += 1
                    else:
                        accepted.write("".join(f"{i}\n" for i in ids))
                        accepted.flush()

            await asyncio.gather(*(worker() for _ in range(plan.calls_in_flight)))
    print(json.dumps(answers))


async def run_watcher(address: str, token: str, out: Path) -> None:
    """Watch every status event of the app until SIGTERM, resuming from the last
    token after any error; append ``id status time_ms`` lines to ``out`` and
    print the errors seen as JSON."""
    metadata = (("authorization", f"Bearer {token}"),)
    answers: Counter[str] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    last = ""

    async def follow(stub: SmsServiceAsyncStub, events: TextIO) -> None:
        nonlocal last
        while True:
            try:
                request = pb.WatchStatusRequest(resume_token=last)
                async for reply in stub.WatchStatus(request, metadata=metadata):
                    e = reply.event
                    events.write(f"{e.message_id} {e.status} {e.time.ToMilliseconds()}\n")
                    last = e.resume_token
            except grpc.aio.AioRpcError as err:
                answers[err.code().name] += 1
            await asyncio.sleep(0.1)

    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        with out.open("a", buffering=1) as events:
            task = asyncio.create_task(follow(SmsServiceStub(channel), events))
            await stop.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    print(json.dumps(answers))


# --- the conductor -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def statuses(url: str) -> Counter[int]:
    """Status of every message hash in Redis (``store/keys.py``: ``m:`` keys, ``st``)."""
    client = redis.Redis.from_url(url)
    counts: Counter[int] = Counter()
    try:
        keys = list(client.scan_iter(match="sg:{sg*}:m:*", count=5000))
        for start in range(0, len(keys), 5000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 5000]:
                pipe.hget(key, "st")
            counts.update(int(st or 0) for st in pipe.execute())
    finally:
        client.close()
    return counts


def used_memory(url: str) -> int:
    """Bytes Redis says it uses."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


class Appended:
    """The complete lines appended to some files, read as they come."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.lines: list[str] = []

    def read(self) -> int:
        """Read what was appended since; returns the lines read in all."""
        for n, path in enumerate(self.paths):
            if not path.exists():
                continue
            with path.open() as f:
                f.seek(self.offsets[n])
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self.offsets[n] += len(complete)
            self.lines += complete.splitlines()
        return len(self.lines)


@dataclass
class Stage:
    """Redis and the current server of a run, and where they listen and log."""

    workdir: Path
    servers: Servers
    redis: EmbeddedRedis
    address: str
    sim_log: Path
    processes: int = 1
    server: ServerProcess | None = None

    def start_server(self) -> ServerProcess:
        self.server = self.servers.start(
            self.workdir / "server",
            redis_url=self.redis.url,
            grpc_address=self.address,
            sim_log=str(self.sim_log),
            processes=str(self.processes),
            **SERVER_SETTINGS,
        )
        return self.server

    def kill_server(self) -> int:
        """SIGKILL the server and restart it; returns the messages it left in flight."""
        assert self.server is not None
        self.server.signal(signal.SIGKILL, group=True)
        self.server.wait_exit()
        in_flight = statuses(self.redis.url)[S.MESSAGE_STATUS_SENDING]
        self.start_server()
        return in_flight

    def kill_redis(self) -> int:
        """SIGKILL Redis and restart it from its AOF; returns the messages in flight."""
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait()
        time.sleep(1.0)  # an outage the server notices, not a blip
        self.redis = EmbeddedRedis(self.redis.data_dir, port=self.redis.port, publish_url=False)
        self.redis.start()
        return statuses(self.redis.url)[S.MESSAGE_STATUS_SENDING]


def spawn(stage: Stage, role: str, **options: str) -> subprocess.Popen[str]:
    """Start ``python -m tests.chaos ROLE --option value ...`` against the stage."""
    argv = [sys.executable, "-m", "tests.chaos", role, "--address", stage.address]
    for name, value in options.items():
        argv += [f"--{name}", value]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wait_settled(url: str, timeout: float) -> Counter[int]:
    """Poll Redis until no message is short of a terminal status; the last counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = statuses(url)
        if all(status in TERMINAL for status in counts) or time.monotonic() > deadline:
            return counts
        time.sleep(1.0)


# GetMessage tries per accepted id when the server answers UNAVAILABLE.
READ_ATTEMPTS = 6


async def final_messages(
    address: str, token: str, ids: list[str]
) -> dict[str, message_pb2.Message | None]:
    """Each accepted id's message through GetMessage (None when not found)."""
    metadata = (("authorization", f"Bearer {token}"),)
    out: dict[str, message_pb2.Message | None] = {}
    limit = asyncio.Semaphore(64)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = SmsServiceStub(channel)

        async def one(message_id: str) -> None:
            # UNAVAILABLE asks the caller to retry, as any client would (a loaded
            # machine can keep a call waiting for a Redis connection past the
            # pool's timeout); a bounded number of times, then it is a failure.
            async with limit:
                for attempt in range(READ_ATTEMPTS):
                    try:
                        reply = await stub.GetMessage(
                            pb.GetMessageRequest(message_id=message_id),
                            metadata=metadata,
                            timeout=30,
                        )
                        out[message_id] = reply.message
                        return
                    except grpc.aio.AioRpcError as err:
                        if err.code() == grpc.StatusCode.NOT_FOUND:
                            out[message_id] = None
                            return
                        if err.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        if attempt == READ_ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.5 * 2**attempt)

        await asyncio.gather(*(one(i) for i in ids))
    return out


@dataclass
class Conductor:
    """Runs one plan in ``workdir`` and reports."""

    plan: Plan
    workdir: Path
    say: bool = True
    report: Report = field(init=False)

    def log(self, text: str) -> None:
        if self.say:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def run(self) -> Report:
        self.report = Report(planned=self.plan.messages)
        started = time.monotonic()
        servers = Servers(self.workdir)
        store = EmbeddedRedis(self.workdir / "redis", publish_url=False)
        store.start()
        stage = Stage(
            self.workdir,
            servers,
            store,
            f"127.0.0.1:{free_port()}",
            self.workdir / "sim.log",
            processes=self.plan.processes,
        )
        try:
            self._run(stage)
        finally:
            servers.close()
            stage.redis.stop()
        self.report.wall_seconds = time.monotonic() - started
        return self.report

    def _run(self, stage: Stage) -> None:
        plan, report = self.plan, self.report
        stage.start_server()
        made = stage.servers.run(
            stage.workdir / "server", "apps", "create", "chaos", "--json", redis_url=stage.redis.url
        )
        assert made.returncode == 0, made.stderr
        token = str(json.loads(made.stdout)["token"])
        run = secrets.token_hex(4)
        watch_path = stage.workdir / "watched.txt"
        watcher = spawn(stage, "watch", token=token, out=str(watch_path))
        watched = Appended([watch_path])
        sentinels = self._until_watched(stage, token, watched)
        self.log(f"{plan.messages} messages from {plan.clients} clients, kills: {plan.kills()}")
        out = [stage.workdir / f"accepted-{k}.txt" for k in range(plan.clients)]
        shared = {"token": token, "run": run, "plan": json.dumps(asdict(plan))}
        clients = [
            spawn(stage, "client", index=str(k), out=str(out[k]), **shared)
            for k in range(plan.clients)
        ]
        accepted = Appended(out)
        kinds = plan.kills()
        for n, kind in enumerate(kinds):
            mark = plan.messages * (n + 1) // (len(kinds) + 1)
            while accepted.read() < mark and any(c.poll() is None for c in clients):
                time.sleep(0.05)
            in_flight = stage.kill_server() if kind == "server" else stage.kill_redis()
            report.in_flight_at_kills += in_flight
            report.kills.append(f"{kind} at {len(accepted.lines)} accepted ({in_flight} in flight)")
            self.log(report.kills[-1])
        for client in clients:
            answers, _ = client.communicate(timeout=plan.give_up_seconds * 10)
            report.answers.update(json.loads(answers.strip().splitlines()[-1]))
        report.given_up = report.answers.pop("given up", 0)
        report.accepted = accepted.read()
        self.log(f"{report.accepted} accepted; waiting for terminal statuses")
        last = wait_settled(stage.redis.url, plan.settle_seconds)
        report.stored = sum(last.values())
        report.redis_bytes = used_memory(stage.redis.url)
        self.log(f"Redis holds {dict(last)}; checking each accepted id")
        final = asyncio.run(final_messages(stage.address, token, accepted.lines))
        report.terminal = Counter(S.Name(m.status) if m else "NOT_FOUND" for m in final.values())
        report.lost = [i for i, m in final.items() if m is None or m.status not in TERMINAL]
        sent = sent_counts(stage.sim_log)
        report.sent = sum(sent.values())
        report.duplicates = sum(count - 1 for count in sent.values())
        report.sent_not_accepted = len(set(sent) - set(final) - sentinels)
        self._check_watched(final, watcher, watched)
        for server in stage.servers.started:
            report.log_bytes += len(server.stderr)
            report.log_errors += sum(e.get("level") == "error" for e in server.events())

    def _until_watched(self, stage: Stage, token: str, watched: Appended) -> set[str]:
        """Send messages until the watcher sees one, so it watches before the
        clients start (an empty resume token starts from now); their ids."""
        metadata = (("authorization", f"Bearer {token}"),)
        sent: set[str] = set()
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(stage.address) as channel:
            stub = SmsServiceStub(channel)
            while not watched.read():
                assert time.monotonic() < deadline, f"the watcher saw none of {len(sent)} sends"
                request = pb.SendSmsRequest(phone_number="+14155550100", text="watching?")
                sent.add(stub.SendSms(request, metadata=metadata, timeout=10).message.id)
                time.sleep(0.2)
        return sent

    def _check_watched(
        self,
        final: dict[str, message_pb2.Message | None],
        watcher: subprocess.Popen[str],
        watched: Appended,
    ) -> None:
        """Wait (bounded) until the watcher has seen as many events as the
        accepted messages' histories hold, stop it, and compare message by message."""
        report = self.report
        history = {
            i: [(int(c.status), c.time.ToMilliseconds()) for c in m.history]
            for i, m in final.items()
            if m
        }
        expected = sum(len(h) for h in history.values())
        deadline = time.monotonic() + self.plan.settle_seconds
        relevant = done = 0
        while True:
            watched.read()
            relevant += sum(line.split(" ", 1)[0] in history for line in watched.lines[done:])
            done = len(watched.lines)
            if relevant >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        watcher.terminate()
        answers, _ = watcher.communicate(timeout=30)
        report.watch_answers.update(json.loads(answers.strip().splitlines()[-1]))
        watched.read()
        seen: dict[str, list[tuple[int, int]]] = {}
        for line in watched.lines:
            message_id, status, ms = line.split()
            if message_id in history:
                seen.setdefault(message_id, []).append((int(status), int(ms)))
        for message_id, changes in history.items():
            got = seen.get(message_id, [])
            report.watched += len(got)
            report.watch_missing += sum((Counter(changes) - Counter(got)).values())
            report.watch_repeated += sum((Counter(got) - Counter(changes)).values())
            if sorted(got) == sorted(changes) and got != changes:
                report.watch_out_of_order += 1


# --- command line ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client", help="one client process (started by the conductor)")
    for name in ("address", "token", "run", "index", "plan", "out"):
        client.add_argument(f"--{name}", required=True)
    watch = sub.add_parser("watch", help="the watching process (started by the conductor)")
    for name in ("address", "token", "out"):
        watch.add_argument(f"--{name}", required=True)
    parser.add_argument("--messages", type=int, default=Plan.messages)
    parser.add_argument("--clients", type=int, default=Plan.clients)
    parser.add_argument("--batch-size", type=int, default=Plan.batch_size)
    parser.add_argument("--processes", type=int, default=Plan.processes)
    parser.add_argument("--server-kills", type=int, default=Plan.server_kills)
    parser.add_argument("--redis-kills", type=int, default=Plan.redis_kills)
    parser.add_argument("--workdir", type=Path, help="keep processes' files here")
    args = parser.parse_args(argv)
    if args.command == "client":
        plan = Plan(**json.loads(args.plan))
        calls = client_calls(plan, args.run, int(args.index))
        asyncio.run(run_client(args.address, args.token, calls, plan, Path(args.out)))
        return 0
    if args.command == "watch":
        asyncio.run(run_watcher(args.address, args.token, Path(args.out)))
        return 0
    plan = Plan(
        messages=args.messages,
        clients=args.clients,
        batch_size=args.batch_size,
        processes=args.processes,
        server_kills=args.server_kills,
        redis_kills=args.redis_kills,
    )
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = Conductor(plan, args.workdir).run()
    else:
        with tempfile.TemporaryDirectory(prefix="smsgate-chaos-") as tmp:
            report = Conductor(plan, Path(tmp)).run()
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
