"""``python -m bench.vendor``: end-to-end delivered/s through the Tencent Cloud
fake, beside the simulator, in one run.

Each provider gets a fresh smsgate server on one Redis: the simulator (no
latency, receipts at once), then Tencent through its fake in a process of its
own (``bench.tencent_vendor``: TC3 signatures checked, up to 200 numbers per
SendSms call, a delivered status callback pushed to our receipt endpoint for
every number). The same N template messages are accepted by BatchSend, and a
WatchStatus opened before the first send counts DELIVERED events: the figure
is N over the time from the first send to the last delivery. The Tencent row
is also given as a ratio of the simulator's, measured minutes apart on the
same machine. Writes JSON to ``bench/out/vendor-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from smsgate.v1 import (
    message_pb2,
    sign_service_pb2,
    sign_service_pb2_grpc,
    sms_service_pb2,
    sms_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from bench.harness import OUT_DIR, Servers, free_port, machine
from tests.vendor_fakes.tencent import TencentFake

__all__ = ["main"]

DELIVERED = message_pb2.MESSAGE_STATUS_DELIVERED
BATCH = 1000
SIGN = "腾讯云"
# The fake's approved template, with one parameter.
VENDOR_TEMPLATE = "1110001"
RECEIPT_TOKEN = "bench-receipt-token-0123"


@dataclass(slots=True)
class VendorRow:
    """One provider's run."""

    provider: str
    messages: int
    accepted_per_s: float
    delivered_per_s: float
    seconds: float
    ratio_to_simulator: float | None = None


def _providers_file(root: Path, fake_port: int) -> Path:
    fake = TencentFake()
    path = root / "providers.toml"
    path.write_text(
        fake.providers_section(
            f"http://127.0.0.1:{fake_port}", f'receipt_token = "{RECEIPT_TOKEN}"\n'
        )
    )
    return path


async def _deliver(target: str, token: str, n: int, timeout: float) -> tuple[float, float, float]:
    """Accept ``n`` template messages and wait for each DELIVERED; (first send,
    last accept, last delivery) as monotonic times."""
    md = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as ch:
        sms: Any = sms_service_pb2_grpc.SmsServiceStub(ch)
        signs: Any = sign_service_pb2_grpc.SignServiceStub(ch)
        templates: Any = template_service_pb2_grpc.TemplateServiceStub(ch)
        await signs.CreateSignName(
            sign_service_pb2.CreateSignNameRequest(sign_name=sign_service_pb2.SignName(name=SIGN)),
            metadata=md,
        )
        await templates.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template=template_service_pb2.Template(
                    id="shipped",
                    kind=template_service_pb2.TEMPLATE_KIND_NOTIFICATION,
                    body="您的订单{order}已发货",
                    sign_name=SIGN,
                    provider_template_ids={"tencent": VENDOR_TEMPLATE},
                )
            ),
            metadata=md,
        )
        watch = sms.WatchStatus(
            sms_service_pb2.WatchStatusRequest(statuses=[DELIVERED]), metadata=md
        )
        await watch.initial_metadata()
        content = message_pb2.TemplateContent(template_id="shipped", params={"order": "A1"})
        begin = time.monotonic()
        ids: set[str] = set()
        for start in range(0, n, BATCH):
            reply = await sms.BatchSend(
                sms_service_pb2.BatchSendRequest(
                    template=content,
                    recipients=[
                        sms_service_pb2.BatchRecipient(phone_number=f"+86139{i:08d}")
                        for i in range(start, min(n, start + BATCH))
                    ],
                ),
                metadata=md,
            )
            ids.update(r.message_id for r in reply.results if r.message_id)
        accepted = time.monotonic()
        if len(ids) != n:
            raise RuntimeError(f"only {len(ids)} of {n} messages were accepted")
        delivered: set[str] = set()
        async with asyncio.timeout(timeout):
            async for response in watch:
                if response.event.message_id in ids:
                    delivered.add(response.event.message_id)
                    if len(delivered) == n:
                        break
        watch.cancel()
        return begin, accepted, time.monotonic()


def _run(servers: Servers, provider: str, n: int, timeout: float) -> VendorRow:
    servers.server_env["SMSGATE_PROVIDER"] = provider
    target, _ = servers.start_smsgate()
    try:
        begin, accepted, done = asyncio.run(_deliver(target, servers.token, n, timeout))
    finally:
        servers.stop_smsgate()
    return VendorRow(provider, n, n / (accepted - begin), n / (done - begin), done - begin)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.vendor", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000, help="messages per provider")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for deliveries")
    p.add_argument("--label", default="", help="free text stored in the JSON")
    p.add_argument("--out", type=Path, help="JSON path (default bench/out/vendor-<ts>.json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    started = time.time()
    rows: list[VendorRow] = []
    with tempfile.TemporaryDirectory(prefix="smsgate-bench-vendor-") as tmp:
        root = Path(tmp)
        http_port, fake_port = free_port(), free_port()
        callback = f"http://127.0.0.1:{http_port}/receipts/tencent/{RECEIPT_TOKEN}"
        env = {
            "SMSGATE_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
            "SMSGATE_PROVIDERS_FILE": str(_providers_file(root, fake_port)),
        }
        servers = Servers(root, uvloop=True, server_env=env)
        fake = subprocess.Popen(
            [sys.executable, "-m", "bench.tencent_vendor", str(fake_port), callback],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        try:
            assert fake.stdout is not None
            if fake.stdout.readline().strip() != b"ready":
                raise RuntimeError("the Tencent fake did not start")
            servers.start_redis()
            for provider in ("simulator", "tencent"):
                rows.append(_run(servers, provider, args.messages, args.timeout))
                print(
                    f"measured {provider}: {rows[-1].delivered_per_s:,.0f} delivered/s", flush=True
                )
        finally:
            fake.terminate()
            fake.wait(10)
            servers.stop()
    sim = rows[0].delivered_per_s
    for row in rows[1:]:
        row.ratio_to_simulator = row.delivered_per_s / sim if sim else None
    print(
        f"\n{'provider':<10} {'messages':>8} {'accepted/s':>11} {'delivered/s':>12} {'vs sim':>7}"
    )
    for r in rows:
        ratio = f"{r.ratio_to_simulator:.2f}" if r.ratio_to_simulator is not None else "-"
        print(
            f"{r.provider:<10} {r.messages:>8} {r.accepted_per_s:>11,.0f} "
            f"{r.delivered_per_s:>12,.0f} {ratio:>7}"
        )
    out = (
        args.out
        or OUT_DIR / f"vendor-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "label": args.label,
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
