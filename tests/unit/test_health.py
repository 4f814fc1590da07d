from __future__ import annotations

from svcreg.core.model import Health
from svcreg.operator.health import HealthState, Thresholds, step
from svcreg.operator.probes.base import Outcome, Reason
from svcreg.operator.reconcile import aggregate

PASS = Outcome.ok(0.01)
SLOW = Outcome.ok(2.0)
FAIL = Outcome.fail(Reason.CONNECTION_REFUSED, "refused", connection_level=True)


def run(outcomes: list[Outcome], thresholds: Thresholds, start: HealthState | None = None) -> list[Health]:
    states = []
    state = start or HealthState()
    for outcome in outcomes:
        state = step(state, outcome, thresholds)
        states.append(state.health)
    return states


def test_unknown_until_the_first_result_reaches_its_threshold() -> None:
    assert HealthState().health == Health.UNKNOWN
    assert run([PASS, PASS], Thresholds(success=2)) == [Health.UNKNOWN, Health.HEALTHY]
    assert run([FAIL, FAIL, FAIL], Thresholds(failure=3)) == [
        Health.UNKNOWN,
        Health.UNKNOWN,
        Health.UNHEALTHY,
    ]


def test_failure_threshold_absorbs_flaps() -> None:
    healthy = HealthState(Health.HEALTHY, "ProbeSucceeded", "ok", successes=1)
    flapping = [FAIL, FAIL, PASS, FAIL, FAIL, PASS]
    assert set(run(flapping, Thresholds(failure=3), healthy)) == {Health.HEALTHY}
    assert run([FAIL, FAIL, FAIL], Thresholds(failure=3), healthy)[-1] == Health.UNHEALTHY


def test_success_threshold_needs_consecutive_passes_to_recover() -> None:
    unhealthy = HealthState(Health.UNHEALTHY, "ConnectionRefused", "x", failures=3)
    assert run([PASS, FAIL, PASS, PASS, PASS], Thresholds(success=3), unhealthy) == [Health.UNHEALTHY] * 4 + [
        Health.HEALTHY
    ]


def test_slow_pass_is_degraded_and_a_fast_one_heals_it() -> None:
    thresholds = Thresholds(degraded_latency=1.5)
    assert run([SLOW, PASS], thresholds) == [Health.DEGRADED, Health.HEALTHY]
    state = step(HealthState(), SLOW, thresholds)
    assert state.reason == Reason.SLOW_RESPONSE and "1500ms" in state.message
    assert run([SLOW], Thresholds(degraded_latency=0)) == [Health.HEALTHY]


def test_forbidden_target_is_unhealthy_at_once() -> None:
    forbidden = Outcome.fail(Reason.TARGET_FORBIDDEN, "metadata address")
    state = step(HealthState(), forbidden, Thresholds(failure=5))
    assert (state.health, state.reason) == (Health.UNHEALTHY, Reason.TARGET_FORBIDDEN)


def test_expired_heartbeat_gives_expired() -> None:
    expired = Outcome.fail(Reason.HEARTBEAT_EXPIRED, "no heartbeat")
    assert step(HealthState(), expired, Thresholds(failure=1)).health == Health.EXPIRED


def test_resumed_state_agrees_with_the_next_matching_probe() -> None:
    thresholds = Thresholds(success=3, failure=3)
    healthy = HealthState.resumed(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", thresholds)
    assert step(healthy, Outcome.ok(0.01, "HTTP 200"), thresholds) == HealthState(
        Health.HEALTHY, Reason.PROBE_SUCCEEDED, "HTTP 200", 4, 0
    )
    unhealthy = HealthState.resumed(Health.UNHEALTHY, "ConnectionRefused", "m", thresholds)
    assert step(unhealthy, FAIL, thresholds).health == Health.UNHEALTHY
    assert HealthState.resumed(None, "", "", thresholds) == HealthState()


def test_aggregate() -> None:
    h, d, u, k = Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY, Health.UNKNOWN
    assert aggregate([h, h]) == h
    assert aggregate([h, d]) == d
    assert aggregate([h, u]) == d
    assert aggregate([u, u]) == u
    assert aggregate([]) == u
    assert aggregate([k, k]) == k
