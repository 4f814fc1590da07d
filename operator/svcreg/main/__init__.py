"""``svcreg run``: assemble a process from the packages.

One choice makes the process: operator mode (``operator_mode``: Kopf's watch feeds the prober
and the index) or discovery-only mode (``replica_mode``: informers feed the index; nothing
probes or writes). Everything else is the same in both: the index, discovery built with the
mode's role, the HTTP server (``http_server``), loop and memory watchers. This is the one
package that knows both the operator and discovery.
"""

from __future__ import annotations

import asyncio
import logging

from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.replicas import Replicas
from svcreg.main.http_server import HttpServer
from svcreg.main.mode import Mode, Shared, freeze_after_sync
from svcreg.main.operator_mode import OperatorMode
from svcreg.main.replica_mode import ReplicaMode
from svcreg.settings import Settings
from svcreg.telemetry.loopwatch import StallReporter, watch_gc, watch_lag

logger = logging.getLogger("svcreg")


async def run(settings: Settings) -> None:
    """Run until the mode's main task ends (Kopf stops, or a replica's informer does)."""
    shared = Shared.build(settings)
    mode: Mode = ReplicaMode(shared) if settings.discovery_only else await OperatorMode.build(shared)
    discovery = _discovery(shared, mode)
    server = HttpServer(shared, discovery, mode)
    await server.start()
    await mode.start()
    logger.info(
        "svcreg %s listening on %s; probe policy opens %s",
        mode.description,
        server.url,
        list(settings.probe_allow) or "nothing",
    )
    tasks = [
        asyncio.create_task(job)
        for job in (
            freeze_after_sync(shared.index),
            watch_lag(shared.metrics.loop_lag),
            *server.background(),
            *mode.background(),
        )
    ]
    unwatch_gc = watch_gc(shared.metrics.gc_pause)
    stalls = (
        StallReporter(asyncio.get_running_loop(), settings.report_stalls) if settings.report_stalls else None
    )
    if stalls is not None:
        stalls.start()
    try:
        await mode.main()
    finally:
        if stalls is not None:
            stalls.stop()
        unwatch_gc()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()
        await mode.close()
        await shared.api.close()


def _discovery(shared: Shared, mode: Mode) -> Discovery:
    settings, metrics = shared.settings, shared.metrics
    return Discovery(
        index=shared.index,
        auth=Authorizer(
            shared.api, settings.token_audience, metrics=metrics, positive_ttl=settings.review_cache_seconds
        ),
        metrics=metrics,
        role=mode.role,
        cors_origins=settings.cors_origin,
        max_wait=settings.max_wait,
        max_watchers=settings.max_watchers,
        max_long_polls=settings.max_long_polls,
        max_watchers_per_identity=settings.max_watchers_per_identity or None,
        max_long_polls_per_identity=settings.max_long_polls_per_identity or None,
        rate_limit=settings.rate_limit,
        consumer_window=settings.consumer_window_seconds,
        consumer_replicas=Replicas(settings.consumer_replica, settings.operator_ca_file)
        if settings.consumer_replica
        else None,
        operator_ca_file=settings.operator_ca_file,
        impersonate=not settings.no_impersonate_callers,
    )
