from __future__ import annotations

from svcreg.core.model import Condition, Health, InstanceStatus, ServiceRegistrationStatus
from svcreg.operator import status

HEALTHY = status.Verdict(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", generation=2)


def conditions(s: ServiceRegistrationStatus) -> dict[str, Condition]:
    return {c.type: c for c in s.conditions}


def test_first_visit_sets_every_condition() -> None:
    first = status.desired(
        None, status.Verdict(Health.UNKNOWN, "AwaitingFirstProbe", "not probed yet", 1), "T1"
    )
    by_type = conditions(first)
    assert set(by_type) == {"Accepted", "Healthy", "Ready"}
    assert by_type["Healthy"].status == "Unknown" and by_type["Ready"].status == "False"
    assert all(c.observed_generation == 1 and c.last_transition_time == "T1" for c in first.conditions)
    patch = status.to_patch(None, first)
    assert ServiceRegistrationStatus.model_validate(patch) == first  # round-trips the CRD's shape
    assert patch["conditions"][0]["lastTransitionTime"] == "T1"


def test_last_transition_time_moves_only_when_status_changes() -> None:
    first = status.desired(None, HEALTHY, "T1")
    slower = status.Verdict(Health.DEGRADED, "SlowResponse", "slow", generation=2)
    second = status.desired(first, slower, "T2")
    assert conditions(second)["Healthy"].last_transition_time == "T1"  # still True
    assert conditions(second)["Healthy"].reason == "SlowResponse"
    down = status.desired(second, status.Verdict(Health.UNHEALTHY, "Timeout", "t", generation=2), "T3")
    assert conditions(down)["Healthy"].last_transition_time == "T3"
    assert conditions(down)["Ready"].last_transition_time == "T3"
    assert conditions(down)["Accepted"].last_transition_time == "T1"


def test_no_difference_means_no_write() -> None:
    first = status.desired(None, HEALTHY, "T1")
    assert not status.differs(first, status.desired(first, HEALTHY, "T9"))
    assert status.differs(
        first, status.desired(first, status.Verdict(Health.HEALTHY, "P", "m", generation=3), "T9")
    )


def test_maintenance_is_never_ready() -> None:
    maintained = status.desired(None, status.Verdict(Health.MAINTENANCE, "Maintenance", "m", 1), "T")
    ready = conditions(maintained)["Ready"]
    assert (ready.status, ready.reason) == ("False", "Maintenance")


def test_instances_left_from_a_service_ref_are_removed() -> None:
    address = InstanceStatus(address="10.0.0.1", port=80, health=Health.HEALTHY)
    with_instances = status.desired(
        None, status.Verdict(Health.HEALTHY, "A", "m", 1, instances=(address,)), "T"
    )
    assert status.to_patch(None, with_instances)["instances"] == [
        {"address": "10.0.0.1", "port": 80, "health": "Healthy"}
    ]
    after = status.desired(with_instances, HEALTHY, "T")
    assert status.to_patch(with_instances, after)["instances"] is None
    assert status.health_since(with_instances) == "T"


def test_a_status_of_another_shape_is_treated_as_absent() -> None:
    assert status.parse({"health": "Healthy", "conditions": [{"type": "X"}]}) is None
    assert status.parse(None) is None


def test_equal_statuses_and_common_spec_parts_are_one_object() -> None:
    """Memory per registration: a converged fleet's equal statuses, and the health check,
    damping settings and capabilities registrations have in common, are shared (frozen models)."""
    from svcreg.core.contracts import spec_problem  # noqa: PLC0415
    from svcreg.operator import status as status_mod  # noqa: PLC0415

    raw = {
        "health": "Healthy",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Healthy", "status": "True", "reason": "Probe", "message": "HTTP 200",
             "lastTransitionTime": "2026-12-03T09:00:00Z"},
        ],
    }  # fmt: skip
    assert status_mod.parse(raw) is status_mod.parse(dict(raw))
    assert status_mod.parse(raw) is not status_mod.parse({**raw, "observedGeneration": 2})
    specs = [
        spec_problem(
            {"endpoint": f"http://10.0.0.{i}:80", "capabilities": ["greet"], "healthCheck": {"path": "/hz"}}
        )[0]
        for i in (1, 2)
    ]
    a, b = specs
    assert a is not None and b is not None and a.endpoint != b.endpoint
    assert a.health_check is b.health_check and a.flap_damping is b.flap_damping
    assert a.capabilities[0] is b.capabilities[0]
    assert a.model_fields_set is b.model_fields_set  # one set of given field names for both
    assert b.model_copy(update={"weight": 5}).model_fields_set is not b.model_fields_set
    assert "weight" not in b.model_fields_set  # a changed copy never writes the shared set
