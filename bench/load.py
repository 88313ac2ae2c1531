"""A load client process: one event loop, N concurrent workers, one channel.

Started by the harness with ``multiprocessing`` (spawn, so no gRPC state is
inherited). It sets up, reports ready, waits for the common start time, then
runs its workers through a warm-up and a measured window and sends back what
it saw. Latencies are kept only for calls completed inside the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING

import grpc
from smsgate.v1 import sms_service_pb2
from smsgate.v1 import sms_service_pb2_grpc as sms_grpc

from bench.scenarios import OPS, Op, SendSmsOp, Unverified, batch_request

if TYPE_CHECKING:
    from smsgate.v1.sms_service_pb2_grpc import SmsServiceAsyncStub

__all__ = ["ClientResult", "ClientSpec", "run_client"]

WatchCall = grpc.aio.UnaryStreamCall[object, object]


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What one client process does.

    ``mode``: ``timed`` (calls for warm-up + duration), ``count`` (``count``
    messages in all, by SendSms or, with ``batch``, BatchSend; keeping the
    ids), ``watch`` (each worker is a WatchStatus subscriber measuring lag)
    or ``watch-count`` (one subscriber that waits for ``count`` DELIVERED
    events).
    """

    scenario: str
    target: str
    token: str
    index: int
    concurrency: int
    warmup: float
    duration: float
    mode: str = "timed"
    count: int = 0
    batch: int = 0
    rate: float = 0.0
    statuses: tuple[int, ...] = ()
    uvloop: bool = True


@dataclass(slots=True)
class ClientResult:
    """What one client process measured (times are ``time.monotonic()``)."""

    index: int
    ops: int = 0
    units: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # The first message seen of each error code (what a table of counts hides).
    error_details: dict[str, str] = field(default_factory=dict)
    first_start: float = 0.0
    last_end: float = 0.0
    failure: str = ""
    # Streams the server ended as too slow (SUBSCRIBER_TOO_SLOW) and the
    # client resumed from its last token, as the clients do.
    resumes: int = 0


class _Window:
    def __init__(self, start: float, warmup: float, duration: float) -> None:
        self.start = start
        self.open = start + warmup
        self.close = self.open + duration


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, Unverified):
        return f"UNVERIFIED_{exc}"
    return type(exc).__name__


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.details() or "")[:200]
    return str(exc)[:200]


async def _timed(op: Op, spec: ClientSpec, win: _Window, out: ClientResult) -> None:
    errors: Counter[str] = Counter()
    counter = iter(range(1 << 62))
    interval = spec.concurrency / spec.rate if spec.rate > 0 else 0.0

    async def worker(w: int) -> None:
        next_at = win.start + w * interval / max(spec.concurrency, 1)
        while True:
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            t0 = time.monotonic()
            if t0 >= win.close:
                return
            try:
                units = await op(next(counter))
            except (grpc.aio.AioRpcError, Unverified) as exc:
                if win.open <= time.monotonic() < win.close:
                    errors[_error_name(exc)] += 1
                    out.error_details.setdefault(_error_name(exc), _error_detail(exc))
                await asyncio.sleep(0.01)
                continue
            t1 = time.monotonic()
            if win.open <= t1 < win.close:
                out.ops += 1
                out.units += units
                out.latencies.append(t1 - t0)

    await asyncio.gather(*(worker(w) for w in range(spec.concurrency)))
    out.errors = dict(errors)


async def _count(op: SendSmsOp, spec: ClientSpec, out: ClientResult) -> None:
    errors: Counter[str] = Counter()
    todo = iter(range(spec.count))
    ids: list[str] = []
    out.first_start = time.monotonic()

    async def worker() -> None:
        for n in todo:
            t0 = time.monotonic()
            try:
                reply = await op.sms.SendSms(op.requests[n % 1000], metadata=op.metadata)
            except grpc.aio.AioRpcError as exc:
                errors[_error_name(exc)] += 1
                continue
            out.latencies.append(time.monotonic() - t0)
            ids.append(reply.message.id)

    async def batch_worker() -> None:
        for k in todo:
            t0 = time.monotonic()
            request = batch_request(spec.index, 100 + k, spec.batch)
            try:
                reply = await op.sms.BatchSend(request, metadata=op.metadata)
            except grpc.aio.AioRpcError as exc:
                errors[_error_name(exc)] += 1
                continue
            out.latencies.append(time.monotonic() - t0)
            ids.extend(r.message_id for r in reply.results if r.message_id)

    if spec.batch:
        todo = iter(range(spec.count // spec.batch))
        await asyncio.gather(*(batch_worker() for _ in range(min(spec.concurrency, 4))))
    else:
        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    out.last_end = time.monotonic()
    out.ops = out.units = len(ids)
    out.ids = ids
    out.errors = dict(errors)


def _watch_call(op: Op, spec: ClientSpec) -> WatchCall:
    stub: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(op.channel)
    request = sms_service_pb2.WatchStatusRequest(statuses=list(spec.statuses))  # type: ignore[arg-type]
    return stub.WatchStatus(request, metadata=op.metadata)  # type: ignore[return-value]


async def _open_watches(op: Op, spec: ClientSpec, n: int) -> list[WatchCall]:
    calls = [_watch_call(op, spec) for _ in range(n)]
    # The calls start at once, but a server may send nothing (not even headers)
    # before the first event; it subscribes "from now on" when the handler
    # runs, so give the handlers time to start.
    await asyncio.sleep(0.5 + n / 200)
    return calls


async def _watch(calls: list[WatchCall], win: _Window, out: ClientResult) -> None:
    errors: Counter[str] = Counter()

    async def subscriber(call: WatchCall) -> None:
        try:
            async for item in call:
                now = time.monotonic()
                if now >= win.close:
                    break
                if now >= win.open:
                    event = item.event  # type: ignore[attr-defined]
                    lag = time.time() - event.time.ToMilliseconds() / 1000
                    out.units += 1
                    out.latencies.append(max(lag, 0.0))
        except grpc.aio.AioRpcError as exc:
            errors[_error_name(exc)] += 1
        finally:
            call.cancel()

    async def closer() -> None:
        await asyncio.sleep(max(win.close - time.monotonic(), 0) + 0.05)
        for call in calls:
            call.cancel()

    close_task = asyncio.create_task(closer())
    await asyncio.gather(*(subscriber(c) for c in calls))
    close_task.cancel()
    out.ops = out.units
    out.errors = dict(errors)


async def _watch_count(op: Op, call: WatchCall, spec: ClientSpec, out: ClientResult) -> None:
    """Wait for ``spec.count`` messages' events. A stream the server ends
    because this subscriber fell too far behind (RESOURCE_EXHAUSTED,
    SUBSCRIBER_TOO_SLOW) is resumed from the last token, as the clients do: on
    a saturated box one subscriber of a 20,000-message burst can fall behind."""
    stub: SmsServiceAsyncStub = sms_grpc.SmsServiceStub(op.channel)
    seen: set[str] = set()
    token = ""
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + spec.duration):
            while len(seen) < spec.count:
                try:
                    async for item in call:
                        event = item.event  # type: ignore[attr-defined]
                        token = event.resume_token
                        seen.add(event.message_id)
                        out.last_end = time.monotonic()
                        if len(seen) >= spec.count:
                            break
                    else:
                        break  # the server ended the stream: no more events
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or not token:
                        raise
                    out.resumes += 1
                    call.cancel()
                    request = sms_service_pb2.WatchStatusRequest(
                        statuses=list(spec.statuses),  # type: ignore[arg-type]
                        resume_token=token,
                    )
                    call = stub.WatchStatus(request, metadata=op.metadata)  # type: ignore[assignment]
    except TimeoutError:
        out.errors = {"TIMEOUT": spec.count - len(seen)}
    except grpc.aio.AioRpcError as exc:
        out.errors = {_error_name(exc): 1}
    finally:
        call.cancel()
    out.units = out.ops = len(seen)


async def _main(
    spec: ClientSpec, ready: Queue[tuple[int, str]], go: Event, start: Synchronized[float]
) -> ClientResult:
    out = ClientResult(spec.index)
    metadata = (("authorization", f"Bearer {spec.token}"),)
    async with grpc.aio.insecure_channel(spec.target) as channel:
        op_type = SendSmsOp if spec.mode == "count" else OPS.get(spec.scenario, SendSmsOp)
        op = op_type(channel, metadata, spec.index)
        calls: list[WatchCall] = []
        try:
            await channel.channel_ready()
            await op.setup()
            if spec.mode == "watch":
                calls = await _open_watches(op, spec, spec.concurrency)
            elif spec.mode == "watch-count":
                calls = await _open_watches(op, spec, 1)
        except Exception as exc:
            ready.put((spec.index, f"{type(exc).__name__}: {exc}"))
            out.failure = traceback.format_exc()
            return out
        ready.put((spec.index, ""))
        await asyncio.to_thread(go.wait)
        begin = start.value
        await asyncio.sleep(max(begin - time.monotonic(), 0))
        win = _Window(begin, spec.warmup, spec.duration)
        if spec.mode == "timed":
            await _timed(op, spec, win, out)
        elif spec.mode == "count":
            assert isinstance(op, SendSmsOp)
            await _count(op, spec, out)
        elif spec.mode == "watch":
            await _watch(calls, win, out)
        else:
            await _watch_count(op, calls[0], spec, out)
    return out


def run_client(
    spec: ClientSpec,
    ready: Queue[tuple[int, str]],
    go: Event,
    start: Synchronized[float],
    results: Queue[ClientResult],
) -> None:
    """Entry point of a client process."""
    try:
        if spec.uvloop:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(_main(spec, ready, go, start))
        else:
            result = asyncio.run(_main(spec, ready, go, start))
    except Exception:
        result = ClientResult(spec.index, failure=traceback.format_exc())
        with contextlib.suppress(Exception):
            ready.put((spec.index, "crashed"))
    results.put(result)
