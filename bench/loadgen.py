"""A small HTTP load generator (aiohttp), run as its own process by the benchmarks.

--concurrency workers send back to back for --seconds; prints one JSON object with
requests/s and p50/p99. It exists for what a Go load generator cannot stand in for: a Python
client doing a client's work on each answer (--filter-capability parses a LIST and filters
it, the no-svcreg baseline). Latency at a fixed rate is measured with vegeta (bench/vegeta.py).
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

    async def one(session: aiohttp.ClientSession, started: float) -> None:
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
        latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=args.concurrency, ssl=context)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        deadline = started + args.seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(session, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
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
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--token")
    parser.add_argument("--ca")
    parser.add_argument("--filter-capability")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
