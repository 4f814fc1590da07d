"""``svcreg run``: assemble a process from the packages.

Operator mode: Kopf's watch feeds the prober (write path) and the discovery index (read path),
and the HTTP server answers from the index. Discovery-only mode: the informer feeds the index;
nothing probes or writes. This is the one module that knows both the operator and discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from svcreg.core import model
from svcreg.core.hosts import bracketed
from svcreg.discovery.http.app import build_app, runner
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.front import Front
from svcreg.discovery.http.replicas import Replicas
from svcreg.discovery.http.tls import ServingTls
from svcreg.discovery.index import Index
from svcreg.discovery.indexmetrics import IndexCollector
from svcreg.discovery.informer import Informer, PolicySink
from svcreg.kube import errors
from svcreg.kube.api import KubeApi
from svcreg.operator import (
    admission,
    handlers,  # noqa: F401 - registers the handlers
)
from svcreg.operator.membership import Membership
from svcreg.operator.partition import GuardSettings, PartitionGuard
from svcreg.operator.policies import PolicyState, PolicyStatusWriter
from svcreg.operator.prober import Prober
from svcreg.operator.probes.policy import ProbePolicy
from svcreg.operator.probes.runner import ProbeRunner
from svcreg.operator.probes.trust import TrustStore
from svcreg.operator.probes.ttl import HeartbeatStore
from svcreg.operator.vantage import VantageClient
from svcreg.settings import Settings
from svcreg.telemetry import memory
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
    # The listing's JSON is garbage now: give its pages back, then keep doing so as the first
    # status writes and later churn leave more behind.
    memory.trim()
    await memory.trim_every(60.0)


async def run(settings: Settings) -> None:
    metrics = Metrics()
    api = KubeApi(deadline=settings.api_timeout_seconds)
    index = Index()
    metrics.index_size.set_function(lambda: len(index.items))
    metrics.index_stale.set_function(lambda: index.staleness() or 0.0)
    metrics.registry.register(IndexCollector(index, per_service=settings.service_metrics))
    heartbeats = HeartbeatStore()
    discovery = Discovery(
        index=index,
        auth=Authorizer(
            api, settings.token_audience, metrics=metrics, positive_ttl=settings.review_cache_seconds
        ),
        metrics=metrics,
        heartbeats=None if settings.discovery_only else heartbeats,
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
        operator_url=settings.operator_url if settings.discovery_only else None,
        operator_ca_file=settings.operator_ca_file,
        api=None if settings.discovery_only else api,
        impersonate=not settings.no_impersonate_callers,
    )
    api_server = urlsplit(api.base_url)
    references = settings.partition_references or ((api_server.hostname or "", api_server.port or 443),)
    guard = PartitionGuard(
        GuardSettings(
            references=references,
            check_every=settings.partition_check_seconds,
            hold=settings.partition_hold_seconds,
        ),
        on_change=lambda suspected: metrics.partition_suspected.set(1 if suspected else 0),
        on_hold_expired=metrics.partition_hold_expired.inc,
    )
    membership = vantages = None
    if not settings.standalone and not settings.discovery_only:
        membership = _membership(api, settings)
        discovery.owner_url = membership.owner_url
        discovery.member_server_name = settings.member_server_name
        vantages = VantageClient(membership, api, settings.operator_ca_file, settings.member_server_name)
        discovery.member_username = await _own_username(api)
        discovery.member_auth = Authorizer(api, (), metrics=metrics)
    prober = Prober(
        api,
        ProbeRunner(ProbePolicy(settings.probe_allow), heartbeats, trust=TrustStore(api)),
        metrics=metrics,
        guard=guard,
        concurrency=settings.probe_concurrency,
        slow_concurrency=settings.probe_slow_concurrency,
        owns=membership.owns if membership is not None else (lambda key: True),
        assigned=membership.assigned if membership is not None else None,
        identity=membership.identity if membership is not None else "",
        vantages=vantages,
        policies=index.policy_for,
    )
    metrics.prober_share.set_function(lambda: sum(1 for key in prober.tracked if prober.owns(key)))
    metrics.prober_members.set_function(lambda: len(membership.members()) if membership is not None else 1)
    if membership is not None:
        membership.on_change = prober.membership_changed
    if not settings.discovery_only:
        discovery.last_probes = prober.last_probes
        discovery.vantage = prober.probe_for_member
        discovery.reports = prober
    started = asyncio.Event()

    def ready() -> tuple[bool, dict[str, Any]]:
        # Nothing here describes tenants' registrations: /readyz answers anyone.
        details: dict[str, Any] = {"indexSynced": index.synced}
        stale = index.staleness()
        if stale is not None:
            details["stale"] = {"seconds": round(stale), "reason": "the watch of registrations is down"}
        if settings.discovery_only:
            return index.synced, {"mode": "discovery-only", **details}
        details |= {
            "mode": "operator",
            "operator": "running" if started.is_set() else "starting",
            "partitionSuspected": guard.suspected,
            "prober": _prober_detail(membership),
        }
        # A suspected partition is reported, never a reason to leave the Service: it is the
        # prober's signal, and discovery still answers (issue: the guard must not be a weapon).
        return index.synced and started.is_set(), details

    def alive() -> tuple[bool, dict[str, Any]]:
        if settings.discovery_only:
            return True, {}
        blocked = prober.scheduler.blocked_for()
        if blocked > settings.wedged_after_seconds:
            return False, {"reason": f"every probe slot has been busy for {blocked:.0f}s"}
        return True, {}

    web_runner = runner(
        build_app(
            metrics,
            ready,
            discovery,
            registration_api=settings.registration_api,
            alive=alive,
            access_log=settings.access_log,
        )
    )
    await web_runner.setup()
    tls = None
    if settings.tls_cert_file and settings.tls_key_file:
        tls = ServingTls(settings.tls_cert_file, settings.tls_key_file)
    # Repeated lookups are answered by the front on the connection; everything else, and every
    # connection after its first request the front declines, by aiohttp (discovery/http/front.py).
    assert web_runner.server is not None
    # With --no-fast-lookups (or --access-log) the front answers nothing and hands every
    # connection to aiohttp at once, still counted against --max-connections.
    front = Front(
        discovery, web_runner.server, max_connections=settings.max_connections, answers=settings.fast_lookups
    )
    listener = await asyncio.get_running_loop().create_server(
        front.protocol,
        host=settings.host,
        port=settings.port,
        ssl=tls.context if tls else None,
        backlog=128,
        reuse_address=True,
    )
    reloading = asyncio.create_task(
        tls.watch() if tls is not None else asyncio.sleep(0), name="svcreg-tls-reload"
    )
    admission_runner, admission_reloading = await _serve_admission(settings)
    logger.info(
        "svcreg %s listening on %s://%s:%d; probe policy opens %s",
        "discovery" if settings.discovery_only else "operator and discovery",
        "https" if tls else "http",
        settings.host,
        settings.port,
        list(settings.probe_allow) or "nothing",
    )
    watcher = Informer(api, index, settings.namespaces, watch_seconds=settings.watch_timeout_seconds)
    informer = asyncio.create_task(
        watcher.run() if settings.discovery_only else watcher.confirm_listed(), name="svcreg-informer"
    )
    # ServicePolicies: a replica watches them itself; the operator gets them from Kopf and
    # writes their status.
    if settings.discovery_only:
        policy_watcher = Informer(
            api,
            PolicySink(index),
            settings.namespaces,
            watch_seconds=settings.watch_timeout_seconds,
            plural=model.POLICY_PLURAL,
        )
        policies = asyncio.create_task(policy_watcher.run(), name="svcreg-policy-informer")
    else:
        policy_writer = PolicyStatusWriter(prober.writer, lambda: policy_states(index, prober), prober.owns)
        policies = asyncio.create_task(policy_writer.run(), name="svcreg-policy-status")
    freezer = asyncio.create_task(_freeze_after_sync(index), name="svcreg-gc-freeze")
    lag = asyncio.create_task(watch_lag(metrics.loop_lag), name="svcreg-loop-lag")
    electing = asyncio.create_task(
        membership.run() if membership is not None else asyncio.sleep(0), name="svcreg-prober-membership"
    )
    guarding = asyncio.create_task(
        guard.run() if not settings.discovery_only else asyncio.sleep(0), name="svcreg-partition-guard"
    )
    unwatch_gc = watch_gc(metrics.gc_pause)
    stalls = None
    if settings.report_stalls:
        stalls = StallReporter(asyncio.get_running_loop(), settings.report_stalls)
        stalls.start()
    stop = asyncio.Event()
    leaving = asyncio.create_task(
        _leave_on_signal(started, stop, membership) if not settings.discovery_only else asyncio.sleep(0),
        name="svcreg-leave-on-signal",
    )
    try:
        if settings.discovery_only:
            await informer
        else:
            await kopf.operator(
                clusterwide=settings.clusterwide,
                namespaces=settings.namespaces,
                # svcreg coordinates its operators itself (membership.py); Kopf's peering would
                # pause the watch every member needs.
                standalone=True,
                memo=kopf.Memo(
                    prober=prober,
                    watch_seconds=settings.watch_timeout_seconds,
                    registration_observers=(prober.observe, index.observe),
                    policy_observers=(index.observe_policy,),
                    scan_namespaces=settings.namespace_globs,
                ),
                ready_flag=started,
                stop_flag=stop,
            )
    finally:
        if stalls is not None:
            stalls.stop()
        unwatch_gc()
        tasks = (
            *(informer, policies, freezer, lag, guarding, electing, reloading, admission_reloading),
            leaving,
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        listener.close()
        front.close()
        await web_runner.cleanup()
        if vantages is not None:
            await vantages.close()
        if admission_runner is not None:
            await admission_runner.cleanup()
        await api.close()


async def _leave_on_signal(
    started: asyncio.Event, stop: asyncio.Event, membership: Membership | None
) -> None:
    """SIGTERM or SIGINT, once Kopf has started: leave the prober group first (stop probing,
    delete this member's Lease, so the others take its share within a renewal instead of after
    Kopf's shutdown), then tell Kopf to stop. Replaces the handlers Kopf installed."""
    await started.wait()
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(number, signalled.set)
    await signalled.wait()
    logger.info("stopping: leaving the prober group first")
    try:
        if membership is not None:
            await membership.leave()
    finally:
        stop.set()


def _membership(api: KubeApi, settings: Settings) -> Membership:
    """This process as a member of the prober group: named by its pod (else host and pid),
    reachable at --advertise-url (else its pod address and port)."""
    namespace = settings.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    scheme = "https" if settings.tls_cert_file else "http"
    address = os.environ.get("POD_IP") or "127.0.0.1"
    host = bracketed(address)
    url = settings.advertise_url or f"{scheme}://{host}:{settings.port}"
    return Membership(api, namespace, identity, url, group=settings.prober_group)


async def _own_username(api: KubeApi) -> str | None:
    """Who this process is to the API server (a SelfSubjectReview): the identity other members
    of its prober group must present when they ask it to probe (quorum). None when it cannot
    be learnt: then no member is answered, and quorum falls back to what each member sees."""
    try:
        review = (
            await api.call(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        ).json()
    except (errors.KubeApiError, errors.Unreachable) as error:
        logger.warning("own identity unknown (SelfSubjectReview: %s): quorum questions refused", error)
        return None
    username = ((review.get("status") or {}).get("userInfo") or {}).get("username")
    return username if isinstance(username, str) and username else None


def _prober_detail(membership: Membership | None) -> str:
    """What /readyz says of probing: no count that describes tenants' registrations."""
    if membership is None:
        return "active (standalone)"
    size = len(membership.members())
    if membership.acting():
        return f"active: probes its share, one of {size} member(s) of prober group {membership.group}"
    return f"standby: joining prober group {membership.group} ({size} member(s) seen)"


async def _serve_admission(
    settings: Settings,
) -> tuple[web.AppRunner | None, asyncio.Task[None]]:
    """The admission webhook's HTTPS listener, when ``--admission-port`` is set (operator only)."""
    if not settings.admission_port or settings.discovery_only:
        return None, asyncio.create_task(asyncio.sleep(0), name="svcreg-admission-off")
    if not (settings.admission_cert_file and settings.admission_key_file):
        raise SystemExit("svcreg run: --admission-port needs --admission-cert-file and --admission-key-file")
    tls = ServingTls(settings.admission_cert_file, settings.admission_key_file)
    webhook = web.AppRunner(admission.build_app(), access_log=None)
    await webhook.setup()
    await web.TCPSite(
        webhook, host=settings.host, port=settings.admission_port, ssl_context=tls.context
    ).start()
    logger.info(
        "admission webhook listening on https://%s:%d%s",
        settings.host,
        settings.admission_port,
        admission.PATH,
    )
    return webhook, asyncio.create_task(tls.watch(), name="svcreg-admission-tls-reload")


def policy_states(index: Index, prober: Prober) -> list[PolicyState]:
    """Every ServicePolicy's state: panic as the index sees it, the disruption budget and the
    shadow check as the prober does (for the operator's status writer)."""
    states = []
    for (namespace, name), (uid, generation, service, threshold) in sorted(index.policy_meta.items()):
        served, total, panic = index.panic_state(namespace, service)
        standing, shadow = prober.policy_summary(namespace, service)
        states.append(
            PolicyState(
                namespace,
                name,
                uid,
                generation,
                service,
                threshold,
                served,
                total,
                panic,
                budget=standing,
                shadow=shadow,
                ignored_for=index.governing(namespace, name),
            )
        )
    return states
