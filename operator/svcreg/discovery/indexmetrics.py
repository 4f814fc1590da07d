"""Metrics read from the discovery index when /metrics is scraped, so the watch path pays
nothing for them: registration changes by kind, and (opt-in, ``--service-metrics``) the share
of each logical service's instances that discovery serves.

Per-service availability names tenants' namespaces and services in labels on an endpoint that
needs no token, so it is off by default. Its label set is bounded: the first ``MAX_SERVICES``
(namespace, service) pairs in sorted order are kept, and the rest are summed under
``service="_other"``, so a tenant creating thousands of services cannot grow the scrape.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from svcreg.core.health import SERVED
from svcreg.core.keys import Key
from svcreg.discovery.index import Index

KINDS = ("registered", "updated", "health-changed", "deleted")
MAX_SERVICES = 500
OTHER = "_other"
_SERVED = frozenset(h.value for h in SERVED)


class IndexCollector(Collector):
    def __init__(self, index: Index, *, per_service: bool = False, max_services: int = MAX_SERVICES) -> None:
        self.index = index
        self.per_service = per_service
        self.max_services = max_services

    def describe(self) -> list[Metric]:
        return []  # collected only at scrape time, from the index as it then is

    def collect(self) -> Iterator[Metric]:
        changes = CounterMetricFamily(
            "svcreg_registration_changes",
            "Registration changes this process's index has seen, by kind (registered, updated, "
            "health-changed, deleted).",
            labels=["kind"],
        )
        for kind in KINDS:
            changes.add_metric([kind], float(self.index.counts[kind]))
        yield changes
        yield CounterMetricFamily(
            "svcreg_panic_answers",
            "Answers built in panic mode: a ServicePolicy's service had fewer served instances than "
            "its panicThresholdPercent, so every instance not in maintenance was in the answer.",
            value=float(self.index.panic_answers),
        )
        if self.per_service:
            yield self._availability()

    def _availability(self) -> Metric:
        family = GaugeMetricFamily(
            "svcreg_service_availability",
            "Share of a logical service's instances discovery serves (Healthy or Degraded, not in "
            f"maintenance), by namespace and service; past {self.max_services} services the rest are "
            f'summed under service="{OTHER}".',
            labels=["namespace", "service"],
        )
        counts: dict[Key, list[int]] = collections.defaultdict(lambda: [0, 0])
        for item in self.index.items.values():
            entry = counts[(item.namespace, item.service)]
            entry[0] += 1 if item.health in _SERVED and not item.maintenance else 0
            entry[1] += 1
        keys = sorted(counts)
        other = [0, 0]
        for key in keys[self.max_services :]:
            other[0] += counts[key][0]
            other[1] += counts[key][1]
        for namespace, service in keys[: self.max_services]:
            up, total = counts[(namespace, service)]
            family.add_metric([namespace, service], up / total)
        if other[1]:
            family.add_metric(["", OTHER], other[0] / other[1])
        return family
