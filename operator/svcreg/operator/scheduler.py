"""One probe scheduler for every registration, instead of one Kopf timer per resource.

A heap of due times drives a single dispatch loop. Each registration keeps its own interval; the
first run lands at a random point in its first interval (jitter), so ten thousand registrations
created at once do not all fire in the same second. A global semaphore bounds how many probe
jobs run at once. Lag (how late a job starts versus its due time) is what tells an operator the
prober is overloaded, so it is measured for every run.

A job still running after ``slow_after`` seconds (a target that accepts and never answers, a
serviceRef fanning out) gives its slot back and moves to a separate, bounded slow lane: a tenth of
the targets hanging until their timeout then costs the others nothing, where holding slots for the
whole timeout would need ``hung x timeout / interval`` of them and delay every healthy probe. When
the slow lane is full a slow job keeps its slot, so at most ``concurrency + slow_concurrency``
jobs ever run at once.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Job = Callable[[Hashable], Awaitable[None]]
COALESCE = 0.005  # seconds: entries due this close together are dispatched in one wake-up
SLOW_AFTER = 0.5  # seconds: a probe answers in milliseconds; one this slow is waiting on a timeout


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Slot:
    demoted: bool = False  # moved to the slow lane: its fast slot was given back


@dataclass(order=True)
class _Entry:
    due: float
    sequence: int
    key: Hashable = field(compare=False)
    version: int = field(compare=False)


class Scheduler:
    def __init__(
        self,
        job: Job,
        *,
        concurrency: int = 200,
        slow_concurrency: int = 1000,
        slow_after: float = SLOW_AFTER,
        clock: Callable[[], float] = time.monotonic,
        on_lag: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._job = job
        self._clock = clock
        self._on_lag = on_lag
        self._rng = rng or random.Random()
        self._semaphore = asyncio.Semaphore(concurrency)
        self.slow_concurrency = slow_concurrency
        self.slow_after = slow_after
        self.slow_running = 0  # jobs in the slow lane now
        self._heap: list[_Entry] = []
        self._intervals: dict[Hashable, float] = {}
        self._once: set[Hashable] = set()  # keys that run when scheduled, not on a cadence
        self._versions: dict[Hashable, int] = {}
        self._running: set[Hashable] = set()
        # When the dispatcher started waiting for a free slot (None: it is not waiting). A wait
        # that lasts is a wedged prober: what liveness reports.
        self.blocked_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sequence = 0
        self._wakeup: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._intervals)

    def schedule(
        self,
        key: Hashable,
        interval: float,
        *,
        soon: bool = False,
        repeat: bool = True,
        delay: float | None = None,
    ) -> None:
        """Add or reschedule ``key``. ``soon`` runs it now (a registration created or changed while
        running: its first verdict is what consumers wait for, and a burst of them is bounded by
        the concurrency limit, not by delaying each); ``delay`` runs it after exactly that many
        seconds (a retry's backoff); otherwise the first run is spread over one interval.
        ``repeat=False`` runs it once: for a job whose outcome cannot change until something
        schedules it again."""
        self._intervals[key] = interval
        if repeat:
            self._once.discard(key)
        else:
            self._once.add(key)
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        if delay is None:
            delay = 0.0 if soon else self._rng.uniform(0, interval)
        self._push(key, self._clock() + delay, version)

    def blocked_for(self) -> float:
        """Seconds the dispatcher has been waiting for a free slot (0 when it is not)."""
        return 0.0 if self.blocked_since is None else self._clock() - self.blocked_since

    def next_due(self, key: Hashable) -> float | None:
        """When ``key`` runs next (clock time), or None when nothing is planned for it. Scans
        the heap: for tests and diagnostics, not the hot path."""
        version = self._versions.get(key)
        live = [e.due for e in self._heap if e.key == key and e.version == version]
        return min(live) if live else None

    def unschedule(self, key: Hashable) -> None:
        self._intervals.pop(key, None)
        self._versions.pop(key, None)
        self._once.discard(key)

    def _push(self, key: Hashable, due: float, version: int) -> None:
        self._sequence += 1
        entry = _Entry(due, self._sequence, key, version)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry and self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def run(self) -> None:
        """Dispatch due jobs until cancelled.

        One future and one timer per wake-up (not a task per wait), and every entry due within
        ``COALESCE`` seconds is dispatched in the same wake-up: at a thousand jobs a second the
        loop wakes a few hundred times, not a thousand.
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._dispatch_due()
                self._wakeup = loop.create_future()
                timer = None
                if self._heap:
                    wake_at = loop.time() + max(0.0, self._heap[0].due - self._clock()) + COALESCE
                    timer = loop.call_at(wake_at, _resolve, self._wakeup)
                try:
                    await self._wakeup
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch_due(self) -> None:
        while self._heap and self._heap[0].due <= self._clock():
            entry = heapq.heappop(self._heap)
            if self._versions.get(entry.key) != entry.version:
                continue  # rescheduled or removed since this entry was pushed
            interval = self._intervals[entry.key]
            once = entry.key in self._once
            if entry.key in self._running:
                # The previous run is still going (a serviceRef fans out): skip this slot
                # rather than pile up. A one-shot job was scheduled because something changed
                # during that run, so it tries again within a second, not an interval.
                self._push(entry.key, entry.due + (min(interval, 1.0) if once else interval), entry.version)
                continue
            if self._semaphore.locked():
                # Every slot is taken by a running job: until one finishes, nothing due runs.
                self.blocked_since = self._clock()
            await self._semaphore.acquire()
            self.blocked_since = None
            now = self._clock()
            lag = max(0.0, now - entry.due)
            if self._on_lag is not None:
                self._on_lag(lag)
            if not once:
                # Keep the cadence; after a long stall, start again from now instead of bursting.
                next_due = entry.due + interval if lag < interval else now + interval
                self._push(entry.key, next_due, entry.version)
            self._running.add(entry.key)
            task = asyncio.create_task(self._run_one(entry.key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _demote(self, slot: _Slot) -> None:
        """A job has run ``slow_after`` seconds: move it to the slow lane if there is room."""
        if self.slow_running < self.slow_concurrency:
            slot.demoted = True
            self.slow_running += 1
            self._semaphore.release()

    async def _run_one(self, key: Hashable) -> None:
        slot = _Slot()
        timer = asyncio.get_running_loop().call_later(self.slow_after, self._demote, slot)
        try:
            await self._job(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("probe job for %s failed", key)
        finally:
            timer.cancel()
            self._running.discard(key)
            if slot.demoted:
                self.slow_running -= 1
            else:
                self._semaphore.release()
