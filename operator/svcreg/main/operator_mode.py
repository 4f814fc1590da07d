"""Operator mode: Kopf's watch feeds the prober (write path) and the discovery index (read path).

Discovery's role here is ``Probing``: heartbeats, reports and registration writes land in this
process, and in a prober group (``--prober-group``, the default unless ``--standalone``) what
concerns another member's share is sent on to it. The process ends when Kopf does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from svcreg.core.hosts import bracketed
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.roles import Group, Probing
from svcreg.discovery.http.tls import ServingTls
from svcreg.discovery.index import Index
from svcreg.discovery.informer import Informer
from svcreg.kube import errors
from svcreg.kube.api import KubeApi
from svcreg.main.mode import Shared
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

logger = logging.getLogger("svcreg")


class OperatorMode:
    """The prober, its partition guard and (in a group) its membership, and Kopf's watch."""

    description = "operator and discovery"

    def __init__(self, shared: Shared, membership: Membership | None, member_username: str | None) -> None:
        settings, api, metrics = shared.settings, shared.api, shared.metrics
        self.shared = shared
        self.membership = membership
        self.guard = _guard(settings, api, shared)
        self.vantages = (
            VantageClient(membership, api, settings.operator_ca_file, settings.member_server_name)
            if membership is not None
            else None
        )
        heartbeats = HeartbeatStore()
        self.prober = prober = Prober(
            api,
            ProbeRunner(ProbePolicy(settings.probe_allow), heartbeats, trust=TrustStore(api)),
            metrics=metrics,
            guard=self.guard,
            concurrency=settings.probe_concurrency,
            slow_concurrency=settings.probe_slow_concurrency,
            owns=membership.owns if membership is not None else (lambda key: True),
            assigned=membership.assigned if membership is not None else None,
            identity=membership.identity if membership is not None else "",
            vantages=self.vantages,
            policies=shared.index.policy_for,
        )
        metrics.prober_share.set_function(lambda: sum(1 for key in prober.tracked if prober.owns(key)))
        metrics.prober_members.set_function(lambda: len(membership.members()) if membership else 1)
        group = None
        if membership is not None:
            membership.on_change = prober.membership_changed
            group = Group(
                owner_url=membership.owner_url,
                vantage=prober.probe_for_member,
                auth=Authorizer(api, (), metrics=metrics),
                username=member_username,
                server_name=settings.member_server_name,
            )
        self.role = Probing(
            heartbeats=heartbeats, reports=prober, last_probes=prober.last_probes, api=api, group=group
        )
        self.started = asyncio.Event()
        self.stop = asyncio.Event()
        self.admission: web.AppRunner | None = None
        self.admission_tls: ServingTls | None = None

    @classmethod
    async def build(cls, shared: Shared) -> OperatorMode:
        """The mode, after learning who this process is when it joins a prober group."""
        settings = shared.settings
        if settings.standalone:
            return cls(shared, None, None)
        return cls(shared, _membership(shared.api, settings), await _own_username(shared.api))

    def ready(self) -> tuple[bool, dict[str, Any]]:
        details = self.shared.index_details() | {
            "mode": "operator",
            "operator": "running" if self.started.is_set() else "starting",
            "partitionSuspected": self.guard.suspected,
            "prober": _prober_detail(self.membership),
        }
        # A suspected partition is reported, never a reason to leave the Service: it is the
        # prober's signal, and discovery still answers (the guard must not be a weapon).
        return self.shared.index.synced and self.started.is_set(), details

    def alive(self) -> tuple[bool, dict[str, Any]]:
        blocked = self.prober.scheduler.blocked_for()
        if blocked > self.shared.settings.wedged_after_seconds:
            return False, {"reason": f"every probe slot has been busy for {blocked:.0f}s"}
        return True, {}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        shared, prober = self.shared, self.prober
        settings = shared.settings
        policy_writer = PolicyStatusWriter(
            prober.writer, lambda: policy_states(shared.index, prober), prober.owns
        )
        # The informer only confirms the first listing here: Kopf's watch feeds the index.
        watcher = Informer(
            shared.api, shared.index, settings.namespaces, watch_seconds=settings.watch_timeout_seconds
        )
        tasks = [
            watcher.confirm_listed(),
            policy_writer.run(),
            self.guard.run(),
            _leave_on_signal(self.started, self.stop, self.membership),
        ]
        if self.admission_tls is not None:  # its certificate reloaded as it changes
            tasks.append(self.admission_tls.watch())
        if self.membership is not None:
            tasks.append(self.membership.run())
        return tasks

    async def main(self) -> None:
        settings, index = self.shared.settings, self.shared.index
        await kopf.operator(
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            # svcreg coordinates its operators itself (membership.py); Kopf's peering would
            # pause the watch every member needs.
            standalone=True,
            memo=kopf.Memo(
                prober=self.prober,
                watch_seconds=settings.watch_timeout_seconds,
                registration_observers=(self.prober.observe, index.observe),
                policy_observers=(index.observe_policy,),
                scan_namespaces=settings.namespace_globs,
            ),
            ready_flag=self.started,
            stop_flag=self.stop,
        )

    async def close(self) -> None:
        if self.vantages is not None:
            await self.vantages.close()
        if self.admission is not None:
            await self.admission.cleanup()

    async def start(self) -> None:
        """Open the admission webhook's HTTPS listener, when ``--admission-port`` is set."""
        settings = self.shared.settings
        if not settings.admission_port:
            return
        if not (settings.admission_cert_file and settings.admission_key_file):
            raise SystemExit(
                "svcreg run: --admission-port needs --admission-cert-file and --admission-key-file"
            )
        self.admission_tls = tls = ServingTls(settings.admission_cert_file, settings.admission_key_file)
        self.admission = webhook = web.AppRunner(admission.build_app(), access_log=None)
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


def _guard(settings: Settings, api: KubeApi, shared: Shared) -> PartitionGuard:
    """The partition guard, checking the API server itself unless references are given."""
    api_server = urlsplit(api.base_url)
    references = settings.partition_references or ((api_server.hostname or "", api_server.port or 443),)
    metrics = shared.metrics
    return PartitionGuard(
        GuardSettings(
            references=references,
            check_every=settings.partition_check_seconds,
            hold=settings.partition_hold_seconds,
        ),
        on_change=lambda suspected: metrics.partition_suspected.set(1 if suspected else 0),
        on_hold_expired=metrics.partition_hold_expired.inc,
    )


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
