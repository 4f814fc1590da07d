"""The operator's write path: watched registrations in, probes on schedule, status and Events out.

    watch -> observe() -> scheduler -> probe -> health.step -> status.desired -> patch (if it differs)

Kopf handlers only call ``observe``/``observe_endpoint_slice``; everything else is here and in
the plain modules it composes, so it runs the same under tests, benchmarks and the operator.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pydantic

from svcreg import health as health_mod
from svcreg import status as status_mod
from svcreg.endpoints import EndpointCache
from svcreg.health import BAD, GOOD, HealthState, Thresholds
from svcreg.kubeapi import KubeApi, now_rfc3339
from svcreg.metrics import Metrics
from svcreg.model import Health, ServiceRegistrationSpec
from svcreg.partition import PartitionGuard
from svcreg.probes.base import Outcome
from svcreg.probes.runner import ProbeRunner
from svcreg.scheduler import Scheduler
from svcreg.targets import Plan, plan

logger = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass
class Tracked:
    key: Key
    uid: str
    generation: int
    spec: ServiceRegistrationSpec | None
    invalid: str | None
    status: dict[str, Any] | None
    plan: Plan = field(default_factory=Plan)
    states: dict[str, HealthState] = field(default_factory=dict)
    written_health: Health | None = None
    deleting: bool = False
    # The verdict last compared with ``status``: when neither changed, nothing can differ, so
    # the steady state skips building a status at all.
    last_verdict: status_mod.Verdict | None = None
    last_compared: dict[str, Any] | None = None
    thresholds: Thresholds = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = _thresholds(self.spec)


def _thresholds(spec: ServiceRegistrationSpec | None) -> Thresholds:
    if spec is None:
        return Thresholds()
    check = spec.health_check
    if spec.check_type() == "ttl":
        # A heartbeat already carries its own deadline (ttlSeconds): apply it at once.
        return Thresholds(success=1, failure=1)
    return Thresholds(check.success_threshold, check.failure_threshold, check.degraded_latency_ms / 1000)


def _resumed_states(tracked: Tracked) -> dict[str, HealthState]:
    """States rebuilt from the written status, so a restart does not flap anything."""
    status = tracked.status or {}
    thresholds = tracked.thresholds
    try:
        written = Health(status["health"]) if status.get("health") else None
    except ValueError:
        written = None
    healthy: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Healthy"), {}
    )
    reason, message = healthy.get("reason", "AwaitingFirstProbe"), healthy.get("message", "not probed yet")
    if tracked.plan.service_ref is None or tracked.spec is None or tracked.spec.check_type() == "ttl":
        return {
            iid: HealthState.resumed(written, reason, message, thresholds) for iid in tracked.plan.targets
        }
    previous = {f"{i.get('address')}:{i.get('port')}": i for i in status.get("instances") or []}
    states = {}
    for iid in tracked.plan.targets:
        seen = previous.get(iid)
        seen_health = (
            Health(seen["health"]) if seen and seen.get("health") in Health.__members__.values() else None
        )
        states[iid] = HealthState.resumed(
            seen_health, (seen or {}).get("reason") or reason, message, thresholds
        )
    return states


class Prober:
    def __init__(
        self,
        api: KubeApi,
        runner: ProbeRunner,
        *,
        metrics: Metrics | None = None,
        guard: PartitionGuard | None = None,
        concurrency: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.runner = runner
        self.metrics = metrics or Metrics()
        self.guard = guard or PartitionGuard()
        self.clock = clock
        self.endpoints = EndpointCache()
        self.tracked: dict[Key, Tracked] = {}
        self._by_service: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self._health_counts: Counter[Health] = Counter()
        self.scheduler = Scheduler(
            self._job, concurrency=concurrency, on_lag=self.metrics.scheduler_lag.observe
        )

    # -- watch side -----------------------------------------------------------------------------

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Take one watch event of a registration. Cheap when nothing but status changed."""
        metadata = body.get("metadata") or {}
        key: Key = (metadata.get("namespace", ""), metadata.get("name", ""))
        if event_type == "DELETED":
            self.forget(key)
            return
        generation = int(metadata.get("generation") or 0)
        tracked = self.tracked.get(key)
        if tracked is not None and tracked.uid == metadata.get("uid") and tracked.generation == generation:
            tracked.status = body.get("status")
            if event_type is not None and not _probed(tracked):
                # Nothing re-evaluates an unprobed registration on a timer: a status changed
                # by someone else is put right from its watch event instead (after our own
                # writes this job finds nothing to do).
                self._schedule(tracked, soon=True)
            return
        try:
            spec: ServiceRegistrationSpec | None = ServiceRegistrationSpec.model_validate(
                body.get("spec") or {}
            )
            invalid = None
        except pydantic.ValidationError as error:
            spec, invalid = None, "; ".join(e["msg"] for e in error.errors())[:1000]
        fresh = Tracked(key, metadata.get("uid", ""), generation, spec, invalid, body.get("status"))
        if tracked is not None:
            fresh.written_health = tracked.written_health
        else:
            fresh.written_health = _health_of(fresh.status)
            self._count(None, fresh.written_health)
        self._unlink(key)
        self.tracked[key] = fresh
        self._replan(fresh, previous=tracked)
        # At start-up (initial listing) spread first probes over one interval; a registration
        # created or changed while running is probed within a second.
        self._schedule(fresh, soon=event_type is not None)

    def _schedule(self, tracked: Tracked, *, soon: bool) -> None:
        """Probe on the registration's interval; one without a health check is evaluated once
        per change instead, as its verdict cannot change between them."""
        spec = tracked.spec
        interval = float(spec.health_check.interval_seconds) if spec else 3600.0
        self.scheduler.schedule(tracked.key, interval, soon=soon, repeat=_probed(tracked))

    def _replan(self, tracked: Tracked, previous: Tracked | None = None) -> None:
        """Work out the targets; keep live state for targets that did not change, and start new
        ones from what status says (so neither a restart nor an unrelated edit flaps health)."""
        if tracked.spec is None:
            tracked.plan = Plan(
                accepted=False, reason="InvalidSpec", message=tracked.invalid or "invalid spec"
            )
            return
        tracked.plan = plan(tracked.spec, tracked.key, self.endpoints)
        if tracked.plan.service_ref is not None:
            self._by_service[tracked.plan.service_ref].add(tracked.key)
        resumed = _resumed_states(tracked)
        old_states = previous.states if previous is not None else {}
        old_targets = previous.plan.targets if previous is not None else {}
        tracked.states = {
            iid: old_states[iid] if iid in old_states and old_targets.get(iid) == target else resumed[iid]
            for iid, target in tracked.plan.targets.items()
        }

    def observe_endpoint_slice(self, event_type: str | None, body: dict[str, Any]) -> None:
        service = self.endpoints.observe(event_type, body)
        if service is None:
            return
        for key in list(self._by_service.get(service, ())):
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.spec is not None:
                self._replan(tracked, previous=_copy_for_replan(tracked))
                self._schedule(tracked, soon=True)

    def forget(self, key: Key) -> None:
        tracked = self.tracked.pop(key, None)
        self.scheduler.unschedule(key)
        self.runner.heartbeats.forget(key)
        self._unlink(key)
        if tracked is not None:
            self._count(tracked.written_health, None)

    def _unlink(self, key: Key) -> None:
        tracked = self.tracked.get(key)
        if tracked is not None and tracked.plan.service_ref is not None:
            self._by_service[tracked.plan.service_ref].discard(key)

    # -- probe side -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The scheduler loop, until cancelled."""
        await self.scheduler.run()

    async def probe_now(self, key: Key) -> None:
        """Run one probe job immediately (tests and benchmarks)."""
        await self._job(key)

    async def _job(self, key: Hashable) -> None:
        tracked = self.tracked.get(key) if isinstance(key, tuple) else None
        if tracked is None or tracked.deleting:
            return
        spec = tracked.spec
        if spec is not None and spec.maintenance:
            verdict = status_mod.Verdict(
                Health.MAINTENANCE, "Maintenance", "spec.maintenance is true", tracked.generation
            )
            await self._write(tracked, verdict)
            return
        targets = list(tracked.plan.targets.items())
        if len(targets) == 1:  # the common case: no gather, so no extra task per probe
            iid, target = targets[0]
            self._apply(tracked, [(iid, target.kind, await self.runner.run(target))])
        elif targets:
            outcomes = await asyncio.gather(*(self.runner.run(target) for _, target in targets))
            self._apply(
                tracked, [(iid, target.kind, o) for (iid, target), o in zip(targets, outcomes, strict=True)]
            )
        if self.tracked.get(tracked.key) is not tracked:
            return  # changed or deleted while probing; the newer object is scheduled on its own
        await self._write(tracked, self._verdict(tracked))
        await self._maybe_deregister(tracked)

    def _apply(self, tracked: Tracked, results: list[tuple[str, str, Outcome | None]]) -> None:
        now = self.clock()
        thresholds = tracked.thresholds
        for iid, kind, outcome in results:
            if outcome is None:
                continue  # a ttl check within its start-up grace
            self.metrics.observe_probe(kind, outcome.passed, outcome.reason, outcome.latency)
            connection_failed = not outcome.passed and outcome.connection_level
            self.guard.record((tracked.key, iid), connection_failed, now)
            suspected = self.guard.evaluate(now)
            self.metrics.partition_suspected.set(1 if suspected else 0)
            state = tracked.states.get(iid, HealthState())
            if connection_failed and suspected:
                self.metrics.held_transitions.inc()
                continue  # hold last-known health: the failure may be ours, not the target's
            tracked.states[iid] = health_mod.step(state, outcome, thresholds)

    def _verdict(self, tracked: Tracked) -> status_mod.Verdict:
        p = tracked.plan
        common: dict[str, Any] = {
            "generation": tracked.generation,
            "accepted": p.accepted,
            "accepted_reason": p.reason,
            "accepted_message": p.message,
        }
        if not p.accepted:
            return status_mod.Verdict(
                Health.UNHEALTHY if tracked.spec else Health.UNKNOWN, p.reason, p.message, **common
            )
        if p.service_ref is None or (tracked.spec is not None and tracked.spec.check_type() == "ttl"):
            state = tracked.states.get("", HealthState())
            return status_mod.Verdict(state.health, state.reason, state.message, **common)
        instances = tuple(
            {
                "address": p.addresses[iid].ip,
                "port": p.addresses[iid].port,
                "health": str(tracked.states[iid].health),
                "reason": tracked.states[iid].reason,
                **({"targetRef": p.addresses[iid].target_ref} if p.addresses[iid].target_ref else {}),
            }
            for iid in sorted(p.targets)
        )
        healths = [tracked.states[iid].health for iid in p.targets]
        overall = health_mod.aggregate(healths)
        good = sum(1 for h in healths if h in GOOD)
        if not healths:
            reason, message = "NoReadyEndpoints", "the Service has no ready addresses"
        elif overall == Health.UNKNOWN:
            reason, message = "AwaitingFirstProbe", "not probed yet"
        elif good == len(healths):
            reason, message = "AllInstancesHealthy", f"{good} of {len(healths)} instances healthy"
        elif good:
            reason, message = "SomeInstancesUnhealthy", f"{good} of {len(healths)} instances healthy"
        else:
            reason, message = "NoInstanceHealthy", f"0 of {len(healths)} instances healthy"
        return status_mod.Verdict(overall, reason, message, instances=instances, **common)

    async def _write(self, tracked: Tracked, verdict: status_mod.Verdict) -> None:
        if verdict == tracked.last_verdict and tracked.status is tracked.last_compared:
            return
        tracked.last_verdict, tracked.last_compared = verdict, tracked.status
        wanted = status_mod.desired(tracked.status, verdict, now_rfc3339())
        if not status_mod.differs(tracked.status, wanted):
            return
        namespace, name = tracked.key
        try:
            answer = await self.api.patch_status(namespace, name, wanted)
        except Exception as error:  # API refusals and transport errors: the next round retries
            self.metrics.status_writes.labels("error").inc()
            logger.warning("status of %s/%s not written: %s", namespace, name, error)
            return
        if answer is None:
            self.metrics.status_writes.labels("notfound").inc()
            return  # deleted meanwhile: normal
        self.metrics.status_writes.labels("ok").inc()
        tracked.status = answer.get("status") or wanted
        before, after = tracked.written_health, verdict.health
        if before != after:
            tracked.written_health = after
            self._count(before, after)
            await self._event_for_transition(tracked, before, verdict)

    async def _event_for_transition(
        self, tracked: Tracked, before: Health | None, verdict: status_mod.Verdict
    ) -> None:
        after = verdict.health
        if after == Health.UNKNOWN:
            return  # first visit: nothing has been learnt yet
        event_type = "Warning" if after in (*BAD, Health.DEGRADED) else "Normal"
        await self._event(
            tracked, event_type, str(after), f"{before or Health.UNKNOWN} -> {after}: {verdict.message}"
        )

    async def _event(
        self, tracked: Tracked, event_type: str, reason: str, message: str, action: str = "Probe"
    ) -> None:
        namespace, name = tracked.key
        try:
            await self.api.post_event(
                namespace=namespace,
                name=name,
                uid=tracked.uid,
                event_type=event_type,
                reason=reason,
                message=message,
                action=action,
            )
            self.metrics.events.labels(event_type).inc()
        except Exception as error:  # an Event is best effort
            logger.warning("event for %s/%s not posted: %s", namespace, name, error)

    async def _maybe_deregister(self, tracked: Tracked) -> None:
        spec = tracked.spec
        if spec is None or spec.deregister_after_seconds <= 0 or tracked.written_health not in BAD:
            return
        since = status_mod.health_since(tracked.status)
        if since is None:
            return
        started = datetime.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        if elapsed < spec.deregister_after_seconds:
            return
        tracked.deleting = True
        await self._event(
            tracked,
            "Warning",
            "Deregistering",
            f"{tracked.written_health} for {elapsed:.0f}s, over deregisterAfterSeconds="
            f"{spec.deregister_after_seconds}; deleting this registration",
            action="Deregister",
        )
        namespace, name = tracked.key
        try:
            if await self.api.delete_registration(namespace, name, tracked.uid):
                self.metrics.deregistrations.inc()
                logger.warning(
                    "deregistered %s/%s after %.0fs %s", namespace, name, elapsed, tracked.written_health
                )
        except Exception as error:  # retried next round
            tracked.deleting = False
            logger.warning("deregistering %s/%s failed: %s", namespace, name, error)

    def _count(self, before: Health | None, after: Health | None) -> None:
        for health, delta in ((before, -1), (after, 1)):
            if health is not None:
                self._health_counts[health] += delta
                self.metrics.registrations.labels(str(health)).set(self._health_counts[health])


def _probed(tracked: Tracked) -> bool:
    """Whether this registration is evaluated on a timer. A health check (a probe or a ttl)
    can change its verdict at any moment; ``type: none`` cannot, so it is evaluated when its
    own watch events say something changed. An invalid spec keeps its slow re-check."""
    spec = tracked.spec
    return spec is None or spec.health_check.type != "none"


def _health_of(status: dict[str, Any] | None) -> Health | None:
    value = (status or {}).get("health")
    try:
        return Health(value) if value else None
    except ValueError:
        return None


def _copy_for_replan(tracked: Tracked) -> Tracked:
    return Tracked(
        tracked.key,
        tracked.uid,
        tracked.generation,
        tracked.spec,
        tracked.invalid,
        tracked.status,
        plan=tracked.plan,
        states=dict(tracked.states),
        written_health=tracked.written_health,
    )
