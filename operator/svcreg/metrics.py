"""Prometheus metrics, all prefixed ``svcreg_``.

A dedicated registry (not the process-global default) so tests and benchmarks can run several
components in one process without duplicate-metric errors.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.partition_suspected = Gauge(
            "svcreg_partition_suspected",
            "1 while the prober suspects its own network and holds health.",
            registry=r,
        )
        self.held_transitions = Counter(
            "svcreg_held_transitions_total",
            "Failures not applied because a partition was suspected.",
            registry=r,
        )
        self.http_requests = Counter(
            "svcreg_http_requests_total",
            "HTTP requests by route, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_latency = Histogram(
            "svcreg_http_request_duration_seconds",
            "HTTP request latency by route (long polls included).",
            ["route"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
        )
        self.auth_cache = Counter(
            "svcreg_auth_cache_lookups_total",
            "TokenReview/SubjectAccessReview cache lookups.",
            ["cache", "result"],
            registry=r,
        )
        self.index_size = Gauge(
            "svcreg_index_registrations", "Registrations in the discovery index.", registry=r
        )
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
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
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
        """Count one HTTP answer; children memoised per combination like ``observe_probe``."""
        key = (route, method, code)
        children = self._request_children.get(key)
        if children is None:
            children = (self.http_requests.labels(route, method, str(code)), self.http_latency.labels(route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
