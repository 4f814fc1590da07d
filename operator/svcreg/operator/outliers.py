"""Passive health: outlier detection from what real callers report, in the manner of Envoy's.

Callers report the outcome of real calls (``POST /v1/report/{ns}/{name}``). An instance is
ejected when callers of at least ``callers`` distinct tenants reported a failure within
``window`` seconds: one caller, however loud, can never eject anything (its own network or bug
is not the instance's fault). A tenant is a ServiceAccount's namespace (any other user stands
for itself), so one tenant's several ServiceAccounts count once and cannot eject another
tenant's instance on their own. An ejection lasts ``base`` seconds, doubled for each repeated ejection up to
``limit``; a success from a caller withdraws that caller's failure. The share of a service that
may be ejected at once is capped by the prober (it knows the services), so a fault on the
callers' side cannot empty a service.

Pure bookkeeping over a clock; bounded: at most ``MAX_CALLERS`` identities per instance, and the
prober forgets an instance when its registration goes.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from svcreg.core.keys import Key

MAX_CALLERS = 64


@dataclass(frozen=True)
class OutlierSettings:
    callers: int = 3  # distinct tenants (ServiceAccount namespaces) reporting failures
    window: float = 60.0  # seconds within which their failures count
    base: float = 30.0  # first ejection, seconds (Envoy's base_ejection_time)
    limit: float = 300.0  # longest ejection
    max_ejected_share: float = 0.5  # of a service's instances at once (Envoy's max_ejection_percent)


class OutlierDetector:
    def __init__(
        self, settings: OutlierSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or OutlierSettings()
        self._clock = clock
        self._failures: dict[Key, collections.OrderedDict[str, float]] = {}
        self._until: dict[Key, float] = {}
        self._ejections: dict[Key, int] = {}

    def report(self, key: Key, caller: str, failed: bool) -> bool:
        """Take one report; True when ``key`` now meets the bar for ejection (the caller ejects
        it with ``eject`` if the service's cap allows)."""
        now = self._clock()
        failures = self._failures.setdefault(key, collections.OrderedDict())
        failures.pop(caller, None)
        if failed:
            failures[caller] = now  # most recent last
            while len(failures) > MAX_CALLERS:
                failures.popitem(last=False)
        horizon = now - self.settings.window
        while failures and next(iter(failures.values())) < horizon:
            failures.popitem(last=False)
        if not failures:
            self._failures.pop(key, None)
        return failed and not self.ejected(key) and len(failures) >= self.settings.callers

    def failing_callers(self, key: Key) -> int:
        horizon = self._clock() - self.settings.window
        return sum(1 for at in self._failures.get(key, {}).values() if at >= horizon)

    def eject(self, key: Key) -> float:
        """Eject ``key``; returns for how many seconds."""
        count = self._ejections.get(key, 0) + 1
        self._ejections[key] = count
        seconds = self.duration(count)
        self._until[key] = self._clock() + seconds
        self._failures.pop(key, None)  # the next ejection needs fresh evidence
        return seconds

    def duration(self, count: int) -> float:
        """How long the ``count``-th ejection of one instance lasts."""
        return float(min(self.settings.base * math.pow(2.0, count - 1), self.settings.limit))

    def ejected(self, key: Key) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        return True

    def remaining(self, key: Key) -> float:
        until = self._until.get(key)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def ejection_count(self, key: Key) -> int:
        return self._ejections.get(key, 0)

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)
        self._until.pop(key, None)
        self._ejections.pop(key, None)
