"""A small HTTP load generator (aiohttp), run as its own process by the benchmarks.

closed: --concurrency workers send back-to-back for --seconds; reports requests/s.
open:   requests start at a fixed --rate regardless of answers (no coordinated omission:
        latency is measured from each request's scheduled start); reports p50/p99.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from typing import Any

import aiohttp


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=args.ca) if args.ca else False
    latencies: list[float] = []
    errors = 0

    async def one(session: aiohttp.ClientSession, scheduled: float) -> None:
        nonlocal errors
        try:
            async with session.get(args.url, headers=headers) as answer:
                body = await answer.read()
                if answer.status != 200:
                    errors += 1
                    return
                if args.filter_capability:  # the no-svcreg baseline: filter a full LIST client-side
                    items = json.loads(body)["items"]
                    [
                        i
                        for i in items
                        if any(
                            (c if isinstance(c, str) else c.get("name")) == args.filter_capability
                            for c in i["spec"].get("capabilities", [])
                        )
                    ]
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    connector = aiohttp.TCPConnector(limit=args.concurrency, ssl=context)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        deadline = started + args.seconds
        if args.mode == "closed":

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one(session, time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        else:
            tasks = []
            interval = 1.0 / args.rate
            n = 0
            while True:
                scheduled = started + n * interval
                if scheduled >= deadline:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, scheduled)))
                n += 1
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--token")
    parser.add_argument("--ca")
    parser.add_argument("--filter-capability")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
