"""``python -m bench.tencent_vendor PORT CALLBACK_URL``: the Tencent Cloud SMS
fake (tests/vendor_fakes/tencent.py) on 127.0.0.1:PORT, in a process of its
own, pushing a delivered status callback for every number it accepted to
CALLBACK_URL (our ``/receipts/NAME/TOKEN``), a JSON array at a time as Tencent
does. Prints "ready" once it listens; runs until terminated.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from tests.vendor_fakes.loopback import serve
from tests.vendor_fakes.tencent import TencentFake

# Callback entries per push, and the pause between pushes when none are new.
PUSH_BATCH = 1000
PUSH_IDLE_SECONDS = 0.02


async def push_receipts(fake: TencentFake, url: str) -> None:
    """Post the status callback of each accepted number once."""
    pushed = 0
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            reports = fake.status_callbacks(pushed)[:PUSH_BATCH]
            if not reports:
                await asyncio.sleep(PUSH_IDLE_SECONDS)
                continue
            response = await http.post(url, json=reports)
            if response.status_code == 200:
                pushed += len(reports)
                # Nothing reads them again: keep the fake's memory flat.
                if pushed == len(fake.sent):
                    fake.sent.clear()
                    fake.calls.clear()
                    pushed = 0
            else:
                await asyncio.sleep(0.2)


async def main(port: int, callback_url: str) -> None:
    fake = TencentFake()
    async with serve(fake.app, port):
        print("ready", flush=True)
        await push_receipts(fake, callback_url)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
