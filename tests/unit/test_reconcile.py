"""Reconcile as pure functions: verdicts, transition Events and deregistration, no API."""

from __future__ import annotations

import datetime

from svcreg.core.model import Health, ServiceRegistrationSpec
from svcreg.operator import reconcile, status
from svcreg.operator.endpoints import Address
from svcreg.operator.health import HealthState
from svcreg.operator.probes.base import Target
from svcreg.operator.targets import Plan

SPEC = ServiceRegistrationSpec.model_validate({"endpoint": "http://a:80", "deregisterAfterSeconds": 60})
ONE = Plan(targets={"": Target(kind="http", host="a", port=80, timeout=1)})


def test_an_endpoint_verdict_is_its_one_state() -> None:
    state = HealthState(Health.UNHEALTHY, "Timeout", "no answer", failures=3)
    verdict = reconcile.verdict(SPEC, 4, ONE, {"": state})
    assert (verdict.health, verdict.reason, verdict.generation, verdict.accepted) == (
        Health.UNHEALTHY,
        "Timeout",
        4,
        True,
    )


def test_invalid_and_maintenance_verdicts() -> None:
    refused = Plan(accepted=False, reason="InvalidSpec", message="bad")
    assert reconcile.verdict(None, 1, refused, {}).health == Health.UNKNOWN
    assert reconcile.verdict(SPEC, 1, refused, {}).health == Health.UNHEALTHY
    kept = ServiceRegistrationSpec.model_validate({"endpoint": "http://a:80", "maintenance": True})
    assert reconcile.verdict(kept, 1, ONE, {"": HealthState(Health.HEALTHY)}).health == Health.MAINTENANCE


def test_a_service_ref_verdict_aggregates_its_addresses() -> None:
    spec = ServiceRegistrationSpec.model_validate({"serviceRef": {"name": "web"}})
    addresses = {f"10.0.0.{i}:80": Address(f"10.0.0.{i}", 80) for i in (1, 2)}
    targets = {iid: Target(kind="tcp", host=a.ip, port=80, timeout=1) for iid, a in addresses.items()}
    plan = Plan(targets=targets, addresses=addresses, service_ref=("ns", "web"))
    states = {"10.0.0.1:80": HealthState(Health.HEALTHY), "10.0.0.2:80": HealthState(Health.UNHEALTHY)}
    verdict = reconcile.verdict(spec, 1, plan, states)
    assert (verdict.health, verdict.reason) == (Health.DEGRADED, "SomeInstancesUnhealthy")
    assert [(i.address, i.health) for i in verdict.instances or ()] == [
        ("10.0.0.1", Health.HEALTHY),
        ("10.0.0.2", Health.UNHEALTHY),
    ]


def test_transition_events() -> None:
    down = status.Verdict(Health.UNHEALTHY, "Timeout", "no answer", 1)
    assert reconcile.transition_event(Health.HEALTHY, down) == reconcile.EventSpec(
        "Warning", "Unhealthy", "Healthy -> Unhealthy: no answer"
    )
    up = status.Verdict(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1)
    assert reconcile.transition_event(None, up) == reconcile.EventSpec(
        "Normal", "Healthy", "Unknown -> Healthy: HTTP 200"
    )
    assert reconcile.transition_event(Health.HEALTHY, up) is None
    assert reconcile.transition_event(Health.HEALTHY, status.Verdict(Health.UNKNOWN, "R", "m", 2)) is None


def test_deregistration_counts_from_the_stored_transition_time() -> None:
    failed_at = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
    written = status.desired(
        None, status.Verdict(Health.UNHEALTHY, "Timeout", "t", 1), failed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    soon = failed_at + datetime.timedelta(seconds=59)
    late = failed_at + datetime.timedelta(seconds=61)
    assert reconcile.deregistration(SPEC, written, soon) is None
    decision = reconcile.deregistration(SPEC, written, late)
    assert decision is not None and decision.event.reason == "Deregistering" and decision.elapsed == 61
    healthy = status.desired(None, status.Verdict(Health.HEALTHY, "P", "m", 1), "2026-01-01T12:00:00Z")
    assert reconcile.deregistration(SPEC, healthy, late) is None
    never = ServiceRegistrationSpec.model_validate({"endpoint": "http://a:80"})
    assert reconcile.deregistration(never, written, late) is None
