"""Who consumes what: which authenticated identities asked for which services and capabilities.

Before retiring ``text-analysis`` 1.x, a team sees who still asks for it. Kept in memory per
process (a replica answers for its own traffic), bounded two ways: at most ``max_entries``
(identity, target) pairs, the least recently seen dropped first, and nothing older than
``window`` seconds is reported or kept. Recording is one dictionary update on the request path.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

Target = tuple[str, str]  # ("service" | "capability", name)


@dataclass
class Use:
    requests: int
    first_seen: float  # wall-clock seconds
    last_seen: float


class ConsumerLog:
    def __init__(
        self,
        window: float = 24 * 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window, self.max_entries = window, max_entries
        self._clock = clock
        self._uses: collections.OrderedDict[tuple[str, Target], Use] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._uses)

    def record(self, identity: str, target: Target) -> None:
        now = self._clock()
        key = (identity, target)
        use = self._uses.pop(key, None)
        if use is None or now - use.last_seen > self.window:
            use = Use(0, now, now)
        use.requests += 1
        use.last_seen = now
        self._uses[key] = use  # most recently seen last
        while len(self._uses) > self.max_entries:
            self._uses.popitem(last=False)

    def consumers(self, target: Target) -> list[tuple[str, Use]]:
        """Identities that asked for ``target`` within the window, most requests first."""
        horizon = self._clock() - self.window
        while self._uses:  # the oldest first: drop what fell out of the window
            oldest = next(iter(self._uses.values()))
            if oldest.last_seen >= horizon:
                break
            self._uses.popitem(last=False)
        found = [(identity, use) for (identity, t), use in self._uses.items() if t == target]
        return sorted(found, key=lambda pair: (-pair[1].requests, pair[0]))


def merge(parts: list[list[dict[str, object]]]) -> list[dict[str, object]]:
    """Consumers as several processes saw them, as one list: requests summed, the earliest
    ``firstSeen`` and the latest ``lastSeen`` kept (RFC 3339 in UTC, so they order as text),
    most requests first. Entries are the wire shape of ``GET /v1/consumers``."""
    merged: dict[str, dict[str, object]] = {}
    for part in parts:
        for entry in part:
            identity = str(entry["identity"])
            seen = merged.get(identity)
            if seen is None:
                merged[identity] = dict(entry)
                continue
            seen["requests"] = int(str(seen["requests"])) + int(str(entry["requests"]))
            seen["firstSeen"] = min(str(seen["firstSeen"]), str(entry["firstSeen"]))
            seen["lastSeen"] = max(str(seen["lastSeen"]), str(entry["lastSeen"]))
    return sorted(merged.values(), key=lambda e: (-int(str(e["requests"])), str(e["identity"])))
