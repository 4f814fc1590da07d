"""Bookkeeping of one watched registration: what the prober knows of it between jobs.

A ``Tracked`` holds the spec, the probe plan, each target's health state, the status last seen
and what this process last wrote; the helpers here are pure functions of one ``Tracked``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from svcreg.core.health import FAILED, SERVED, Health
from svcreg.core.keys import Key
from svcreg.core.model import ServiceRegistrationSpec, ServiceRegistrationStatus, ShadowHealthCheck
from svcreg.operator import damping as damping_mod
from svcreg.operator import health as health_mod
from svcreg.operator import status as status_mod
from svcreg.operator import verification
from svcreg.operator.health import HealthState, Thresholds
from svcreg.operator.probes.base import Outcome
from svcreg.operator.targets import Plan

Results = list[tuple[str, str, Outcome | None]]  # (instance, probe kind, outcome or None: ttl grace)


@dataclass(slots=True)
class Tracked:
    key: Key
    uid: str
    generation: int
    spec: ServiceRegistrationSpec | None
    invalid: str | None
    status: ServiceRegistrationStatus | None
    created_at: float | None = None  # wall-clock seconds, from metadata.creationTimestamp
    resource_version: str = ""  # as last seen: the precondition of the next status write
    plan: Plan = field(default_factory=Plan)
    states: dict[str, HealthState] = field(default_factory=dict)
    # The last probe of each instance: (wall-clock time, outcome). Kept in memory and served by
    # discovery on request, never written: steady state makes no status writes.
    last_probes: dict[str, tuple[float, Outcome]] = field(default_factory=dict)
    written_health: Health | None = None
    deleting: bool = False
    # The verdict last found already written on ``status``: while neither changes, nothing can
    # differ, so the steady state skips building a status at all.
    last_verdict: status_mod.Verdict | None = None
    last_compared: ServiceRegistrationStatus | None = None
    # Flap damping: the penalty of changes in and out of rotation, in memory (see damping.py).
    damping: damping_mod.Damping = field(default_factory=damping_mod.Damping)
    # Whether the written status says Ejected (passive health; see outliers.py).
    ejected_written: bool = False
    # Whether this process probed it last time round (false while another member owns it): on
    # taking it over, what it knows is rebuilt from the written status, as after a restart.
    owned: bool = True
    # Multi-vantage quorum: why a failure this member saw is not (yet) counted (vantage.py).
    disagreement: str = ""
    # Verified capability contracts: capability -> (when checked, result) (verification.py).
    contracts: verification.Checked = field(default_factory=dict)
    # The service's shadow check (shadow.py): the check, its plan and per-target states.
    shadow_check: ShadowHealthCheck | None = None
    shadow_plan: Plan | None = None
    shadow_basis: Plan | None = None  # the registration's plan the shadow plan was made beside
    shadow_states: dict[str, HealthState] = field(default_factory=dict)
    # Health disruption budget (budget.py): since when a transition waits for confirmation.
    budget_held_since: float | None = None
    thresholds: Thresholds = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = thresholds_of(self.spec)


def thresholds_of(spec: ServiceRegistrationSpec | None) -> Thresholds:
    if spec is None:
        return Thresholds()
    check = spec.health_check
    if spec.check_type() == "ttl":
        # A heartbeat already carries its own deadline (ttlSeconds): apply it at once.
        return Thresholds(success=1, failure=1)
    return Thresholds(check.success_threshold, check.failure_threshold, check.degraded_latency_ms / 1000)


def resumed_states(tracked: Tracked) -> dict[str, HealthState]:
    """States rebuilt from the written status, so a restart does not flap anything."""
    status = tracked.status
    thresholds = tracked.thresholds
    if status is None:
        return {iid: HealthState() for iid in tracked.plan.targets}
    healthy = status_mod.condition(status, "Healthy")
    reason = healthy.reason if healthy else "AwaitingFirstProbe"
    message = healthy.message if healthy else "not probed yet"
    if tracked.plan.service_ref is None or tracked.spec is None or tracked.spec.check_type() == "ttl":
        return {
            iid: HealthState.resumed(status.health, reason, message, thresholds)
            for iid in tracked.plan.targets
        }
    previous = {f"{i.address}:{i.port}": i for i in status.instances}
    states = {}
    for iid in tracked.plan.targets:
        seen = previous.get(iid)
        states[iid] = HealthState.resumed(
            seen.health if seen else None, (seen.reason if seen else None) or reason, message, thresholds
        )
    return states


def created_at_of(metadata: dict[str, Any]) -> float | None:
    raw = metadata.get("creationTimestamp")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def turning_failed(tracked: Tracked, results: Results, *, only_served: bool = False) -> dict[str, str]:
    """The instances this round's outcomes would turn Unhealthy (or Expired), with the reason
    seen; ``only_served``: only those in rotation now (a disruption, not a first verdict)."""
    failing = {}
    for iid, _, outcome in results:
        if outcome is None or outcome.passed:
            continue
        state = tracked.states.get(iid, HealthState())
        if only_served and state.health not in SERVED:
            continue
        after = health_mod.step(state, outcome, tracked.thresholds)
        if state.health not in FAILED and after.health in FAILED:
            failing[iid] = str(outcome.reason)
    return failing


def service_of(tracked: Tracked) -> str:
    """The logical service of a tracked registration (its name when the spec is not valid)."""
    return tracked.spec.service_name(tracked.key[1]) if tracked.spec is not None else tracked.key[1]


def probed(tracked: Tracked) -> bool:
    """Whether this registration is evaluated on a timer. A health check (a probe or a ttl)
    can change its verdict at any moment; ``type: none`` cannot, so it is evaluated when its
    own watch events say something changed. An invalid spec keeps its slow re-check."""
    spec = tracked.spec
    return spec is None or spec.health_check.type != "none"
