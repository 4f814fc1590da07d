"""``svcreg run``: assemble a process from the packages.

Operator mode: Kopf's watch feeds the prober (write path) and the discovery index (read path),
and the HTTP server answers from the index. Discovery-only mode: the informer feeds the index;
nothing probes or writes. This is the one module that knows both the operator and discovery.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import kopf
from aiohttp import web

from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.index import Index
from svcreg.discovery.informer import Informer
from svcreg.kube.api import KubeApi
from svcreg.operator import handlers  # noqa: F401 - registers the handlers
from svcreg.operator.partition import GuardSettings, PartitionGuard
from svcreg.operator.prober import Prober
from svcreg.operator.probes.policy import ProbePolicy
from svcreg.operator.probes.runner import ProbeRunner
from svcreg.operator.probes.ttl import HeartbeatStore
from svcreg.settings import Settings
from svcreg.telemetry.loopwatch import StallReporter, watch_gc, watch_lag
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger("svcreg")


async def _freeze_after_sync(index: Index) -> None:
    """Once the first listing has landed, move the start-up state (it lives as long as the
    process) out of the collector's view, so full collections stop walking it; young
    collections keep Python's defaults (docs/performance.md)."""
    await index.wait_synced()
    gc.collect()
    gc.freeze()
    logger.info("start-up state loaded; %d objects frozen out of garbage collection", gc.get_freeze_count())


async def run(settings: Settings) -> None:
    metrics = Metrics()
    api = KubeApi()
    index = Index()
    metrics.index_size.set_function(lambda: len(index.items))
    heartbeats = HeartbeatStore()
    discovery = Discovery(
        index=index,
        auth=Authorizer(api, settings.token_audience, metrics=metrics),
        metrics=metrics,
        heartbeats=None if settings.discovery_only else heartbeats,
        cors_origins=settings.cors_origin,
        max_wait=settings.max_wait,
        operator_url=settings.operator_url if settings.discovery_only else None,
        api=None if settings.discovery_only else api,
    )
    guard = PartitionGuard(
        GuardSettings(settings.partition_window, settings.partition_min_targets, settings.partition_ratio)
    )
    prober = Prober(
        api,
        ProbeRunner(ProbePolicy(settings.probe_allow), heartbeats),
        metrics=metrics,
        guard=guard,
        concurrency=settings.probe_concurrency,
    )
    started = asyncio.Event()

    def ready() -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {
            "indexSynced": index.synced,
            "registrations": len(index.items),
            "index": index.index,
        }
        if settings.discovery_only:
            return index.synced, {"mode": "discovery-only", **details}
        failed, total = guard.counts
        details |= {
            "mode": "operator",
            "operator": "running" if started.is_set() else "starting",
            "partitionSuspected": guard.suspected,
            "connectionFailures": {"failed": failed, "targets": total},
        }
        # A suspected partition is reported, never a reason to leave the Service: it is the
        # prober's signal, and discovery still answers (issue: the guard must not be a weapon).
        return index.synced and started.is_set(), details

    web_runner = web.AppRunner(
        build_app(metrics, ready, discovery, registration_api=settings.registration_api), access_log=None
    )
    await web_runner.setup()
    site = web.TCPSite(web_runner, host=settings.host, port=settings.port)
    await site.start()
    logger.info(
        "svcreg %s listening on %s:%d; probe policy opens %s",
        "discovery" if settings.discovery_only else "operator and discovery",
        settings.host,
        settings.port,
        list(settings.probe_allow) or "nothing",
    )
    watcher = Informer(api, index, settings.namespaces)
    informer = asyncio.create_task(
        watcher.run() if settings.discovery_only else watcher.confirm_listed(), name="svcreg-informer"
    )
    freezer = asyncio.create_task(_freeze_after_sync(index), name="svcreg-gc-freeze")
    lag = asyncio.create_task(watch_lag(metrics.loop_lag), name="svcreg-loop-lag")
    unwatch_gc = watch_gc(metrics.gc_pause)
    stalls = None
    if settings.report_stalls:
        stalls = StallReporter(asyncio.get_running_loop(), settings.report_stalls)
        stalls.start()
    try:
        if settings.discovery_only:
            await informer
        else:
            await kopf.operator(
                clusterwide=settings.clusterwide,
                namespaces=settings.namespaces,
                standalone=settings.standalone,
                memo=kopf.Memo(
                    prober=prober,
                    registration_observers=(prober.observe, index.observe),
                    scan_namespaces=settings.namespace_globs,
                ),
                ready_flag=started,
            )
    finally:
        if stalls is not None:
            stalls.stop()
        unwatch_gc()
        for task in (informer, freezer, lag):
            task.cancel()
        await asyncio.gather(informer, freezer, lag, return_exceptions=True)
        await web_runner.cleanup()
        await api.close()
