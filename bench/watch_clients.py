"""The client side of bench/watch_load.py, in its own process: SSE watchers, long polls and the
changes they should hear, with the delivery latency of every event.

    python -m bench.watch_clients URL TOKEN WATCHERS LONG_POLLS RATE SECONDS RESULTS_JSON

Writes ``RESULTS_JSON.opened`` once every stream and long poll is open, then changes
``spec.metadata.seq`` of a random registration RATE times a second (through the API server, as
any writer would), and finally RESULTS_JSON with the latencies in seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.discovery_load import NAMESPACE, REG_PATH
from svcreg.kube.api import KubeApi

UNFILTERED_SHARE = 0.01
_SEQ = re.compile(rb'"seq":\s*"(\d+)"')


class State:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}  # seq -> when its PATCH was sent
        self.capability_of: dict[str, str] = {}  # seq -> capability of the changed registration
        self.sse: list[tuple[str, float]] = []  # (seq, when read): timed against its commit at the end
        self.long_polls: list[tuple[str, float]] = []
        self.patch: list[float] = []
        self.heard: dict[str, int] = {}  # seq -> SSE watchers that heard it
        self.resets = 0
        self.open_streams = 0
        self.lag_max = 0.0


def _seq(document: dict[str, Any]) -> str | None:
    meta = document.get("metadata") or {}
    value = meta.get("seq")
    return value if isinstance(value, str) else None


async def watcher(session: aiohttp.ClientSession, url: str, state: State, opened: asyncio.Event) -> None:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        response.raise_for_status()
        state.open_streams += 1
        opened.set()
        event = ""
        seen: set[str] = set()  # an edit is heard twice (the spec, then its status): count the first
        async for raw in response.content:
            # Read cheaply (no JSON parse per event): the client must not be what limits the run.
            if raw.startswith(b"event: "):
                event = raw[7:].strip().decode()
            elif raw.startswith(b"data: "):
                now = time.monotonic()
                if event == "reset":
                    state.resets += 1
                    continue
                found = _SEQ.search(raw)
                seq = found.group(1).decode() if found else None
                if seq is not None and seq in state.capability_of and seq not in seen:
                    seen.add(seq)
                    state.sse.append((seq, now))
                    state.heard[seq] = state.heard.get(seq, 0) + 1


async def long_poller(session: aiohttp.ClientSession, base: str, capability: str, state: State) -> None:
    url = f"{base}/v1/capabilities/{capability}"
    counted: set[str] = set()
    async with session.get(url) as first:
        index = (await first.json())["index"]
    while True:
        async with session.get(url, params={"index": str(index), "wait": "30s"}) as response:
            answer = await response.json()
        now = time.monotonic()
        if answer["index"] == index:
            continue  # the wait ended with nothing new for this capability
        index = answer["index"]
        for item in answer.get("items") or []:
            seq = _seq(item)
            if seq is not None and seq in state.capability_of and seq not in counted:
                counted.add(seq)
                state.long_polls.append((seq, now))


async def lag_watch(state: State) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.1)
        state.lag_max = max(state.lag_max, time.monotonic() - before - 0.1)


async def main(argv: list[str]) -> None:
    base, token, watchers, long_polls, rate, seconds, results = argv
    state = State()
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        unfiltered = max(1, int(int(watchers) * UNFILTERED_SHARE))
        for n in range(int(watchers)):
            url = f"{base}/v1/watch" if n < unfiltered else f"{base}/v1/watch?capability=cap-{n % 1000}"
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(watcher(session, url, state, opened)))
            await opened.wait()
        for n in range(int(long_polls)):
            tasks.append(asyncio.create_task(long_poller(session, base, f"cap-{(n * 7) % 1000}", state)))
        await asyncio.sleep(2)  # the long polls' first answers and waits are in place
        Path(results + ".opened").touch()  # noqa: ASYNC240 (one tiny file, once)
        tasks.append(asyncio.create_task(lag_watch(state)))
        api = KubeApi()
        rng = random.Random(1)
        interval = 1.0 / float(rate)
        changes = 0
        start = time.monotonic()
        expected_sse: dict[str, int] = {}
        try:
            while time.monotonic() - start < float(seconds):
                target = start + changes * interval
                await asyncio.sleep(max(0.0, target - time.monotonic()))
                i = rng.randrange(1000)
                seq = str(changes)
                state.capability_of[seq] = f"cap-{i % 1000}"
                concerned = sum(1 for n in range(unfiltered, int(watchers)) if n % 1000 == i % 1000)
                expected_sse[seq] = unfiltered + concerned
                patch = {"spec": {"metadata": {"seq": seq}}}
                path = f"{REG_PATH}/r{i:05d}"
                asyncio.get_running_loop().create_task(_patch(api, path, patch, seq, state))
                changes += 1
            await asyncio.sleep(5)  # let the last changes arrive
        finally:
            await api.close()
        missed = sum(max(0, want - state.heard.get(seq, 0)) for seq, want in expected_sse.items())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    Path(results).write_text(  # noqa: ASYNC240 (once, at the end)
        json.dumps(
            {
                # An event read before the client handled the PATCH's answer counts as 0.
                "sse": [max(0.0, t - state.sent[q]) for q, t in state.sse if q in state.sent],
                "long_polls": [max(0.0, t - state.sent[q]) for q, t in state.long_polls if q in state.sent],
                "patch": state.patch,
                "changes": changes,
                "unfiltered": unfiltered,
                "missed": missed,
                "resets": state.resets,
                "client_lag_max": state.lag_max,
                "namespace": NAMESPACE,
            }
        )
    )


async def _patch(api: KubeApi, path: str, patch: dict[str, Any], seq: str, state: State) -> None:
    """PATCH; its answer is when the change is committed, which delivery is timed from."""
    sent = time.monotonic()
    await api.call("PATCH", path, json=patch, content_type="application/merge-patch+json")
    committed = time.monotonic()
    state.patch.append(committed - sent)
    state.sent[seq] = committed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
