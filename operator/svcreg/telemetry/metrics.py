"""Prometheus metrics, all prefixed ``svcreg_``.

A dedicated registry (not the process-global default) so tests and benchmarks can run several
components in one process without duplicate-metric errors.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class LoopCounter(Collector):
    """A labelled counter kept in a plain dict, for the request path.

    Contract: only ever touched from the event loop's thread (handlers and the /metrics
    scrape), which is why it needs no lock (docs/performance.md).
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


class LoopHistogram(Collector):
    """A labelled histogram kept in plain lists, for the request path (see LoopCounter)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(sorted(buckets))
        # labels -> [count per bucket (the last is +Inf)..., sum]
        self.values: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        cells = self.values.get(labels)
        if cells is None:
            cells = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        cells[bisect.bisect_left(self.bounds, value)] += 1
        cells[-1] += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cells in sorted(self.values.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), cells[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            family.add_metric(list(labels), buckets, cells[-1])
        yield family


_CODES = {code: str(code) for code in range(100, 600)}


def _tasks_alive() -> float:
    """Tasks on the running loop (metrics are rendered on it); 0 when read from elsewhere."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.probe_duration = Histogram(
            "svcreg_probe_duration_seconds",
            "Probe duration by kind and result.",
            ["kind", "result"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.probes = Counter(
            "svcreg_probes_total", "Probes run, by kind and result.", ["kind", "result"], registry=r
        )
        self.registrations = Gauge("svcreg_registrations", "Registrations by health.", ["health"], registry=r)
        self.scheduler_lag = Histogram(
            "svcreg_scheduler_lag_seconds",
            "How late probe jobs start versus their due time.",
            registry=r,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                0.75,
                1,
                2.5,
                5,
                10,
                30,
            ),
        )
        self.status_writes = Counter(
            "svcreg_status_writes_total", "Status patches sent, by result.", ["result"], registry=r
        )
        self.events = Counter(
            "svcreg_events_total", "Kubernetes Events posted, by type.", ["type"], registry=r
        )
        self.events_dropped = Counter(
            "svcreg_events_dropped_total",
            "Kubernetes Events not posted because the queue of Events waiting was full (a burst of "
            "transitions: status writes go first).",
            registry=r,
        )
        self.partition_suspected = Gauge(
            "svcreg_partition_suspected",
            "1 while the prober suspects its own network and holds health.",
            registry=r,
        )
        self.prober_share = Gauge(
            "svcreg_prober_share",
            "Registrations this process probes now: its share of the prober group (all of them "
            "when standalone).",
            registry=r,
        )
        self.prober_members = Gauge(
            "svcreg_prober_members",
            "Live members of the prober group, as this process sees them.",
            registry=r,
        )
        self.reports = Counter(
            "svcreg_reports_total",
            "Callers' reports of real calls (POST /v1/report), by outcome.",
            ["outcome"],
            registry=r,
        )
        self.ejections = Counter(
            "svcreg_ejections_total",
            "Outlier ejections on callers' reports: ejected, or refused by the per-service cap.",
            ["result"],
            registry=r,
        )
        self.flap_suppressions = Counter(
            "svcreg_flap_suppressions_total",
            "Registrations held out of rotation by flap damping (condition Flapping turned True).",
            registry=r,
        )
        self.contract_checks = Counter(
            "svcreg_contract_checks_total",
            "Capability contract checks (verified contracts), by result: passed or failed.",
            ["result"],
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "svcreg_shadow_disagreements_total",
            "Probe rounds in which a ServicePolicy's shadow health check decided otherwise than the "
            "real one: would_pull (the real check serves it) or would_admit (the real check does not).",
            ["direction"],
            registry=r,
        )
        self.shadow_disagreeing = Gauge(
            "svcreg_shadow_disagreeing",
            "Registrations on which the shadow health check disagrees with the real one now.",
            registry=r,
        )
        self.budget_holds = Counter(
            "svcreg_budget_holds_total",
            "Unhealthy transitions past a service's health disruption budget, by outcome: held "
            "(waiting for confirmation), confirmed, refuted (the re-probe or another member saw "
            "it pass) or expired (written after maxHoldSeconds).",
            ["outcome"],
            registry=r,
        )
        self.held_transitions = Counter(
            "svcreg_held_transitions_total",
            "Failures not applied because a partition was suspected.",
            registry=r,
        )
        self.partition_hold_expired = Counter(
            "svcreg_partition_hold_expired_total",
            "Suspected partitions that outlasted --partition-hold-seconds, after which failures are written.",
            registry=r,
        )
        self.http_requests = LoopCounter(
            "svcreg_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_latency = LoopHistogram(
            "svcreg_http_request_duration_seconds",
            "HTTP request latency by route (long polls included).",
            ["route"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
        )
        self.front_answers = LoopCounter(
            "svcreg_front_answers",
            "Discovery lookups the front answered on the connection, from memory (also counted in "
            "svcreg_http_requests_total).",
            [],
            registry=r,
        )
        self.front_handovers = LoopCounter(
            "svcreg_front_handovers",
            "Connections the front handed to aiohttp at a request it does not answer itself.",
            [],
            registry=r,
        )
        self.auth_cache = LoopCounter(
            "svcreg_auth_cache_lookups",
            "TokenReview/SubjectAccessReview cache lookups.",
            ["cache", "result"],
            registry=r,
        )
        self.index_size = Gauge(
            "svcreg_index_registrations", "Registrations in the discovery index.", registry=r
        )
        self.index_stale = Gauge(
            "svcreg_index_stale_seconds",
            "Seconds since the watch feeding the discovery index went down (0 while it is up).",
            registry=r,
        )
        self.asyncio_tasks = Gauge(
            "svcreg_asyncio_tasks",
            "Tasks alive on the event loop: flat in a steady state; growth is a leak.",
            registry=r,
        )
        self.asyncio_tasks.set_function(_tasks_alive)
        self.heartbeats = LoopCounter(
            "svcreg_heartbeats",
            "Heartbeats received, by result (accepted or refused).",
            ["result"],
            registry=r,
        )
        self.watchers = Gauge("svcreg_watch_streams", "Open /v1/watch streams.", registry=r)
        self.watch_delivery = Histogram(
            "svcreg_watch_delivery_seconds",
            "From a change entering the discovery index to its event being written to a watch "
            "stream (svcreg's own share of delivery; the API server's watch comes before it).",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.long_polls = Gauge("svcreg_long_polls", "Long polls waiting.", registry=r)
        pause_buckets = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
        self.loop_lag = Histogram(
            "svcreg_event_loop_lag_seconds",
            "How much later than asked a 0.25 s timer on the event loop fires (sampled stalls).",
            registry=r,
            buckets=pause_buckets,
        )
        self.gc_pause = Histogram(
            "svcreg_gc_pause_seconds",
            "Duration of each garbage collection (the event loop stops meanwhile), by generation.",
            ["generation"],
            registry=r,
            buckets=pause_buckets,
        )
        self._probe_children: dict[tuple[str, bool, str], tuple[Any, Any]] = {}
        self.deregistrations = Counter(
            "svcreg_deregistrations_total", "Registrations deleted by deregisterAfterSeconds.", registry=r
        )

    def observe_probe(self, kind: str, passed: bool, reason: str, latency: float) -> None:
        """Count one probe; label children are looked up once per combination (hot path)."""
        key = (kind, passed, reason)
        children = self._probe_children.get(key)
        if children is None:
            result = "pass" if passed else str(reason)
            outcome = "pass" if passed else "fail"
            children = (self.probes.labels(kind, result), self.probe_duration.labels(kind, outcome))
            self._probe_children[key] = children
        children[0].inc()
        children[1].observe(latency)

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        """Count one HTTP answer (on the event loop's thread, like every LoopCounter)."""
        self.http_requests.inc((route, method, _CODES.get(code) or str(code)))
        self.http_latency.observe((route,), seconds)
