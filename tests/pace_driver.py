"""A replica's dispatcher, reduced to its pace: takes one-message calls of the
account ``tencent`` as fast as its gate lets it, on Redis's clock, for a while,
then prints how many went, when it started and when the last went
(``time.monotonic()``, one clock for every process of the machine;
test_provider_guard.py runs two at once). It prints ``ready`` once connected
and starts on a line on its stdin, so two drivers run at the same time
however long each took to start.

Usage: python -m tests.pace_driver REDIS_URL MESSAGES_PER_SECOND SECONDS
"""

from __future__ import annotations

import asyncio
import sys
import time

from smsgate_server.dispatch.guard import AccountPace, RedisProviderGate
from smsgate_server.store.connection import connect
from smsgate_server.store.provider_guard import BreakerPolicy, PacePolicy, ProviderGuardStore


async def main(url: str, rate: float, seconds: float) -> str:
    redis = await connect(url, pool_size=4)
    try:
        store = ProviderGuardStore(
            redis.client,
            breaker=BreakerPolicy(5, 0.5, 30_000, 20, 30_000, 15_000),
            pace=PacePolicy(floor=0.1, step=0.1, interval_ms=5_000),
        )
        gate = RedisProviderGate(
            store, paces={"tencent": AccountPace(messages_per_second=rate)}, cache_seconds=0.25
        )
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        went = 0
        started = last = time.monotonic()
        while time.monotonic() < started + seconds:
            wait = await gate.pace("tencent", 1)
            if wait:
                await asyncio.sleep(wait)
            else:
                went += 1
                last = time.monotonic()
        return f"{went} {started} {last}"
    finally:
        await redis.aclose()


if __name__ == "__main__":
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    print(asyncio.run(main(url, rate, seconds)))
