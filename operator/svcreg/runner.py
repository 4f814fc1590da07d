"""``svcreg run``: the operator (Kopf + prober) and the HTTP endpoint in one process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from aiohttp import web

from svcreg import kopf_handlers  # noqa: F401 - registers the handlers
from svcreg.api.app import build_app
from svcreg.kubeapi import KubeApi
from svcreg.metrics import Metrics
from svcreg.partition import GuardSettings, PartitionGuard
from svcreg.prober import Prober
from svcreg.probes.policy import ProbePolicy
from svcreg.probes.runner import ProbeRunner
from svcreg.probes.ttl import HeartbeatStore
from svcreg.settings import Settings

logger = logging.getLogger("svcreg")


async def run(settings: Settings) -> None:
    metrics = Metrics()
    api = KubeApi()
    guard = PartitionGuard(
        GuardSettings(settings.partition_window, settings.partition_min_targets, settings.partition_ratio)
    )
    prober = Prober(
        api,
        ProbeRunner(ProbePolicy(settings.probe_allow), HeartbeatStore()),
        metrics=metrics,
        guard=guard,
        concurrency=settings.probe_concurrency,
    )
    started = asyncio.Event()

    def ready() -> tuple[bool, dict[str, Any]]:
        failed, total = guard.counts
        details = {
            "operator": "running" if started.is_set() else "starting",
            "registrations": len(prober.tracked),
            "partitionSuspected": guard.suspected,
            "connectionFailures": {"failed": failed, "targets": total},
        }
        return started.is_set() and not guard.suspected, details

    web_runner = web.AppRunner(build_app(metrics, ready), access_log=None)
    await web_runner.setup()
    site = web.TCPSite(web_runner, host="0.0.0.0", port=settings.port)  # served to the cluster
    await site.start()
    logger.info(
        "svcreg listening on :%d; probe policy opens %s",
        settings.port,
        list(settings.probe_allow) or "nothing",
    )
    try:
        await kopf.operator(
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            standalone=settings.standalone,
            memo=kopf.Memo(prober=prober),
            ready_flag=started,
        )
    finally:
        await web_runner.cleanup()
        await api.close()
