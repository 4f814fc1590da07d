"""ttl checks: the instance reports its own health with heartbeats.

Heartbeats live in memory only (one API write per heartbeat would not scale). A registration
with no heartbeat yet gets one ttl of grace, counted from the latest of its own creation, this
process's start and the moment this process took it over from another member of the prober
group: a new registration is not Expired before its first heartbeat can arrive, and after a
restart or a handoff nothing expires before its instances have had a ttl to beat again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from svcreg.core.keys import Key
from svcreg.core.wire import HeartbeatStatus
from svcreg.operator.probes.base import Context, Outcome, Phase, Reason, Target


@dataclass(frozen=True)
class Heartbeat:
    at: float
    status: HeartbeatStatus
    note: str


class HeartbeatStore:
    """Last heartbeat per registration, fed by the discovery endpoint's heartbeat route. At
    most one entry per registration the prober tracks (``forget`` drops the rest)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._started_wall = self._wall()
        self._beats: dict[Key, Heartbeat] = {}
        self._granted: dict[Key, float] = {}

    def record(self, key: Key, status: HeartbeatStatus = "passing", note: str = "") -> None:
        self._beats[key] = Heartbeat(self._clock(), status, note[:512])

    def forget(self, key: Key) -> None:
        self._beats.pop(key, None)
        self._granted.pop(key, None)

    def grant(self, key: Key) -> None:
        """A fresh grace for ``key`` from now (this process just took it over): heartbeats sent
        to its former owner are not here."""
        self._granted[key] = self._wall()

    def evaluate(self, target: Target) -> Outcome | None:
        """The ttl outcome now, or None within the grace with no heartbeat yet."""
        config = target.ttl
        beat = self._beats.get(config.key)
        if beat is None:
            grace_from = max(self._started_wall, config.created_at or 0.0, self._granted.get(config.key, 0.0))
            if self._wall() - grace_from < config.ttl_seconds:
                return None
            return Outcome.fail(Reason.HEARTBEAT_EXPIRED, f"no heartbeat within {config.ttl_seconds:g}s")
        age = self._clock() - beat.at
        if age > config.ttl_seconds:
            # The message stays the same while expired, so status is not rewritten every round.
            return Outcome.fail(Reason.HEARTBEAT_EXPIRED, f"no heartbeat within {config.ttl_seconds:g}s")
        note = f": {beat.note}" if beat.note else ""
        if beat.status == "critical":
            return Outcome.fail(Reason.HEARTBEAT_CRITICAL, f"instance reports critical{note}")
        if beat.status == "warning":
            return Outcome(True, Reason.HEARTBEAT_WARNING, f"instance reports warning{note}", degraded=True)
        return Outcome(True, Reason.HEARTBEAT_PASSING, "heartbeats arriving")


async def probe(target: Target, context: Context, phase: Phase) -> Outcome | None:
    return context.heartbeats.evaluate(target)
