"""The status a registration should have, as the typed status model, and whether it differs
from what is written.

Status follows Kubernetes API conventions: a summary ``health``, ``observedGeneration``, and
conditions Accepted, Healthy and Ready, each with a CamelCase reason and a
``lastTransitionTime`` that moves only when the condition's status changes (as
``meta.SetStatusCondition`` does). Comparing the desired status with the one last seen on the
resource is what keeps a steady fleet at zero API writes. Pure: no clock, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic

from svcreg.core import conditions
from svcreg.core.health import SERVED, Health
from svcreg.core.interning import Interner
from svcreg.core.model import (
    CapabilityStatus,
    Condition,
    ConditionStatus,
    InstanceStatus,
    ServiceRegistrationStatus,
)


@dataclass(frozen=True)
class Verdict:
    """Everything status is computed from."""

    health: Health
    reason: str
    message: str
    generation: int
    accepted: bool = True
    accepted_reason: str = "Valid"
    accepted_message: str = "spec is valid"
    instances: tuple[InstanceStatus, ...] | None = None  # serviceRef only
    # Flap damping (see damping.py): held out of rotation whatever the health says.
    damped: bool = False
    damped_message: str = ""
    # Passive health (see outliers.py): ejected on what real callers reported.
    ejected: bool = False
    ejected_message: str = ""
    # Multi-vantage quorum (see vantage.py): a failure the owner saw that other members did not.
    disagreement: str = ""
    # A ServicePolicy's shadow health check (see shadow.py): (status, reason, message) of the
    # ShadowHealthy condition, None when the service has no shadow check.
    shadow: tuple[ConditionStatus, str, str] | None = None
    # Verified capability contracts: (capability, passed, reason, message), by name.
    contracts: tuple[tuple[str, bool, str, str], ...] = ()


_parsed: Interner[ServiceRegistrationStatus | None] = Interner()


def parse(status: dict[str, Any] | None) -> ServiceRegistrationStatus | None:
    """A watched object's status as the model; None when absent or not svcreg's shape. Equal
    statuses (most of a converged fleet's) are parsed once and shared: the model is frozen."""
    if not status:
        return None
    return _parsed.get(json.dumps(status, sort_keys=True, separators=(",", ":")), lambda: _validate(status))


def _validate(status: dict[str, Any]) -> ServiceRegistrationStatus | None:
    try:
        return ServiceRegistrationStatus.model_validate(status)
    except pydantic.ValidationError:
        return None


def _conditions(verdict: Verdict) -> list[tuple[str, ConditionStatus, str, str]]:
    health = verdict.health
    healthy: ConditionStatus
    if health in SERVED:
        healthy = "True"
    elif health in (Health.UNKNOWN, Health.MAINTENANCE):
        healthy = "Unknown"
    else:
        healthy = "False"
    ready = verdict.accepted and health in SERVED and not verdict.damped and not verdict.ejected
    if ready:
        ready_reason, ready_message = "InRotation", "served by discovery"
    elif verdict.ejected and health in SERVED:
        ready_reason, ready_message = "Ejected", verdict.ejected_message
    elif verdict.damped and health in SERVED:
        ready_reason, ready_message = "Flapping", verdict.damped_message
    elif health == Health.MAINTENANCE:
        ready_reason, ready_message = "Maintenance", "in maintenance: kept, reported, never discovered"
    elif not verdict.accepted:
        ready_reason, ready_message = verdict.accepted_reason, verdict.accepted_message
    else:
        ready_reason, ready_message = verdict.reason, f"{health}: {verdict.message}"
    return [
        (
            "Accepted",
            "True" if verdict.accepted else "False",
            verdict.accepted_reason,
            verdict.accepted_message,
        ),
        ("Healthy", healthy, verdict.reason, verdict.message),
        ("Ready", "True" if ready else "False", ready_reason, ready_message),
    ]


def desired(
    previous: ServiceRegistrationStatus | None, verdict: Verdict, now: str
) -> ServiceRegistrationStatus:
    """The full status to write, carrying lastTransitionTime over where status did not change."""
    old = {c.type: c for c in previous.conditions} if previous else {}
    rows = _conditions(verdict)
    if verdict.damped:
        rows.append(("Flapping", "True", "Flapping", verdict.damped_message))
    elif "Flapping" in old:  # once there, it stays, saying the instance is stable again
        rows.append(("Flapping", "False", "Stable", "not flapping: in rotation when healthy"))
    if verdict.ejected:
        rows.append(("Ejected", "True", "OutlierDetected", verdict.ejected_message))
    elif "Ejected" in old:
        rows.append(("Ejected", "False", "Restored", "not ejected: in rotation when healthy"))
    if verdict.disagreement:
        rows.append(("VantageDisagreement", "True", "VantageDisagreement", verdict.disagreement))
    elif "VantageDisagreement" in old:
        rows.append(("VantageDisagreement", "False", "Agreed", "the members that probe it agree"))
    if verdict.shadow is not None:  # gone with the shadow check: it describes nothing then
        rows.append(("ShadowHealthy", *verdict.shadow))
    now_holding = [
        conditions.transition(old.get(row[0]), *row, generation=verdict.generation, now=now) for row in rows
    ]
    checked = {c.name: {k.type: k for k in c.conditions} for c in previous.capabilities} if previous else {}
    capabilities = [
        CapabilityStatus(
            name=name,
            conditions=[
                conditions.transition(
                    checked.get(name, {}).get("ContractVerified"),
                    "ContractVerified",
                    "True" if passed else "False",
                    reason,
                    message,
                    generation=verdict.generation,
                    now=now,
                )
            ],
        )
        for name, passed, reason, message in verdict.contracts
    ]
    return ServiceRegistrationStatus(
        health=verdict.health,
        observed_generation=verdict.generation,
        conditions=now_holding,
        instances=list(verdict.instances or ()),
        capabilities=capabilities,
    )


def to_patch(previous: ServiceRegistrationStatus | None, wanted: ServiceRegistrationStatus) -> dict[str, Any]:
    """``wanted`` as the body of a merge patch of ``status`` (which replaces lists whole)."""
    body: dict[str, Any] = wanted.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name in ("instances", "capabilities"):
        if not getattr(wanted, name):
            body.pop(name, None)
            if previous is not None and getattr(previous, name):
                body[name] = None  # remove a list left from a former spec
    return body


def differs(previous: ServiceRegistrationStatus | None, wanted: ServiceRegistrationStatus) -> bool:
    """Whether writing ``wanted`` would change anything a reader can see."""
    return previous != wanted


def condition(status: ServiceRegistrationStatus | None, kind: str) -> Condition | None:
    """The condition ``kind`` of ``status``, if it has one."""
    return conditions.find(status.conditions, kind) if status is not None else None


def health_since(status: ServiceRegistrationStatus | None) -> str | None:
    """When the Healthy condition last changed, i.e. since when the current health holds."""
    healthy = condition(status, "Healthy")
    return healthy.last_transition_time if healthy is not None else None


def holds(status: ServiceRegistrationStatus | None, kind: str) -> bool:
    """Whether the condition ``kind`` is True on ``status``."""
    return status is not None and conditions.holds(status.conditions, kind)
