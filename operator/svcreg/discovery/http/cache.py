"""A bounded cache of computed values with per-entry lifetimes and refresh-ahead, for reviews.

Imports the standard library and ``svcreg.telemetry`` only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)

MISSING: Any = object()  # what ``RefreshAheadCache.peek`` answers when it has no live value
# A review: (answer, seconds to keep it), or (answer, seconds to keep it, seconds after which it
# must never be served, not even stale through an outage: a token's own expiry, say).
Compute = Callable[..., Awaitable[tuple[Any, float] | tuple[Any, float, float]]]
Entry = tuple[float, float, Any, float]  # expires, refresh after, value, stale until


class RefreshAheadCache:
    """Values by key, each kept for the time its computation says, with refresh-ahead.

    Contracts:

    - A hit in the last quarter of an entry's lifetime starts one recomputation in the
      background and still answers from the entry, so a caller that keeps calling never waits
      once its first computation has landed; nothing is served past its own lifetime.
    - Concurrent misses for one key share one computation, which runs in a task of its own: a
      caller that gives up cancels only its own wait.
    - Bounded: at most ``max_entries`` positive and ``max_negative`` negative entries (as
      ``is_negative`` tells them apart), each set evicting its least recently stored first.
      Negative answers (a bad token, a denied review) live apart, so a flood of them can never
      evict a good entry.
    - Stale on outage: when recomputing an expired entry fails with an error ``unavailable``
      accepts (the API server cannot answer), the old value answers for up to ``stale_for``
      seconds past its lifetime (never past a limit its computation gave), and is retried in
      the background at most every ``RETRY_AFTER`` seconds meanwhile. So callers already
      served keep being served through an outage, for a bounded time; a key never computed
      still fails.
    """

    REFRESH_AT = 0.75  # of an entry's lifetime
    RETRY_AFTER = 1.0  # seconds before a failed refresh is tried again

    def __init__(
        self,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
        name: str = "",
        *,
        is_negative: Callable[[Any], bool] = lambda value: False,
        max_entries: int = 50_000,
        max_negative: int = 5_000,
        stale_for: float = 0.0,
        unavailable: Callable[[BaseException], bool] = lambda error: False,
    ) -> None:
        self._clock = clock
        self._is_negative = is_negative
        self._bounds = (max_entries, max_negative)
        self._counter = metrics.auth_cache if metrics is not None else None
        self._hit, self._miss, self._stale = (name, "hit"), (name, "miss"), (name, "stale")
        self._stale_for = stale_for
        self._unavailable = unavailable
        # key -> (expires, refresh after, value, stale until); insertion order is eviction order
        self._values: collections.OrderedDict[Any, Entry] = collections.OrderedDict()
        self._negative: collections.OrderedDict[Any, Entry] = collections.OrderedDict()
        self._inflight: dict[Any, asyncio.Task[Any]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values) + len(self._negative)

    def _entry(self, key: Any) -> Entry | None:
        cached = self._values.get(key)
        return cached if cached is not None else self._negative.get(key)

    def pending(self, key: Any) -> bool:
        """Whether a computation for ``key`` is under way (a caller would share it)."""
        return key in self._inflight

    def fresh_until(self, key: Any) -> float:
        """Until when ``key``'s value may be relied on without looking again: its refresh point
        or its expiry, whichever is first (0 when there is none)."""
        cached = self._entry(key)
        return min(cached[0], cached[1]) if cached is not None else 0.0

    def count_hits(self, hits: int) -> None:
        """Lookups answered from a value derived from this cache (the caller memo)."""
        self.hits += hits
        if self._counter is not None:
            self._counter.inc(self._hit, hits)

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self._counter is not None:
            self._counter.inc(self._hit if hit else self._miss)

    def peek(self, key: Any, compute: Compute, *args: Any) -> Any:
        """The live value for ``key``, or MISSING; synchronous, so the hot path of a caller whose
        reviews are cached never yields to the event loop. ``compute(*args)`` is the review a
        refresh-ahead runs (passed apart so a hit builds no closure)."""
        now = self._clock()
        cached = self._entry(key)
        if cached is None or cached[0] <= now:
            return MISSING
        self._count(True)
        if cached[1] <= now and key not in self._inflight:
            store = self._values if key in self._values else self._negative
            store[key] = (cached[0], now + self.RETRY_AFTER, cached[2], cached[3])
            self._start(key, compute, args)
        return cached[2]

    async def get(self, key: Any, compute: Compute, *args: Any) -> Any:
        value = self.peek(key, compute, *args)
        if value is not MISSING:
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            self._count(True)
        else:
            self._count(False)
            pending = self._start(key, compute, args)
        # Shielded: a caller that gives up (hangs up, times out) cancels its own wait only,
        # never the computation the other callers of this key share.
        return await asyncio.shield(pending)

    def _start(self, key: Any, compute: Compute, args: tuple[Any, ...]) -> asyncio.Task[Any]:
        """Compute ``key`` in a task of its own, shared by every caller until it is done."""
        task = asyncio.get_running_loop().create_task(self._compute(key, compute, args))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: Any, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is not None:  # retrieved: waiters got it
            logger.debug("review failed: %s", task.exception())

    async def _compute(self, key: Any, compute: Compute, args: tuple[Any, ...]) -> Any:
        try:
            value, ttl, *limit = await compute(*args)
        except Exception as error:
            stale = self._stale_value(key, error)
            if stale is MISSING:
                raise
            return stale
        self._store(key, value, ttl, *limit)
        return value

    def _stale_value(self, key: Any, error: BaseException) -> Any:
        """The expired value to answer with while ``error`` says the source is unavailable, kept
        live for ``RETRY_AFTER`` more seconds (never past its stale bound); else MISSING."""
        cached = self._entry(key)
        now = self._clock()
        if cached is None or not self._unavailable(error) or now >= cached[3]:
            return MISSING
        store = self._values if key in self._values else self._negative
        store[key] = (min(now + self.RETRY_AFTER, cached[3]), now, cached[2], cached[3])
        if self._counter is not None:
            self._counter.inc(self._stale)
        logger.debug("answering from a review that expired %.0fs ago: %s", now - cached[0], error)
        return cached[2]

    def _store(self, key: Any, value: Any, ttl: float, limit: float | None = None) -> None:
        negative = self._is_negative(value)
        store, other = (self._negative, self._values) if negative else (self._values, self._negative)
        bound = self._bounds[1] if negative else self._bounds[0]
        other.pop(key, None)
        store.pop(key, None)
        now = self._clock()
        stale_until = now + ttl + self._stale_for
        if limit is not None:
            stale_until = min(stale_until, now + limit)
        store[key] = (now + ttl, now + ttl * self.REFRESH_AT, value, stale_until)
        while len(store) > bound:
            store.popitem(last=False)
