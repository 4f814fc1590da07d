"""The partition guard: suspect the prober itself, from evidence no tenant can manufacture.

Eureka answers a partition by keeping everything UP silently; Nacos once emptied its lists
after a restart. svcreg holds last-known health, visibly and for a bounded time.

Contracts:

- Evidence comes only from reference targets the operator controls: by default the API
  server's address (the one svcreg talks to), plus any ``--partition-reference HOST:PORT``
  (cluster DNS, say). A tenant's targets failing, however many and in however many
  namespaces, never count: a tenant cannot produce the evidence, and scaling Services to
  zero cannot trip it. Fleet size does not matter either, so small fleets are covered.
- A partition is suspected when every reference has failed to accept a TCP connection in
  ``failures_to_suspect`` consecutive rounds, and cleared at the first round where one does.
- While suspected, connection-level failures of targets are not applied (``holding``), for at
  most ``hold`` seconds: after that the truth is written (with the usual transition Event) and
  ``svcreg_partition_hold_expired_total`` counts it.
- The guard never touches readiness or heartbeats: discovery keeps serving and ttl
  registrations keep their heartbeats whatever it says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Connect = Callable[[str, int, float], Awaitable[bool]]


@dataclass(frozen=True)
class GuardSettings:
    references: tuple[tuple[str, int], ...] = ()
    check_every: float = 5.0
    timeout: float = 2.0
    failures_to_suspect: int = 2
    hold: float = 120.0


async def tcp_reachable(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class PartitionGuard:
    def __init__(
        self,
        settings: GuardSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
        on_hold_expired: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings or GuardSettings()
        self.clock = clock
        self.suspected = False
        self.since = 0.0
        self._failed_rounds = 0
        self._expired_reported = False
        self._on_change = on_change
        self._on_hold_expired = on_hold_expired

    def record_round(self, reachable: list[bool]) -> bool:
        """Take one round of reference checks; return whether a partition is suspected. With
        no references configured, nothing is ever suspected."""
        if not reachable or any(reachable):
            self._failed_rounds = 0
            self._set(False)
        else:
            self._failed_rounds += 1
            if self._failed_rounds >= self.settings.failures_to_suspect:
                self._set(True)
        return self.suspected

    def _set(self, suspected: bool) -> None:
        if suspected == self.suspected:
            return
        self.suspected = suspected
        if suspected:
            self.since = self.clock()
            self._expired_reported = False
            logger.warning(
                "partition suspected: no reference target (%s) accepts a connection; holding "
                "last-known health for at most %.0fs",
                ", ".join(f"{h}:{p}" for h, p in self.settings.references),
                self.settings.hold,
            )
        else:
            logger.warning("partition cleared: a reference target answers; transitions resume")
        if self._on_change is not None:
            self._on_change(suspected)

    def holding(self) -> bool:
        """Whether a target's connection-level failure should be held now."""
        if not self.suspected:
            return False
        if self.clock() - self.since < self.settings.hold:
            return True
        if not self._expired_reported:
            self._expired_reported = True
            logger.warning(
                "partition suspected for over %.0fs: no longer holding; writing what probes see",
                self.settings.hold,
            )
            if self._on_hold_expired is not None:
                self._on_hold_expired()
        return False

    async def run(self, connect: Connect | None = None) -> None:
        """Check the references every ``check_every`` seconds, until cancelled."""
        if not self.settings.references:
            return
        check = connect or tcp_reachable
        while True:
            results = await asyncio.gather(
                *(check(host, port, self.settings.timeout) for host, port in self.settings.references)
            )
            self.record_round(list(results))
            await asyncio.sleep(self.settings.check_every)
