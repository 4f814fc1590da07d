"""The partition guard: when most targets fail to connect at once, suspect the prober.

Eureka's answer to a partition is to keep everything UP silently; Nacos once emptied its lists
after a restart. svcreg does neither: when, within ``window`` seconds, at least ``min_targets``
distinct targets were probed and at least ``ratio`` of them failed at the connection level, the
prober holds last-known health and says so (metric, log, readiness) until the failures stop
being global.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Hashable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardSettings:
    window: float = 30.0
    min_targets: int = 10
    ratio: float = 0.8


class PartitionGuard:
    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.suspected = False
        self._latest: dict[Hashable, tuple[float, bool]] = {}
        self._order: collections.deque[tuple[float, Hashable]] = collections.deque()
        self._failed = 0

    def record(self, target: Hashable, connection_failed: bool, now: float) -> None:
        previous = self._latest.get(target)
        if previous is not None and previous[1]:
            self._failed -= 1
        self._latest[target] = (now, connection_failed)
        self._failed += connection_failed
        self._order.append((now, target))

    def _prune(self, now: float) -> None:
        horizon = now - self.settings.window
        while self._order and self._order[0][0] < horizon:
            at, target = self._order.popleft()
            latest = self._latest.get(target)
            if latest is not None and latest[0] == at:
                del self._latest[target]
                self._failed -= latest[1]

    def evaluate(self, now: float) -> bool:
        """Update and return whether a partition is suspected; log each change."""
        self._prune(now)
        total = len(self._latest)
        suspected = total >= self.settings.min_targets and self._failed >= self.settings.ratio * total
        if suspected != self.suspected:
            if suspected:
                logger.warning(
                    "partition suspected: %d of %d targets failed to connect in %.0fs; "
                    "holding last-known health until failures stop being global",
                    self._failed,
                    total,
                    self.settings.window,
                )
            else:
                logger.warning(
                    "partition cleared: %d of %d targets failing; transitions resume", self._failed, total
                )
            self.suspected = suspected
        return suspected

    @property
    def counts(self) -> tuple[int, int]:
        return self._failed, len(self._latest)
