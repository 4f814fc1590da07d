"""The status a registration should have, and whether that differs from what is written.

Status follows Kubernetes API conventions: a summary ``health``, ``observedGeneration``, and
conditions Accepted, Healthy and Ready, each with a CamelCase reason and a
``lastTransitionTime`` that moves only when the condition's status changes. Comparing the
desired status with the one last seen on the resource is what keeps a steady fleet at zero
API writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from svcreg.health import GOOD
from svcreg.model import Health


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
    instances: tuple[dict[str, Any], ...] | None = None  # serviceRef only


def _conditions(verdict: Verdict) -> list[dict[str, Any]]:
    health = verdict.health
    if health in GOOD:
        healthy = "True"
    elif health in (Health.UNKNOWN, Health.MAINTENANCE):
        healthy = "Unknown"
    else:
        healthy = "False"
    ready = verdict.accepted and health in GOOD
    if ready:
        ready_reason, ready_message = "InRotation", "served by discovery"
    elif health == Health.MAINTENANCE:
        ready_reason, ready_message = "Maintenance", "in maintenance: kept, reported, never discovered"
    elif not verdict.accepted:
        ready_reason, ready_message = verdict.accepted_reason, verdict.accepted_message
    else:
        ready_reason, ready_message = verdict.reason, f"{health}: {verdict.message}"
    return [
        {
            "type": "Accepted",
            "status": "True" if verdict.accepted else "False",
            "reason": verdict.accepted_reason,
            "message": verdict.accepted_message,
        },
        {"type": "Healthy", "status": healthy, "reason": verdict.reason, "message": verdict.message},
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": ready_reason,
            "message": ready_message,
        },
    ]


def desired(previous: dict[str, Any] | None, verdict: Verdict, now: str) -> dict[str, Any]:
    """The full status to write, carrying lastTransitionTime over where status did not change."""
    previous = previous or {}
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for condition in _conditions(verdict):
        before = old.get(condition["type"])
        moved = before is None or before.get("status") != condition["status"]
        condition["lastTransitionTime"] = now if moved else before.get("lastTransitionTime", now)  # type: ignore[union-attr]
        condition["observedGeneration"] = verdict.generation
        condition["message"] = condition["message"][:4096]
        conditions.append(condition)
    status: dict[str, Any] = {
        "health": str(verdict.health),
        "observedGeneration": verdict.generation,
        "conditions": conditions,
    }
    if verdict.instances is not None:
        status["instances"] = list(verdict.instances)
    elif previous.get("instances"):
        status["instances"] = None  # merge patch: remove a list left from a former serviceRef
    return status


def _normal(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v not in (None, [])}


def differs(previous: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether writing ``wanted`` would change anything a reader can see."""
    return _normal(previous or {}) != _normal(wanted)


def health_since(status: dict[str, Any] | None) -> str | None:
    """When the Healthy condition last changed, i.e. since when the current health holds."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Healthy":
            since: str | None = condition.get("lastTransitionTime")
            return since
    return None
