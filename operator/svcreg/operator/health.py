"""The health state machine: probe outcomes and thresholds in, health and reason out.

Pure and clock-free, so flapping, thresholds and Degraded are unit-tested without a network.
Thresholds work as Kubernetes probes' do: ``successThreshold`` consecutive passes to become
Healthy, ``failureThreshold`` consecutive failures to become Unhealthy; a result that does not
reach its threshold changes nothing a reader can see.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from svcreg.core.health import FAILED, SERVED, Health
from svcreg.operator.probes.base import Outcome, Reason


@dataclass(frozen=True, slots=True)
class Thresholds:
    success: int = 1
    failure: int = 3
    degraded_latency: float = 0.0  # seconds; 0 disables Degraded-by-latency


@dataclass(frozen=True, slots=True)
class HealthState:
    health: Health = Health.UNKNOWN
    reason: str = "AwaitingFirstProbe"
    message: str = "not probed yet"
    successes: int = 0
    failures: int = 0

    @staticmethod
    def resumed(health: Health | None, reason: str, message: str, thresholds: Thresholds) -> HealthState:
        """State rebuilt from a written status after a restart, so the next probe that agrees
        with it changes nothing (no flapping to Unknown)."""
        if health in SERVED:
            return HealthState(health, reason, message, successes=thresholds.success)
        if health in FAILED:
            return HealthState(health, reason, message, failures=thresholds.failure)
        return HealthState()


def step(state: HealthState, outcome: Outcome, thresholds: Thresholds) -> HealthState:
    """The state after one probe outcome."""
    if outcome.reason == Reason.TARGET_FORBIDDEN:
        # Never probed at all: no threshold to wait for.
        return HealthState(Health.UNHEALTHY, outcome.reason, outcome.message, failures=thresholds.failure)
    if outcome.passed:
        successes = state.successes + 1
        slow = thresholds.degraded_latency > 0 and outcome.latency > thresholds.degraded_latency
        if state.health not in SERVED and successes < thresholds.success:
            return replace(state, successes=successes, failures=0)
        if outcome.degraded:
            return HealthState(Health.DEGRADED, outcome.reason, outcome.message, successes, 0)
        if slow:
            message = f"passing, but slower than {thresholds.degraded_latency * 1000:.0f}ms"
            return HealthState(Health.DEGRADED, Reason.SLOW_RESPONSE, message, successes, 0)
        return HealthState(Health.HEALTHY, outcome.reason, outcome.message, successes, 0)
    failures = state.failures + 1
    if state.health not in FAILED and failures < thresholds.failure:
        return replace(state, successes=0, failures=failures)
    health = Health.EXPIRED if outcome.reason == Reason.HEARTBEAT_EXPIRED else Health.UNHEALTHY
    return HealthState(health, outcome.reason, outcome.message, 0, failures)
