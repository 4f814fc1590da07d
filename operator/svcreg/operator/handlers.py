"""Kopf adapters: configure Kopf, start and stop the prober, feed watch events to the observers
the process assembled (the prober, and in operator mode the discovery index). Nothing else.

Raw ``on.event`` handlers are used instead of create/update/delete handlers: they add no
finalizer (``kubectl delete`` never waits for the operator), write no per-object progress
annotations, and a re-list after 410 Gone simply re-feeds ``Prober.observe``, which is
idempotent and cheap when nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from svcreg.core import model
from svcreg.operator.endpoints import SERVICE_LABEL


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Should a change handler ever be added, its progress goes to annotations with our prefix,
    # never under status (status belongs to svcreg's conditions).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=model.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=model.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # No runtime scanning of CRDs and namespaces unless namespace globs need it: the CRD is
    # installed before svcreg starts and literal namespaces are known, so Kopf needs no
    # cluster-wide read of either (least privilege: the chart, which takes literal names only,
    # grants none).
    settings.scanning.disabled = not getattr(memo, "scan_namespaces", False)
    # Known Kopf failure: a watch that silently stops delivering. Time-box every watch.
    watch_seconds = int(getattr(memo, "watch_seconds", 290))  # the API server wants an integer
    settings.watching.server_timeout = watch_seconds
    settings.watching.client_timeout = watch_seconds + 10
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # Kopf holds each object's events for batch_window (0.1 s by default) to keep only the
    # freshest. The observers are cheap and idempotent, so that wait only delays discovery.
    settings.batching.batch_window = 0.01
    # Kopf keeps a worker task per object for idle_timeout (5 s by default) after its last
    # event: at start-up that is one task, queue and event per registration, all alive at once,
    # and the heap they leave behind stays. Events per object are seconds apart, so a worker
    # that waits half a second is as good and the burst is a tenth.
    settings.queueing.idle_timeout = 0.5
    memo.prober_task = asyncio.create_task(memo.prober.run(), name="svcreg-prober")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "prober_task", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# Async on purpose: Kopf runs sync handlers in a thread pool, a thread hop per event for work
# that takes microseconds.
@kopf.on.event(model.GROUP, model.VERSION, model.PLURAL)
async def registration_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    # One watch per resource per process: Kopf's feeds the prober and the index alike.
    for observe in memo.registration_observers:
        observe(event.get("type"), event["object"])


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_LABEL: kopf.PRESENT})
async def endpoint_slice_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.prober.observe_endpoint_slice(event.get("type"), event["object"])


@kopf.on.event(model.GROUP, model.VERSION, model.POLICY_PLURAL)
async def policy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    for observe in memo.policy_observers:
        observe(event.get("type"), event["object"])
