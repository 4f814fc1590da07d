"""Reconcile, as pure functions of (observed object, probe results, now).

What health a registration has, which Event a transition posts, and whether it is due for
deregistration are decided here with no API and no clock of their own, so every decision is
unit-tested as a plain function. The prober gathers the inputs; the status writer carries out
the results.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from svcreg.core.health import FAILED, SERVED, Health
from svcreg.core.model import InstanceStatus, ServiceRegistrationSpec, ServiceRegistrationStatus
from svcreg.operator import status as status_mod
from svcreg.operator.health import HealthState
from svcreg.operator.targets import Plan


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to post on the registration."""

    type: str  # Normal | Warning
    reason: str
    message: str
    action: str = "Probe"


@dataclass(frozen=True)
class Deregistration:
    """The decision to delete a registration that stayed failed past deregisterAfterSeconds."""

    elapsed: float
    event: EventSpec


def verdict(
    spec: ServiceRegistrationSpec | None, generation: int, plan: Plan, states: dict[str, HealthState]
) -> status_mod.Verdict:
    """The registration's health from its plan and the per-target health states."""
    common = {
        "generation": generation,
        "accepted": plan.accepted,
        "accepted_reason": plan.reason,
        "accepted_message": plan.message,
    }
    if not plan.accepted:
        return status_mod.Verdict(
            Health.UNHEALTHY if spec else Health.UNKNOWN,
            plan.reason,
            plan.message,
            **common,  # type: ignore[arg-type]
        )
    if spec is not None and spec.maintenance:
        return status_mod.Verdict(Health.MAINTENANCE, "Maintenance", "spec.maintenance is true", **common)  # type: ignore[arg-type]
    if plan.service_ref is None or (spec is not None and spec.check_type() == "ttl"):
        state = states.get("", HealthState())
        return status_mod.Verdict(state.health, state.reason, state.message, **common)  # type: ignore[arg-type]
    instances = tuple(
        InstanceStatus(
            address=plan.addresses[iid].ip,
            port=plan.addresses[iid].port,
            health=states[iid].health,
            reason=states[iid].reason,
            target_ref=plan.addresses[iid].target_ref or None,
        )
        for iid in sorted(plan.targets)
    )
    healths = [states[iid].health for iid in plan.targets]
    overall = aggregate(healths)
    good = sum(1 for h in healths if h in SERVED)
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
    return status_mod.Verdict(overall, reason, message, instances=instances, **common)  # type: ignore[arg-type]


def aggregate(healths: list[Health]) -> Health:
    """A serviceRef registration's health from its instances': Healthy when all are, Degraded
    when some are, Unhealthy when none (or there are none)."""
    if not healths:
        return Health.UNHEALTHY
    good = sum(1 for h in healths if h in SERVED)
    if good == len(healths):
        return Health.HEALTHY if all(h == Health.HEALTHY for h in healths) else Health.DEGRADED
    if good:
        return Health.DEGRADED
    if all(h == Health.UNKNOWN for h in healths):
        return Health.UNKNOWN
    return Health.UNHEALTHY


def transition_event(before: Health | None, after: status_mod.Verdict) -> EventSpec | None:
    """The Event for a written change of health; None for the first visit (nothing learnt)."""
    if after.health in (Health.UNKNOWN, before):
        return None
    kind = "Warning" if after.health in (*FAILED, Health.DEGRADED) else "Normal"
    return EventSpec(
        kind, str(after.health), f"{before or Health.UNKNOWN} -> {after.health}: {after.message}"
    )


@dataclass(frozen=True)
class Published:
    """What the written status says, as far as Events are concerned."""

    health: Health | None
    damped: bool
    ejected: bool


def events_for(before: Published, verdict: status_mod.Verdict) -> list[EventSpec]:
    """The Events that writing ``verdict`` over ``before`` deserves, in the order they are
    posted: flap damping starting or ending, an ejection starting or ending, a change of
    health (none for a first verdict)."""
    events = []
    if verdict.damped != before.damped:
        events.append(
            EventSpec("Warning", "Flapping", verdict.damped_message, action="Damp")
            if verdict.damped
            else EventSpec(
                "Normal", "FlapDampingEnded", "stable again: back in rotation when healthy", action="Damp"
            )
        )
    if verdict.ejected != before.ejected:
        events.append(
            EventSpec("Warning", "Ejected", verdict.ejected_message, action="Eject")
            if verdict.ejected
            else EventSpec(
                "Normal", "EjectionEnded", "ejection over: back in rotation when healthy", action="Eject"
            )
        )
    if before.health != verdict.health:
        changed = transition_event(before.health, verdict)
        if changed is not None:
            events.append(changed)
    return events


def deregistration(
    spec: ServiceRegistrationSpec | None,
    written: ServiceRegistrationStatus | None,
    now: datetime.datetime,
) -> Deregistration | None:
    """Whether a registration is due for deletion: failed (Unhealthy or Expired) for at least
    ``deregisterAfterSeconds`` by the Healthy condition's lastTransitionTime, a time the API
    server stored, so a restart or another replica's clock does not move the deadline."""
    if spec is None or spec.deregister_after_seconds <= 0 or written is None or written.health not in FAILED:
        return None
    since = status_mod.health_since(written)
    if since is None:
        return None
    try:
        started = datetime.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    elapsed = (now - started).total_seconds()
    if elapsed < spec.deregister_after_seconds:
        return None
    message = (
        f"{written.health} for {elapsed:.0f}s, over deregisterAfterSeconds="
        f"{spec.deregister_after_seconds}; deleting this registration"
    )
    return Deregistration(elapsed, EventSpec("Warning", "Deregistering", message, action="Deregister"))
