"""Shadow health checks: a ServicePolicy's candidate check, run beside each registration's own
and recorded, never acted on.

The prober runs the shadow targets on the same job as the real ones and steps their own
health states with the shadow check's thresholds; what they conclude becomes the ShadowHealthy
condition (with whether it agrees with the real check) and a count in metrics. Nothing here
feeds the verdict discovery serves. The summary on the policy is read from the written
conditions, so every member of the prober group sums up the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from svcreg.core.health import FAILED, SERVED, Health
from svcreg.core.keys import Key
from svcreg.core.model import (
    ConditionStatus,
    HealthCheck,
    PolicyShadowStatus,
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
    ShadowHealthCheck,
)
from svcreg.operator import status as status_mod
from svcreg.operator.endpoints import EndpointCache
from svcreg.operator.health import HealthState, Thresholds
from svcreg.operator.targets import Plan, plan

MAX_LISTED = 20


def shadow_plan(
    spec: ServiceRegistrationSpec,
    check: ShadowHealthCheck,
    key: Key,
    endpoints: EndpointCache,
    created_at: float | None,
) -> Plan:
    """The targets the shadow check probes: the registration's, with its check swapped."""
    swapped = HealthCheck.model_validate(check.model_dump())
    return plan(spec.model_copy(update={"health_check": swapped}), key, endpoints, created_at)


def thresholds(check: ShadowHealthCheck) -> Thresholds:
    return Thresholds(check.success_threshold, check.failure_threshold, check.degraded_latency_ms / 1000)


def aggregate(states: Iterable[HealthState]) -> HealthState:
    """One state for the registration: the worst of its instances' (the first failing one's
    reason), or the first's when none fails."""
    listed = list(states)
    if not listed:
        return HealthState()
    for state in listed:
        if state.health in FAILED:
            return state
    for state in listed:
        if state.health not in SERVED:
            return state
    return listed[0]


def condition(policy: str, state: HealthState, real: Health) -> tuple[ConditionStatus, str, str]:
    """The ShadowHealthy condition (pure): the shadow check's verdict, and whether it agrees
    with the real check's."""
    status: ConditionStatus
    if state.health in SERVED:
        status = "True"
    elif state.health in FAILED:
        status = "False"
    else:
        status = "Unknown"
    agreement = ""
    if status != "Unknown" and real in SERVED | FAILED:
        if (status == "True") == (real in SERVED):
            agreement = "agrees with the real check"
        elif real in SERVED:
            agreement = "disagrees: it would take this instance out of rotation"
        else:
            agreement = "disagrees: it would serve this instance"
    message = f"shadow check of ServicePolicy {policy}: {state.message}" + (
        f"; {agreement}" if agreement else ""
    )
    return status, state.reason, message


def direction(status: ConditionStatus, real: Health | None) -> str | None:
    """``would_pull``, ``would_admit`` or None (agreement, or nothing known yet)."""
    if status == "Unknown" or real is None or real not in SERVED | FAILED:
        return None
    if status == "False" and real in SERVED:
        return "would_pull"
    if status == "True" and real in FAILED:
        return "would_admit"
    return None


@dataclass(frozen=True)
class Summary:
    agree: int = 0
    would_pull: int = 0
    would_admit: int = 0
    disagreeing: tuple[str, ...] = ()

    def as_status(self) -> PolicyShadowStatus:
        return PolicyShadowStatus(
            agree=self.agree,
            would_pull=self.would_pull,
            would_admit=self.would_admit,
            disagreeing=list(self.disagreeing),
        )


def summary(registrations: Iterable[tuple[str, ServiceRegistrationStatus | None]]) -> Summary:
    """What a service's registrations' ShadowHealthy conditions say, against their health (pure)."""
    agree = pull = admit = 0
    disagreeing = []
    for name, status in sorted(registrations, key=lambda r: r[0]):
        shadow = status_mod.condition(status, "ShadowHealthy")
        if shadow is None or status is None:
            continue
        way = direction(shadow.status, status.health)
        if way is None:
            agree += shadow.status != "Unknown"
            continue
        pull += way == "would_pull"
        admit += way == "would_admit"
        disagreeing.append(name)
    return Summary(agree, pull, admit, tuple(disagreeing[:MAX_LISTED]))
