"""The status writer's Events: posted by their callers up to a bound, then queued (bounded)
behind one background poster, so a burst of transitions never holds status writes back."""

from __future__ import annotations

import asyncio
from typing import Any

from svcreg.operator.reconcile import EventSpec
from svcreg.operator.writer import StatusWriter
from svcreg.telemetry.metrics import Metrics


class SlowEvents:
    """An API whose Event posts wait until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.posted: list[str] = []
        self.waiting = 0

    async def post_event(self, *, name: str, **_: Any) -> None:
        self.waiting += 1
        await self.release.wait()
        self.posted.append(name)


async def test_a_burst_of_events_queues_behind_the_inline_ones_and_drops_past_its_bound() -> None:
    api, metrics = SlowEvents(), Metrics()
    writer = StatusWriter(api, metrics, inline_events=2, queued_events=3)  # type: ignore[arg-type]
    event = EventSpec("Normal", "Healthy", "Unknown -> Healthy")
    inline = [asyncio.create_task(writer.post_event(("a", f"r{i}"), "uid", event)) for i in range(2)]
    await asyncio.sleep(0)  # let both start posting
    assert api.waiting == 2
    # The next callers do not wait for the API: three are queued, the rest dropped and counted.
    async with asyncio.timeout(5):
        for i in range(2, 7):
            await writer.post_event(("a", f"r{i}"), "uid", event)
    assert writer.events_waiting() == 3
    assert metrics.events_dropped._value.get() == 2
    api.release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*inline, writer.events_posted())
    assert sorted(api.posted) == ["r0", "r1", "r2", "r3", "r4"]
    assert [name for name in api.posted if name not in ("r0", "r1")] == ["r2", "r3", "r4"]  # in order
