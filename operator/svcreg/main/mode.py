"""What every process shares, and the contract of a mode (operator, or discovery-only replica).

``svcreg.main.run`` builds the shared parts, picks one mode, builds discovery with the mode's
role, serves HTTP, and runs the mode: no step asks which mode it is in except that one choice.
"""

from __future__ import annotations

import gc
import logging
import typing
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from svcreg.discovery.http.roles import Role
from svcreg.discovery.index import Index
from svcreg.discovery.indexmetrics import IndexCollector
from svcreg.kube.api import KubeApi
from svcreg.settings import Settings
from svcreg.telemetry import memory
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger("svcreg")


@dataclass(frozen=True)
class Shared:
    """What every mode has: the settings, metrics, one API client and the discovery index."""

    settings: Settings
    metrics: Metrics
    api: KubeApi
    index: Index

    @classmethod
    def build(cls, settings: Settings) -> Shared:
        metrics = Metrics()
        index = Index()
        metrics.index_size.set_function(lambda: len(index.items))
        metrics.index_stale.set_function(lambda: index.staleness() or 0.0)
        metrics.registry.register(IndexCollector(index, per_service=settings.service_metrics))
        return cls(settings, metrics, KubeApi(deadline=settings.api_timeout_seconds), index)

    def index_details(self) -> dict[str, Any]:
        """What /readyz says of the index in every mode: nothing that describes tenants'
        registrations, since /readyz answers anyone."""
        details: dict[str, Any] = {"indexSynced": self.index.synced}
        stale = self.index.staleness()
        if stale is not None:
            details["stale"] = {"seconds": round(stale), "reason": "the watch of registrations is down"}
        return details


class Mode(typing.Protocol):
    """One way of running: what discovery's role is, when the process is ready and alive, what
    runs beside the HTTP server, and the one task whose end is the process's end."""

    description: str  # for the start-up log line

    @property
    def role(self) -> Role: ...

    async def start(self) -> None: ...

    def ready(self) -> tuple[bool, dict[str, Any]]: ...

    def alive(self) -> tuple[bool, dict[str, Any]]: ...

    def background(self) -> list[Coroutine[Any, Any, None]]: ...

    async def main(self) -> None: ...

    async def close(self) -> None: ...


async def freeze_after_sync(index: Index) -> None:
    """Once the first listing has landed, move the start-up state (it lives as long as the
    process) out of the collector's view, so full collections stop walking it; young
    collections keep Python's defaults (docs/performance/tricks.md)."""
    await index.wait_synced()
    gc.collect()
    gc.freeze()
    logger.info("start-up state loaded; %d objects frozen out of garbage collection", gc.get_freeze_count())
    # The listing's JSON is garbage now: give its pages back, then keep doing so as the first
    # status writes and later churn leave more behind.
    memory.trim()
    await memory.trim_every(60.0)
