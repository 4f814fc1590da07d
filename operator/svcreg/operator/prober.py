"""The prober: what is tracked and by whom, and the probe job that runs for each registration.

    watch -> observe() -> scheduler -> _job: probe -> gates -> health.step -> reconcile.verdict
          -> StatusWriter (status patch, then reconcile.events_for's Events, delete)

Kopf handlers only call ``observe``/``observe_endpoint_slice``. ``_job`` reads top to bottom,
one step per line; the decisions are pure functions elsewhere: ``health.step`` (a target's
state), ``gates`` (quorum, disruption budget, partition: write, hold or check again after N s;
this module gathers their evidence and does the scheduling they ask for), ``reconcile``
(the verdict and the Events a written change deserves). Every write goes through
``writer.StatusWriter``. A verdict is remembered only after the write that publishes it has
landed; a failed write is retried with backoff. ``tracking.Tracked`` is what is known of one
registration between jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from typing import Any

from svcreg.core.contracts import spec_problem
from svcreg.core.health import SERVED, Health
from svcreg.core.keys import Key
from svcreg.core.model import (
    ConditionStatus,
    ServicePolicySpec,
)
from svcreg.kube import resourceversion
from svcreg.kube.api import KubeApi, now_rfc3339
from svcreg.operator import budget as budget_mod
from svcreg.operator import damping as damping_mod
from svcreg.operator import gates, reconcile, verification
from svcreg.operator import health as health_mod
from svcreg.operator import shadow as shadow_mod
from svcreg.operator import status as status_mod
from svcreg.operator import vantage as vantage_mod
from svcreg.operator.endpoints import EndpointCache
from svcreg.operator.health import HealthState
from svcreg.operator.outliers import OutlierDetector
from svcreg.operator.partition import PartitionGuard
from svcreg.operator.probes.runner import ProbeRunner
from svcreg.operator.scheduler import Scheduler
from svcreg.operator.targets import Plan, plan
from svcreg.operator.tracking import (
    Results,
    Tracked,
    created_at_of,
    probed,
    resumed_states,
    service_of,
    turning_failed,
)
from svcreg.operator.writer import StatusWriter, WriteOutcome
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)


class Prober:
    def __init__(
        self,
        api: KubeApi,
        runner: ProbeRunner,
        *,
        metrics: Metrics | None = None,
        guard: PartitionGuard | None = None,
        concurrency: int = 200,
        slow_concurrency: int = 1000,
        owns: Callable[[Key], bool] = lambda key: True,
        assigned: Callable[[Key], bool] | None = None,
        identity: str = "",
        vantages: vantage_mod.Vantages | None = None,
        policies: Callable[[str, str], tuple[str, ServicePolicySpec] | None] = lambda ns, service: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._clock = clock
        self.outliers = OutlierDetector(clock=clock)
        self.writer = StatusWriter(api, self.metrics)
        self.runner = runner
        self.heartbeats = runner.context.heartbeats
        self.guard = guard or PartitionGuard()
        # Whether this process probes and writes a registration now (its share of the prober
        # group, when not standalone): jobs of others' registrations are no-ops, so two
        # operators never both write one. ``identity`` names this process in lastProbes.
        self.owns = owns
        # Whether a registration is this member's share in its latest view of the group, acting
        # or not (settling, or its view briefly stale): scheduling follows it; probing and
        # writing follow ``owns`` (assigned and acting).
        self.assigned = assigned or owns
        self.identity = identity
        self.vantages = vantages
        # A service's ServicePolicy, as (name, spec): its disruption budget and shadow check.
        self.policies = policies
        self.contracts = verification.ContractChecker(runner.context, self.metrics, clock)
        self.endpoints = EndpointCache()
        self.tracked: dict[Key, Tracked] = {}
        self._by_service: dict[Key, set[Key]] = defaultdict(set)  # by serviceRef
        self._by_logical: dict[Key, set[Key]] = defaultdict(set)  # by spec.service
        self._shadow_disagreeing: set[Key] = set()
        self.metrics.shadow_disagreeing.set_function(lambda: len(self._shadow_disagreeing))
        self._health_counts: Counter[Health] = Counter()
        self.scheduler = Scheduler(
            self._job,
            concurrency=concurrency,
            slow_concurrency=slow_concurrency,
            on_lag=self.metrics.scheduler_lag.observe,
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
            version = str(metadata.get("resourceVersion") or "")
            if resourceversion.older(version, tracked.resource_version):
                return  # a lagging watch's view of what this process already wrote over
            if version != tracked.resource_version:
                # The event of a write whose answer already set this version's status is not
                # parsed again.
                tracked.status = status_mod.parse(body.get("status"))
                tracked.resource_version = version
                if not tracked.owned:  # another member's write: counted as written
                    health = tracked.status.health if tracked.status else None
                    self._count(tracked.written_health, health)
                    tracked.written_health = health
            if event_type is not None and not probed(tracked):
                # Nothing re-evaluates an unprobed registration on a timer: a status changed
                # by someone else is put right from its watch event instead (after our own
                # writes this job finds nothing to do).
                self._schedule(tracked, soon=True)
            return
        spec, invalid = spec_problem(body.get("spec") or {})
        fresh = Tracked(
            key,
            metadata.get("uid", ""),
            generation,
            spec,
            invalid,
            status_mod.parse(body.get("status")),
            created_at=created_at_of(metadata),
            resource_version=str(metadata.get("resourceVersion") or ""),
        )
        same_object = tracked is not None and tracked.uid == fresh.uid
        if tracked is not None and same_object:
            fresh.written_health = tracked.written_health
            fresh.damping = tracked.damping
            fresh.ejected_written = tracked.ejected_written
        else:
            if fresh.spec is not None:
                flapping = status_mod.holds(fresh.status, "Flapping")
                fresh.damping = damping_mod.resumed(flapping, self._clock(), fresh.spec.flap_damping)
            fresh.ejected_written = status_mod.holds(fresh.status, "Ejected")
            if tracked is not None:
                self._count(tracked.written_health, None)  # a successor under the same name
            fresh.written_health = fresh.status.health if fresh.status else None
            self._count(None, fresh.written_health)
        self._unlink(key)
        self.tracked[key] = fresh
        self._by_logical[(key[0], service_of(fresh))].add(key)
        self._replan(fresh, previous=tracked if same_object else None)
        fresh.owned = self.assigned(key)
        if not fresh.owned:
            fresh.last_probes.clear()
        elif tracked is not None and same_object and not tracked.owned:
            self._take_over(fresh)
        # At start-up (initial listing) spread first probes over one interval; a registration
        # created or changed while running is probed within a second.
        self._schedule(fresh, soon=event_type is not None)

    def _schedule(self, tracked: Tracked, *, soon: bool = False, delay: float | None = None) -> None:
        """Probe on the registration's interval; one without a health check is evaluated once
        per change instead, as its verdict cannot change between them. Only what this member
        probes is scheduled: another member's registrations cost nothing here but their
        bookkeeping."""
        if not tracked.owned:
            self.scheduler.unschedule(tracked.key)
            return
        spec = tracked.spec
        interval = float(spec.health_check.interval_seconds) if spec else 3600.0
        self.scheduler.schedule(tracked.key, interval, soon=soon, repeat=probed(tracked), delay=delay)

    def _replan(self, tracked: Tracked, previous: Tracked | None = None) -> None:
        """Work out the targets. A target that did not change keeps its live state; on first
        sight (a restart) states resume from what status says, so nothing flaps; a target that
        changed (a new endpoint, port or check) starts Unknown: nothing is known of it yet."""
        if tracked.spec is None:
            tracked.plan = Plan(
                accepted=False, reason="InvalidSpec", message=tracked.invalid or "invalid spec"
            )
            return
        tracked.plan = plan(tracked.spec, tracked.key, self.endpoints, tracked.created_at)
        if tracked.plan.service_ref is not None:
            self._by_service[tracked.plan.service_ref].add(tracked.key)
        if previous is None:
            tracked.states = resumed_states(tracked)
            return
        old_states, old_targets = previous.states, previous.plan.targets
        tracked.states = {
            iid: old_states[iid] if iid in old_states and old_targets.get(iid) == target else HealthState()
            for iid, target in tracked.plan.targets.items()
        }
        tracked.last_probes = {
            iid: probe
            for iid, probe in previous.last_probes.items()
            if old_targets.get(iid) == tracked.plan.targets.get(iid)
        }

    def observe_endpoint_slice(self, event_type: str | None, body: dict[str, Any]) -> None:
        service = self.endpoints.observe(event_type, body)
        if service is None:
            return
        for key in list(self._by_service.get(service, ())):
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.spec is not None:
                previous = Tracked(
                    tracked.key, tracked.uid, tracked.generation, tracked.spec, tracked.invalid,
                    tracked.status, plan=tracked.plan, states=dict(tracked.states),
                    resource_version=tracked.resource_version,
                )  # fmt: skip
                self._replan(tracked, previous=previous)
                self._schedule(tracked, soon=True)

    def forget(self, key: Key) -> None:
        self.outliers.forget(key)
        tracked = self.tracked.pop(key, None)
        self.scheduler.unschedule(key)
        self.heartbeats.forget(key)
        self.writer.backoff.landed(key)
        self._unlink(key)
        if tracked is not None:
            self._count(tracked.written_health, None)

    def _unlink(self, key: Key) -> None:
        tracked = self.tracked.get(key)
        if tracked is None:
            return
        if tracked.plan.service_ref is not None:
            self._by_service[tracked.plan.service_ref].discard(key)
        logical = (key[0], service_of(tracked))
        members = self._by_logical.get(logical)
        if members is not None:
            members.discard(key)
            if not members:
                del self._by_logical[logical]
        self._shadow_disagreeing.discard(key)

    def service_members(self, namespace: str, service: str) -> list[Tracked]:
        """Every registration of one logical service in one namespace, whoever probes it."""
        return [self.tracked[k] for k in sorted(self._by_logical.get((namespace, service), ()))]

    # -- probe side -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The scheduler loop, until cancelled."""
        try:
            await self.scheduler.run()
        finally:
            self.contracts.close()

    async def probe_now(self, key: Key) -> None:
        """Run one probe job immediately (tests and benchmarks)."""
        await self._job(key)

    async def _job(self, key: Hashable) -> None:
        """One registration's round, top to bottom: probe -> gates -> health states -> verdict
        -> status and Events -> when to come back."""
        tracked = self._acting(key)
        if tracked is None:
            return
        if tracked.spec is None or not tracked.spec.maintenance:
            results = await self._probe(tracked)
            gate = await self._gates(tracked, results)
            if self.tracked.get(tracked.key) is tracked:
                for event in gate.events:
                    await self.writer.post_event(tracked.key, tracked.uid, event)
                if gate.recheck_after is not None:
                    self._schedule(tracked, delay=gate.recheck_after)
            self._record(tracked, results, gate.held)
            if tracked.spec is not None and tracked.plan.accepted:
                await self._probe_shadow(tracked)
                await self.contracts.check_due(tracked.spec, tracked.key, tracked.plan, tracked.contracts)
            if self.tracked.get(tracked.key) is not tracked:
                return  # changed or deleted while probing; the newer object is scheduled on its own
        verdict, damping = self._verdict(tracked)
        if await self._publish(tracked, verdict, damping):
            await self._maybe_deregister(tracked)
        self._come_back(tracked)

    def _acting(self, key: Hashable) -> Tracked | None:
        """The registration ``key`` when this member acts on it now; None (after letting go of
        it, or asking to be run again shortly) when not."""
        tracked = self.tracked.get(key) if isinstance(key, tuple) else None
        if tracked is None or tracked.deleting:
            return None
        if not self.assigned(tracked.key):
            if tracked.owned:
                self._release(tracked)
            return None
        if not self.owns(tracked.key):
            # This member's, but not acting this moment (settling, or a stale view): skipped,
            # kept scheduled; an evaluation that no timer repeats is tried again shortly.
            if not probed(tracked):
                self._schedule(tracked, delay=1.0)
            return None
        if not tracked.owned:
            self._take_over(tracked)
        return tracked

    async def _probe(self, tracked: Tracked) -> Results:
        """Every target of the plan probed once, concurrently."""
        targets = list(tracked.plan.targets.items())
        if len(targets) == 1:  # the common case: no gather, so no extra task per probe
            iid, target = targets[0]
            return [(iid, target.kind, await self.runner.run(target))]
        outcomes = await asyncio.gather(*(self.runner.run(target) for _, target in targets))
        return [(iid, target.kind, o) for (iid, target), o in zip(targets, outcomes, strict=True)]

    async def _gates(self, tracked: Tracked, results: Results) -> gates.Gate:
        """What the quorum, the disruption budget and the partition guard hold of this round:
        the evidence each needs is gathered here (other members asked), the decisions are
        ``gates``' pure functions."""
        gate = gates.WRITE
        if tracked.spec is not None:
            gate = await self._quorum_gate(tracked, results)
            gate |= await self._budget_gate(tracked, results, gate.held)
        partition = gates.partition(self.guard.holding(), results, gate.held)
        if partition.held:
            self.metrics.held_transitions.inc(len(partition.held))
        return gate | partition

    async def _quorum_gate(self, tracked: Tracked, results: Results) -> gates.Gate:
        spec = tracked.spec
        assert spec is not None
        needed = spec.health_check.quorum
        if needed <= 1 or self.vantages is None or spec.check_type() == "ttl":
            tracked.disagreement = ""
            return gates.WRITE
        failing = turning_failed(tracked, results)
        if not failing:
            if all(o is None or o.passed for _, _, o in results):
                tracked.disagreement = ""
            return gates.WRITE
        asked = self.vantages.vantages(tracked.key, needed - 1)
        seen = await asyncio.gather(*(self.vantages.ask(member, tracked.key) for member in asked))
        answers = {member.identity: answer for member, answer in zip(asked, seen, strict=True)}
        found = gates.quorum(needed, self.identity or "this member", failing, answers, tracked.disagreement)
        tracked.disagreement = found.disagreement
        return found.gate

    async def _budget_gate(self, tracked: Tracked, results: Results, held: frozenset[str]) -> gates.Gate:
        spec = tracked.spec
        assert spec is not None
        service = (tracked.key[0], service_of(tracked))
        found = self.policies(*service)
        budget = found[1].health_disruption_budget if found is not None else None
        if budget is None or spec.check_type() == "ttl":
            tracked.budget_held_since = None
            return gates.WRITE
        failing = {
            iid: reason
            for iid, reason in turning_failed(tracked, results, only_served=True).items()
            if iid not in held and reason not in budget_mod.NOT_PROBE_EVIDENCE
        }
        if not failing:
            if all(o is None or o.passed for _, _, o in results):
                tracked.budget_held_since = None
            return gates.WRITE
        standing = budget_mod.standing(
            budget, [t.status for t in self.service_members(*service)], time.time()
        )
        others = None
        if gates.budget_needs_others(standing, tracked.budget_held_since):
            others = await self._others_saw_pass(tracked, failing)
        decided = gates.budget(
            standing,
            failing,
            tracked.budget_held_since,
            now=self._clock(),
            max_hold=budget.max_hold_seconds,
            others_saw_pass=others,
        )
        if decided.outcome != "within":
            self.metrics.budget_holds.labels(decided.outcome).inc()
        tracked.budget_held_since = decided.held_since
        return decided.gate

    async def _others_saw_pass(self, tracked: Tracked, failing: dict[str, str]) -> bool | None:
        """Whether another member of the prober group, asked now, sees one of ``failing`` pass;
        None when there is no other member or none answered."""
        if self.vantages is None:
            return None
        asked = self.vantages.vantages(tracked.key, 2)
        seen = await asyncio.gather(*(self.vantages.ask(member, tracked.key) for member in asked))
        answers = [answer for answer in seen if answer is not None]
        if not answers:
            return None
        return any(answer.get(iid) is True for answer in answers for iid in failing)

    async def _probe_shadow(self, tracked: Tracked) -> None:
        """Run the service's shadow check, if its policy has one, and step its own states."""
        spec = tracked.spec
        assert spec is not None
        found = self.policies(tracked.key[0], service_of(tracked))
        check = found[1].shadow_health_check if found is not None else None
        if check is None:
            tracked.shadow_check, tracked.shadow_plan, tracked.shadow_states = None, None, {}
            return
        if check != tracked.shadow_check:
            tracked.shadow_check, tracked.shadow_plan, tracked.shadow_states = check, None, {}
        if tracked.shadow_plan is None or tracked.shadow_basis is not tracked.plan:
            # New, or the addresses of a serviceRef changed: unchanged targets keep their state.
            old = tracked.shadow_plan.targets if tracked.shadow_plan is not None else {}
            tracked.shadow_plan = shadow_mod.shadow_plan(
                spec, check, tracked.key, self.endpoints, tracked.created_at
            )
            tracked.shadow_basis = tracked.plan
            tracked.shadow_states = {
                iid: tracked.shadow_states[iid]
                for iid, target in tracked.shadow_plan.targets.items()
                if iid in tracked.shadow_states and old.get(iid) == target
            }
        targets = list(tracked.shadow_plan.targets.items())
        outcomes = await asyncio.gather(*(self.runner.run(target) for _, target in targets))
        thresholds = shadow_mod.thresholds(check)
        states = {}
        for (iid, _), outcome in zip(targets, outcomes, strict=True):
            state = tracked.shadow_states.get(iid, HealthState())
            states[iid] = health_mod.step(state, outcome, thresholds) if outcome is not None else state
        tracked.shadow_states = states

    def _shadow_condition(self, tracked: Tracked, real: Health) -> tuple[ConditionStatus, str, str] | None:
        """The ShadowHealthy condition of a registration, counted in metrics when it disagrees."""
        if tracked.shadow_check is None:
            self._shadow_disagreeing.discard(tracked.key)
            return None
        found = self.policies(tracked.key[0], service_of(tracked))
        name = found[0] if found is not None else "(gone)"
        row = shadow_mod.condition(name, shadow_mod.aggregate(tracked.shadow_states.values()), real)
        way = shadow_mod.direction(row[0], real)
        if way is None:
            self._shadow_disagreeing.discard(tracked.key)
        else:
            self.metrics.shadow_disagreements.labels(way).inc()
            self._shadow_disagreeing.add(tracked.key)
        return row

    def policy_summary(
        self, namespace: str, service: str
    ) -> tuple[budget_mod.Standing | None, shadow_mod.Summary | None]:
        """What a ServicePolicy's status says of its service beside panic: the disruption
        budget's standing and the shadow check's summary, read from the written statuses."""
        found = self.policies(namespace, service)
        if found is None:
            return None, None
        members = self.service_members(namespace, service)
        budget = found[1].health_disruption_budget
        standing = budget_mod.standing(budget, [t.status for t in members], time.time()) if budget else None
        summary = None
        if found[1].shadow_health_check is not None:
            summary = shadow_mod.summary((t.key[1], t.status) for t in members)
        return standing, summary

    async def probe_for_member(self, key: Key) -> dict[str, bool] | None:
        """Another member's question (quorum): what does this member's own probe of ``key`` see
        now, per instance? Changes nothing here; None when this member does not know ``key``."""
        tracked = self.tracked.get(key)
        if tracked is None or tracked.spec is None:
            return None
        targets = [(iid, t) for iid, t in tracked.plan.targets.items() if t.kind != "ttl"]
        outcomes = await asyncio.gather(*(self.runner.run(target) for _, target in targets))
        return {iid: o.passed for (iid, _), o in zip(targets, outcomes, strict=True) if o is not None}

    def membership_changed(self) -> None:
        """The prober group changed (a member came or went, this one started or stopped
        acting): whatever changed hands is evaluated at once, by its new owner. Needed above
        all for registrations evaluated only on change (``type: none``), which no timer would
        bring back."""
        for tracked in self.tracked.values():
            mine = self.assigned(tracked.key)
            if mine and not tracked.owned:
                self._take_over(tracked)
                # Spread over one interval like a start-up; once-only evaluations at once.
                self._schedule(tracked, soon=not probed(tracked))
            elif tracked.owned and not mine:
                self._release(tracked)

    def _release(self, tracked: Tracked) -> None:
        """Another member probes it now: forget what only the prober should say about it, and
        stop scheduling it."""
        tracked.owned = False
        tracked.last_probes.clear()
        tracked.contracts.clear()
        tracked.budget_held_since = None
        self.writer.backoff.landed(tracked.key)
        self.scheduler.unschedule(tracked.key)

    def _take_over(self, tracked: Tracked) -> None:
        """It is this process's to probe again: what it knew may be stale, so start from what
        the written status says (as after a restart: nothing flaps), and give a ttl
        registration one ttl for its heartbeats to find their way here."""
        tracked.owned = True
        tracked.states = resumed_states(tracked)
        tracked.last_verdict = tracked.last_compared = None
        self._count(tracked.written_health, tracked.status.health if tracked.status else None)
        tracked.written_health = tracked.status.health if tracked.status else None
        if tracked.spec is not None:
            flapping = status_mod.holds(tracked.status, "Flapping")
            tracked.damping = damping_mod.resumed(flapping, self._clock(), tracked.spec.flap_damping)
        tracked.ejected_written = status_mod.holds(tracked.status, "Ejected")
        self.heartbeats.grant(tracked.key)

    # -- passive health ---------------------------------------------------------------------------

    def report(self, key: Key, caller: str, outcome: str) -> bool:
        """One caller's report of a real call (``POST /v1/report``); True when the instance is
        ejected now. The share of a service ejected at once is capped (never below one
        instance): past it, an instance that meets the bar stays in rotation (and is counted)."""
        self.metrics.reports.labels(outcome).inc()
        tracked = self.tracked.get(key)
        if tracked is None:
            return False
        if not self.outliers.report(key, caller, outcome != "success"):
            return self.outliers.ejected(key)
        siblings = [t.key for t in self.service_members(key[0], service_of(tracked)) if t.spec is not None]
        ejected = sum(1 for k in siblings if self.outliers.ejected(k))
        # As Envoy's max_ejection_percent: at least one instance may always be ejected.
        found = self.policies(key[0], service_of(tracked))
        share = found[1].max_ejected_percent / 100 if found else self.outliers.settings.max_ejected_share
        allowed = max(1, int(share * len(siblings)))
        if ejected + 1 > allowed:
            self.metrics.ejections.labels("refused").inc()
            return False
        self.outliers.eject(key)
        self.metrics.ejections.labels("ejected").inc()
        self._schedule(tracked, soon=True)  # an immediate probe, and the Ejected condition
        return True

    def _ejection_message(self, key: Key) -> str:
        """Stable for the whole ejection (it is written to status)."""
        settings = self.outliers.settings
        count = self.outliers.ejection_count(key)
        seconds = self.outliers.duration(count)
        return (
            f"ejected as an outlier: at least {settings.callers} callers reported failed calls within "
            f"{settings.window:.0f}s; ejection {count}, for {seconds:.0f}s"
        )

    def _damp(
        self, tracked: Tracked, verdict: status_mod.Verdict
    ) -> tuple[status_mod.Verdict, damping_mod.Damping]:
        """The verdict with flap damping applied, and the damping state it was worked out with
        (kept only once the verdict is written, so a failed write never counts twice)."""
        if tracked.spec is None:
            return verdict, tracked.damping
        settings = tracked.spec.flap_damping
        before, after = tracked.written_health, verdict.health
        settled = (Health.UNKNOWN, Health.MAINTENANCE)
        transition = (
            before is not None
            and before not in settled
            and after not in settled
            and (before in SERVED) != (after in SERVED)
        )
        now = self._clock()
        state = damping_mod.advance(tracked.damping, now, settings, transition=transition)
        if state.suppressed:
            verdict = dataclasses.replace(
                verdict, damped=True, damped_message=damping_mod.message(state, settings)
            )
        return verdict, state

    def last_probes(self, key: Key) -> list[dict[str, object]] | None:
        """The last probe of each instance of ``key`` as discovery serves it, or None when this
        process does not probe it (a standby, a replica, or no probe yet)."""
        tracked = self.tracked.get(key)
        if tracked is None or not tracked.last_probes:
            return None
        return [
            {
                "instance": iid,
                **({"prober": self.identity} if self.identity else {}),
                "at": datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds"),
                "passed": outcome.passed,
                "latencyMs": round(outcome.latency * 1000, 1),
                "reason": str(outcome.reason),
                "message": outcome.message,
            }
            for iid, (at, outcome) in sorted(tracked.last_probes.items())
        ]

    def _record(self, tracked: Tracked, results: Results, held: frozenset[str] = frozenset()) -> None:
        """Step each instance's state with its outcome; ``held`` instances' failures are seen
        (metrics, last probes) but not counted (a gate held them)."""
        thresholds = tracked.thresholds
        for iid, kind, outcome in results:
            if outcome is None:
                continue  # a ttl check within its grace
            self.metrics.observe_probe(kind, outcome.passed, outcome.reason, outcome.latency)
            tracked.last_probes[iid] = (time.time(), outcome)
            if iid not in held:
                tracked.states[iid] = health_mod.step(
                    tracked.states.get(iid, HealthState()), outcome, thresholds
                )

    def _verdict(self, tracked: Tracked) -> tuple[status_mod.Verdict, damping_mod.Damping]:
        """What the status should say (``reconcile.verdict``, pure) with what beside health it
        carries: the quorum's disagreement, the shadow check, contracts, damping, ejection."""
        verdict = reconcile.verdict(tracked.spec, tracked.generation, tracked.plan, tracked.states)
        shadow = self._shadow_condition(tracked, verdict.health)
        contracts = verification.rows(tracked.spec, tracked.contracts)
        if tracked.disagreement or shadow is not None or contracts:  # most jobs have none
            verdict = dataclasses.replace(
                verdict, disagreement=tracked.disagreement, shadow=shadow, contracts=contracts
            )
        verdict, damping = self._damp(tracked, verdict)
        if self.outliers.ejected(tracked.key):
            verdict = dataclasses.replace(
                verdict, ejected=True, ejected_message=self._ejection_message(tracked.key)
            )
        return verdict, damping

    async def _publish(
        self, tracked: Tracked, verdict: status_mod.Verdict, damping: damping_mod.Damping
    ) -> bool:
        """Make the written status say ``verdict``, then post the Events it deserves
        (``reconcile.events_for``). False when that is not (yet) so: the write failed (retried
        with backoff) or the object is gone."""
        if verdict == tracked.last_verdict and tracked.status is tracked.last_compared:
            tracked.damping = damping
            return True
        wanted = status_mod.desired(tracked.status, verdict, now_rfc3339())
        if not status_mod.differs(tracked.status, wanted):
            tracked.last_verdict, tracked.last_compared = verdict, tracked.status
            tracked.damping = damping
            return True
        if not self.owns(tracked.key):
            return False  # it moved to another member while probing: that member writes
        outcome, stored = await self.writer.write_status(
            tracked.key, tracked.resource_version, tracked.status, wanted
        )
        if outcome == WriteOutcome.FAILED:
            if self.tracked.get(tracked.key) is tracked:
                self._schedule(tracked, delay=self.writer.backoff.failed(tracked.key))
            return False
        if outcome == WriteOutcome.GONE or stored is None:
            return False
        before = reconcile.Published(
            tracked.written_health, tracked.damping.suppressed, tracked.ejected_written
        )
        tracked.status = status_mod.parse(stored.get("status")) or wanted
        tracked.resource_version = str((stored.get("metadata") or {}).get("resourceVersion") or "")
        tracked.last_verdict, tracked.last_compared = verdict, tracked.status
        tracked.damping, tracked.ejected_written = damping, verdict.ejected
        if verdict.damped and not before.damped:
            self.metrics.flap_suppressions.inc()
        if before.health != verdict.health:
            tracked.written_health = verdict.health
            self._count(before.health, verdict.health)
        for event in reconcile.events_for(before, verdict):
            await self.writer.post_event(tracked.key, tracked.uid, event)
        return True

    def _come_back(self, tracked: Tracked) -> None:
        """When to run again beside the interval: a registration no timer probes comes back
        when a contract is due; an ejection ends on time, not at the next interval."""
        if self.tracked.get(tracked.key) is not tracked:
            return
        if not probed(tracked):
            wait = verification.next_due(tracked.spec, tracked.contracts, self._clock())
            if wait is not None:
                self._schedule(tracked, delay=wait + 0.01)
        remaining = self.outliers.remaining(tracked.key)
        if remaining > 0:
            spec = tracked.spec
            interval = float(spec.health_check.interval_seconds) if spec else 3600.0
            if remaining < interval or not probed(tracked):
                self._schedule(tracked, delay=remaining + 0.01)

    async def _maybe_deregister(self, tracked: Tracked) -> None:
        decision = reconcile.deregistration(tracked.spec, tracked.status, datetime.datetime.now(datetime.UTC))
        if decision is None:
            return
        tracked.deleting = True
        await self.writer.post_event(tracked.key, tracked.uid, decision.event)
        deleted = await self.writer.delete(tracked.key, tracked.uid)
        if deleted is None:
            tracked.deleting = False  # retried next round
        elif deleted:
            logger.warning(
                "deregistered %s/%s after %.0fs %s", *tracked.key, decision.elapsed, tracked.written_health
            )

    def _count(self, before: Health | None, after: Health | None) -> None:
        for health, delta in ((before, -1), (after, 1)):
            if health is not None:
                self._health_counts[health] += delta
                self.metrics.registrations.labels(str(health)).set(self._health_counts[health])
