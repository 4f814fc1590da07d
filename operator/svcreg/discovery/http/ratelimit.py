"""Token buckets per key (a client address, an identity), bounded in number.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; ``take`` spends one
or says how long until one is there. At most ``max_keys`` buckets are kept: the least recently
used goes first, and a forgotten key simply starts full again.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[Hashable, tuple[float, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: Hashable) -> float:
        """Seconds until ``key``'s bucket holds a token (0: it does now); spends nothing."""
        entry = self._buckets.get(key)
        if entry is None:
            return 0.0
        tokens = min(self.burst, entry[0] + (self._clock() - entry[1]) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, key: Hashable) -> float:
        """Spend one token of ``key``'s bucket: 0 when there was one, else the seconds until
        one is there (nothing is spent then)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class Slots:
    """Long-lived answers held open (watches, long polls): at most ``limit`` in all and at most
    ``per_key`` for one key (an identity), so one caller can never hold every slot. The counts
    per key exist only while a key holds a slot."""

    def __init__(self, limit: int, per_key: int) -> None:
        self.limit, self.per_key = limit, max(1, per_key)
        self.held = 0
        self._by_key: collections.Counter[Hashable] = collections.Counter()

    def take(self, key: Hashable) -> bool:
        """Hold one slot for ``key``; False (nothing held) when either bound is reached."""
        if self.held >= self.limit or self._by_key[key] >= self.per_key:
            return False
        self.held += 1
        self._by_key[key] += 1
        return True

    def give(self, key: Hashable) -> None:
        """Give back a slot ``take`` held for ``key``."""
        self.held -= 1
        self._by_key[key] -= 1
        if not self._by_key[key]:
            del self._by_key[key]
