"""ttl checks: the instance reports its own health with heartbeats.

Heartbeats live in memory only (one API write per heartbeat would not scale), so after a
restart every ttl registration gets one ttl of grace before it can expire.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from svcreg.probes.base import Outcome, Reason, Target

HeartbeatStatus = Literal["passing", "warning", "critical"]


@dataclass(frozen=True)
class Heartbeat:
    at: float
    status: HeartbeatStatus
    note: str


class HeartbeatStore:
    """Last heartbeat per registration, fed by the discovery endpoint's heartbeat route."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = self._clock()
        self._beats: dict[tuple[str, str], Heartbeat] = {}

    def record(self, key: tuple[str, str], status: HeartbeatStatus = "passing", note: str = "") -> None:
        self._beats[key] = Heartbeat(self._clock(), status, note[:512])

    def forget(self, key: tuple[str, str]) -> None:
        self._beats.pop(key, None)

    def last(self, key: tuple[str, str]) -> Heartbeat | None:
        return self._beats.get(key)

    def evaluate(self, target: Target) -> Outcome | None:
        """The ttl outcome now, or None during the start-up grace with no heartbeat yet."""
        beat = self._beats.get(target.heartbeat_key)
        now = self._clock()
        if beat is None:
            if now - self.started < target.ttl_seconds:
                return None
            return Outcome.fail(Reason.HEARTBEAT_EXPIRED, f"no heartbeat within {target.ttl_seconds:g}s")
        age = now - beat.at
        if age > target.ttl_seconds:
            # The message stays the same while expired, so status is not rewritten every round.
            return Outcome.fail(Reason.HEARTBEAT_EXPIRED, f"no heartbeat within {target.ttl_seconds:g}s")
        note = f": {beat.note}" if beat.note else ""
        if beat.status == "critical":
            return Outcome.fail(Reason.HEARTBEAT_CRITICAL, f"instance reports critical{note}")
        if beat.status == "warning":
            return Outcome(True, Reason.HEARTBEAT_WARNING, f"instance reports warning{note}", degraded=True)
        return Outcome(True, Reason.HEARTBEAT_PASSING, "heartbeats arriving")
