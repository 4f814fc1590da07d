from __future__ import annotations

from svcreg import status
from svcreg.model import Health, ServiceRegistrationStatus

HEALTHY = status.Verdict(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", generation=2)


def conditions(s: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["type"]: c for c in s["conditions"]}


def test_first_visit_sets_every_condition() -> None:
    first = status.desired(
        None, status.Verdict(Health.UNKNOWN, "AwaitingFirstProbe", "not probed yet", 1), "T1"
    )
    by_type = conditions(first)
    assert set(by_type) == {"Accepted", "Healthy", "Ready"}
    assert by_type["Healthy"]["status"] == "Unknown" and by_type["Ready"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] == "T1" for c in first["conditions"])
    ServiceRegistrationStatus.model_validate(first)  # matches the CRD's status schema


def test_last_transition_time_moves_only_when_status_changes() -> None:
    first = status.desired(None, HEALTHY, "T1")
    slower = status.Verdict(Health.DEGRADED, "SlowResponse", "slow", generation=2)
    second = status.desired(first, slower, "T2")
    assert conditions(second)["Healthy"]["lastTransitionTime"] == "T1"  # still True
    assert conditions(second)["Healthy"]["reason"] == "SlowResponse"
    down = status.desired(second, status.Verdict(Health.UNHEALTHY, "Timeout", "t", generation=2), "T3")
    assert conditions(down)["Healthy"]["lastTransitionTime"] == "T3"
    assert conditions(down)["Ready"]["lastTransitionTime"] == "T3"
    assert conditions(down)["Accepted"]["lastTransitionTime"] == "T1"


def test_no_difference_means_no_write() -> None:
    first = status.desired(None, HEALTHY, "T1")
    assert not status.differs(first, status.desired(first, HEALTHY, "T9"))
    assert status.differs(
        first, status.desired(first, status.Verdict(Health.HEALTHY, "P", "m", generation=3), "T9")
    )


def test_maintenance_is_never_ready() -> None:
    maintained = status.desired(None, status.Verdict(Health.MAINTENANCE, "Maintenance", "m", 1), "T")
    assert conditions(maintained)["Ready"] == {
        **conditions(maintained)["Ready"],
        "status": "False",
        "reason": "Maintenance",
    }


def test_instances_left_from_a_service_ref_are_removed() -> None:
    with_instances = status.desired(
        None, status.Verdict(Health.HEALTHY, "A", "m", 1, instances=({"address": "10.0.0.1"},)), "T"
    )
    assert with_instances["instances"] == [{"address": "10.0.0.1"}]
    assert status.desired(with_instances, HEALTHY, "T")["instances"] is None
    assert status.health_since(with_instances) == "T"
