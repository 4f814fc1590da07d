from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Hashable

from svcreg.operator.scheduler import Scheduler


class Progress:
    """Jobs call ``bump``; tests wait for a condition to hold, woken by each bump."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def bump(self) -> None:
        self.changed.set()

    async def until(self, condition: Callable[[], bool], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def test_each_key_runs_on_its_own_interval_and_a_hung_job_blocks_nothing() -> None:
    runs: Counter[Hashable] = Counter()
    release = asyncio.Event()
    progress = Progress()

    async def job(key: Hashable) -> None:
        runs[key] += 1
        progress.bump()
        if key == "hung":
            await release.wait()

    scheduler = Scheduler(job, concurrency=4)
    scheduler.schedule("hung", 0.05, soon=True)
    scheduler.schedule("fast", 0.05, soon=True)
    task = asyncio.create_task(scheduler.run())
    try:
        await progress.until(lambda: runs["fast"] >= 5)
        assert runs["hung"] == 1  # a still-running job is not started again on top of itself
    finally:
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_concurrency_is_bounded() -> None:
    running = 0
    peak = 0
    done = 0
    progress = Progress()
    gate = asyncio.Event()

    async def job(key: Hashable) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        progress.bump()
        await gate.wait()  # hold every slot until the bound has been reached
        running -= 1
        done += 1
        progress.bump()

    scheduler = Scheduler(job, concurrency=3, slow_concurrency=0)
    for i in range(20):
        scheduler.schedule(i, 60, soon=True)
    task = asyncio.create_task(scheduler.run())
    try:
        await progress.until(lambda: running == 3)
        gate.set()
        await progress.until(lambda: done >= 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert peak == 3


async def test_hung_jobs_move_to_the_slow_lane_and_healthy_ones_keep_running() -> None:
    """One fast slot, three jobs that never finish: without the slow lane they would hold the
    only slot and nothing else would run."""
    runs: Counter[Hashable] = Counter()
    progress = Progress()
    release = asyncio.Event()

    async def job(key: Hashable) -> None:
        runs[key] += 1
        progress.bump()
        if key != "healthy":
            await release.wait()

    scheduler = Scheduler(job, concurrency=1, slow_concurrency=5, slow_after=0.01)
    for i in range(3):
        scheduler.schedule(f"hung-{i}", 60, soon=True)
    scheduler.schedule("healthy", 0.02, soon=True)
    task = asyncio.create_task(scheduler.run())
    try:
        await progress.until(lambda: runs["healthy"] >= 5 and scheduler.slow_running == 3)
        assert all(runs[f"hung-{i}"] == 1 for i in range(3))
    finally:
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_slow_lane_is_bounded_too() -> None:
    running = 0
    peak = 0
    progress = Progress()
    gate = asyncio.Event()

    async def job(key: Hashable) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        progress.bump()
        try:
            await gate.wait()
        finally:
            running -= 1

    scheduler = Scheduler(job, concurrency=2, slow_concurrency=3, slow_after=0.01)
    for i in range(10):
        scheduler.schedule(i, 60, delay=0)
    task = asyncio.create_task(scheduler.run())
    try:
        # 2 fast slots + 3 in the slow lane; the two jobs holding fast slots stay there.
        await progress.until(lambda: running == 5 and scheduler.slow_running == 3)
        assert scheduler.blocked_since is not None  # every slot is taken: liveness can see it
    finally:
        gate.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert peak == 5


async def test_unscheduled_and_rescheduled_keys_do_not_run_stale_entries() -> None:
    runs: list[Hashable] = []
    progress = Progress()

    async def job(key: Hashable) -> None:
        runs.append(key)
        progress.bump()

    scheduler = Scheduler(job)
    scheduler.schedule("gone", 0.05, soon=True)
    scheduler.unschedule("gone")
    scheduler.schedule("kept", 0.05, soon=True)
    task = asyncio.create_task(scheduler.run())
    try:
        await progress.until(lambda: len(runs) >= 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert set(runs) == {"kept"} and len(scheduler) == 1


def test_first_runs_are_spread_over_one_interval() -> None:
    clock = [0.0]

    async def job(key: Hashable) -> None:
        return None

    async def build() -> list[float]:
        scheduler = Scheduler(job, clock=lambda: clock[0], rng=random.Random(7))
        for i in range(1000):
            scheduler.schedule(i, 10.0)
        return sorted(entry.due for entry in scheduler._heap)

    dues = asyncio.run(build())
    assert dues[0] >= 0 and dues[-1] < 10
    # Roughly uniform: each second of the interval gets about a tenth of the first runs.
    per_second = Counter(int(d) for d in dues)
    assert len(per_second) == 10 and max(per_second.values()) < 150


async def test_a_job_scheduled_once_runs_once_until_scheduled_again() -> None:
    runs: Counter[Hashable] = Counter()
    progress = Progress()

    async def job(key: Hashable) -> None:
        runs[key] += 1
        progress.bump()

    scheduler = Scheduler(job)
    scheduler.schedule("once", 0.05, soon=True, repeat=False)
    scheduler.schedule("cadence", 0.05, soon=True)
    task = asyncio.create_task(scheduler.run())
    try:
        await progress.until(lambda: runs["cadence"] >= 6 and runs["once"] >= 1)
        assert runs["once"] == 1  # five intervals passed: a repeating key would have run again
        assert scheduler.next_due("once") is None and scheduler.next_due("cadence") is not None
        scheduler.schedule("once", 0.05, soon=True, repeat=False)
        await progress.until(lambda: runs["once"] == 2)
        scheduler.schedule("once", 0.05, soon=True)  # back on a cadence
        await progress.until(lambda: runs["once"] >= 4)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_one_shot_job_scheduled_while_it_runs_runs_again_soon_after() -> None:
    """A change that arrives while its registration is being evaluated must not wait a whole
    interval (an hour here) for the next evaluation: nothing else would schedule it."""
    runs: Counter[Hashable] = Counter()
    release = asyncio.Event()
    progress = Progress()
    now = [0.0]

    async def job(key: Hashable) -> None:
        runs[key] += 1
        progress.bump()
        if runs[key] == 1:
            await release.wait()

    scheduler = Scheduler(job, clock=lambda: now[0], rng=random.Random(1))
    scheduler.schedule("once", 3600, soon=True, repeat=False)
    now[0] = 1.0
    await scheduler._dispatch_due()
    await progress.until(lambda: runs["once"] == 1)
    scheduler.schedule("once", 3600, soon=True, repeat=False)  # changed during the run
    now[0] = 2.0
    await scheduler._dispatch_due()  # still running: this slot is put off
    due = scheduler.next_due("once")
    assert due is not None and due <= 3.0
    release.set()
    await asyncio.gather(*scheduler._tasks)  # the first run ends
    now[0] = 3.0
    await scheduler._dispatch_due()
    await progress.until(lambda: runs["once"] == 2)


def test_a_new_or_changed_registration_is_due_at_once_and_a_listed_one_is_spread() -> None:
    """soon=True (created or edited while running) is due now: change propagation waits on it.
    Without soon (the start-up listing) first runs are spread over the interval."""
    now = 1000.0

    async def job(key: Hashable) -> None:
        return None

    scheduler = Scheduler(job, clock=lambda: now, rng=random.Random(7))
    scheduler.schedule("new", 60, soon=True)
    assert scheduler.next_due("new") == now
    spread = []
    for i in range(50):
        scheduler.schedule(f"listed-{i}", 60)
        spread.append(scheduler.next_due(f"listed-{i}"))
    assert all(d is not None and now <= d <= now + 60 for d in spread)
    assert max(d for d in spread if d is not None) - now > 30
