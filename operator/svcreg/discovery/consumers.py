"""Who consumes what: which authenticated identities asked for which services and capabilities.

Before retiring ``text-analysis`` 1.x, a team sees who still asks for it. Kept in memory per
process (a replica answers for its own traffic). Each use is kept with its scope: the
namespaces the query could reach (the caller's readable namespaces, or the one it named; None
for a cluster-wide reader), and ``consumers`` reports only the uses whose scope reaches the
namespaces the asker owns the name in, so a service name shared by two tenants never tells one
who asked the other. Bounded three ways: at most ``max_entries`` uses, the least recently seen
dropped first; at most ``per_identity`` for one identity (its own oldest go first, so no caller
can evict the others'); nothing older than ``window`` seconds is reported or kept. Recording is
a few dictionary updates on the request path.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

Target = tuple[str, str]  # ("service" | "capability", name)
Scope = frozenset[str] | None  # the namespaces a query could reach; None: every one
_Key = tuple[str, Target, Scope]


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
        per_identity: int = 64,
    ) -> None:
        self.window, self.max_entries, self.per_identity = window, max_entries, per_identity
        self._clock = clock
        self._uses: collections.OrderedDict[_Key, Use] = collections.OrderedDict()
        self._mine: dict[str, collections.OrderedDict[_Key, None]] = {}  # each identity's keys, oldest first

    def __len__(self) -> int:
        return len(self._uses)

    def record(self, identity: str, target: Target, scope: Scope = None) -> None:
        now = self._clock()
        key = (identity, target, scope)
        use = self._uses.pop(key, None)
        mine = self._mine.setdefault(identity, collections.OrderedDict())
        mine.pop(key, None)
        if use is None or now - use.last_seen > self.window:
            use = Use(0, now, now)
        use.requests += 1
        use.last_seen = now
        while len(mine) >= self.per_identity:
            self._forget(next(iter(mine)))
        self._uses[key] = use  # most recently seen last
        mine[key] = None
        while len(self._uses) > self.max_entries:
            self._forget(next(iter(self._uses)))

    def _forget(self, key: _Key) -> None:
        self._uses.pop(key, None)
        mine = self._mine.get(key[0])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._mine[key[0]]

    def consumers(self, target: Target, reach: frozenset[str] | None = None) -> list[tuple[str, Use]]:
        """Identities that asked for ``target`` within the window in a query that could reach
        a namespace of ``reach`` (None: any), most requests first."""
        horizon = self._clock() - self.window
        while self._uses:  # the oldest first: drop what fell out of the window
            oldest_key, oldest = next(iter(self._uses.items()))
            if oldest.last_seen >= horizon:
                break
            self._forget(oldest_key)
        found: dict[str, Use] = {}
        for (identity, t, scope), use in self._uses.items():
            if t != target or not (reach is None or scope is None or scope & reach):
                continue
            seen = found.get(identity)
            found[identity] = (
                Use(use.requests, use.first_seen, use.last_seen)
                if seen is None
                else Use(
                    seen.requests + use.requests,
                    min(seen.first_seen, use.first_seen),
                    max(seen.last_seen, use.last_seen),
                )
            )
        return sorted(found.items(), key=lambda pair: (-pair[1].requests, pair[0]))


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
