"""Which instance to call next, and when: one plan that drives both the sync and async loops.

``request`` calls an instance chosen by weight; a connection error, a timeout or a 5xx moves on
to the next instance in weighted order after an exponential backoff with full jitter, and any
other answer (4xx included) ends the plan. The loops only do the I/O and the sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from svcreg.core.keys import Key
from svcreg.core.wire import Registration

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` calls; the wait before attempt n+1 is uniform in
    ``[0, min(max_delay, base_delay * 2**n))``."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def weighted_order(items: Sequence[Registration], rng: random.Random | None = None) -> list[Registration]:
    """Instances in a random order where heavier ones tend to come first (weight 0 excluded):
    the first is the weighted pick, the rest are the failover order."""
    rng = rng or random.Random()
    # Efraimidis-Spirakis: sort by u ** (1 / w), a weighted sample without replacement.
    keyed = [(rng.random() ** (1.0 / i.weight), i) for i in items if i.weight > 0]
    return [i for _, i in sorted(keyed, key=lambda pair: pair[0], reverse=True)]


def candidate_urls(items: Sequence[Registration], rng: random.Random | None = None) -> list[str]:
    """Every URL to try, in order: registrations by weight, and within a serviceRef
    registration its served addresses shuffled, so load spreads across a Service's pods."""
    rng = rng or random.Random()
    urls: list[str] = []
    for item in weighted_order(items, rng):
        addresses = item.urls()
        if not item.endpoint:
            rng.shuffle(addresses)
        urls.extend(addresses)
    return urls


@dataclass
class Attempts:
    """The state of one ``request``: call ``next_url``, make the call, report it with
    ``failed`` (True: try again) until ``next_url`` returns None."""

    target: str
    urls: list[str]
    policy: RetryPolicy
    made: int = 0
    last: httpx.Response | None = None
    error: Exception | None = field(default=None)

    def next_url(self) -> tuple[str, float] | None:
        """The URL for the next attempt and the seconds to wait before it; None when spent."""
        if not self.urls or self.made >= self.policy.attempts:
            return None
        url = self.urls[self.made % len(self.urls)]
        delay = self.policy.delay(self.made - 1) if self.made else 0.0
        self.made += 1
        return url, delay

    def failed(self, response: httpx.Response | None, error: Exception | None = None) -> bool:
        """Record an attempt's result; whether it calls for another attempt."""
        self.last, self.error = response, error
        return response is None or response.status_code in RETRYABLE_STATUS


def join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/") if path else base


def owners(items: Sequence[Registration]) -> dict[str, Key]:
    """Which registration (namespace, name) each candidate URL belongs to."""
    return {url: (item.namespace, item.name) for item in items for url in item.urls()}


def outcome_of(response: httpx.Response | None, error: Exception | None) -> str:
    """A call's outcome as ``POST /v1/report`` names it."""
    if response is None:
        return "timeout" if isinstance(error, httpx.TimeoutException) else "connection-error"
    return "5xx" if response.status_code >= 500 else "success"


@dataclass
class Reporter:
    """Which outcomes of real calls a client reports (passive health): every failure, and a
    success only to an instance it reported failing (to withdraw its evidence), so a healthy
    fleet costs no reports. A 403 (no RBAC verb ``report``) turns reporting off for the client;
    ``enabled=False`` never reports."""

    enabled: bool = True
    failing: set[Key] = field(default_factory=set)
    limit: int = 1000  # instances remembered as failing

    def wants(self, key: Key, outcome: str) -> bool:
        if not self.enabled:
            return False
        if outcome != "success":
            if len(self.failing) < self.limit:
                self.failing.add(key)
            return True
        if key in self.failing:
            self.failing.discard(key)
            return True
        return False

    def refused(self, status: int) -> None:
        if status in (401, 403):
            self.enabled = False
