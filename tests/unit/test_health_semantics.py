"""Health semantics as pure decisions: the disruption budget, shadow checks, verified contracts
(what status, policies and discovery make of them)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from multidict import MultiDict

from svcreg.core.errors import BadParameter
from svcreg.core.health import Health
from svcreg.core.model import (
    Capability,
    Condition,
    Contract,
    DisruptionBudget,
    ServicePolicySpec,
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
)
from svcreg.discovery.index import Index
from svcreg.discovery.query import parse
from svcreg.operator import budget, shadow, status, verification
from svcreg.operator.health import HealthState
from svcreg.operator.policies import PolicyState, desired
from svcreg.operator.probes.judge import Verification, judge
from tests.unit.test_discovery_units import body

# -- the disruption budget -----------------------------------------------------------------------


def test_the_budget_allows_a_count_or_a_percentage_rounded_up() -> None:
    assert DisruptionBudget(max_unhealthy=2).allowed(10) == 2
    assert DisruptionBudget(max_unhealthy="25%").allowed(10) == 3
    assert DisruptionBudget(max_unhealthy="0%").allowed(10) == 0
    with pytest.raises(pydantic.ValidationError):
        DisruptionBudget(max_unhealthy="150%")


def _status(healthy: str, reason: str, since: str) -> ServiceRegistrationStatus:
    condition = Condition(type="Healthy", status=healthy, reason=reason, last_transition_time=since)
    return ServiceRegistrationStatus(conditions=[condition])


NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_spent_counts_probe_evidence_within_the_window_only() -> None:
    recent, old = "2027-01-15T07:59:00Z", "2027-01-15T07:00:00Z"
    statuses = [
        _status("False", "ConnectionRefused", recent),  # counts
        _status("False", "BadStatus", old),  # outside the window
        _status("False", "HeartbeatExpired", recent),  # not a probe's evidence
        _status("True", "ProbeSucceeded", recent),  # healthy
        None,  # never written
    ]
    assert budget.spent(statuses, NOW, window=300) == 1
    assert budget.spent(statuses, NOW, window=3600) == 2


def test_past_the_budget_a_transition_waits_to_be_confirmed_and_never_longer_than_the_hold() -> None:
    within, spent = budget.Standing(allowed=2, spent=1), budget.Standing(allowed=1, spent=1)
    assert budget.decide(within, None, 100.0, 60, None).hold == budget.Hold.WRITE
    first = budget.decide(spent, None, 100.0, 60, None)
    assert (first.hold, first.outcome, first.held_since) == (budget.Hold.WAIT, "held", 100.0)
    # The re-probe fails too and no other member sees it pass: confirmed.
    assert budget.decide(spent, 100.0, 101.0, 60, None).outcome == "confirmed"
    assert budget.decide(spent, 100.0, 101.0, 60, False).hold == budget.Hold.WRITE
    # Another member sees it pass: still held, from the same start ...
    refuted = budget.decide(spent, 100.0, 101.0, 60, True)
    assert (refuted.hold, refuted.held_since) == (budget.Hold.WAIT, 100.0)
    # ... but never past maxHoldSeconds: a real outage is written, only later.
    expired = budget.decide(spent, 100.0, 160.0, 60, True)
    assert (expired.hold, expired.outcome) == (budget.Hold.WRITE, "expired")


# -- shadow checks -------------------------------------------------------------------------------


def test_the_shadow_condition_says_whether_it_agrees_with_the_real_check() -> None:
    failing = HealthState(Health.UNHEALTHY, "BadStatus", "GET /ready answered HTTP 503")
    passing = HealthState(Health.HEALTHY, "ProbeSucceeded", "HTTP 200")
    pulled = shadow.condition("strict", failing, Health.HEALTHY)
    assert pulled[:2] == ("False", "BadStatus") and "would take this instance out of rotation" in pulled[2]
    assert "ServicePolicy strict" in pulled[2]
    admitted = shadow.condition("strict", passing, Health.UNHEALTHY)
    assert admitted[0] == "True" and "would serve this instance" in admitted[2]
    assert "agrees" in shadow.condition("strict", passing, Health.HEALTHY)[2]
    assert shadow.condition("strict", HealthState(), Health.HEALTHY)[0] == "Unknown"
    assert shadow.direction("False", Health.HEALTHY) == "would_pull"
    assert shadow.direction("True", Health.EXPIRED) == "would_admit"
    assert shadow.direction("True", Health.DEGRADED) is None
    assert shadow.direction("False", Health.UNKNOWN) is None


def test_the_policy_sums_up_shadow_conditions_from_statuses() -> None:
    def written(health: Health, shadow_status: str | None) -> ServiceRegistrationStatus:
        conditions = []
        if shadow_status is not None:
            conditions.append(
                Condition(type="ShadowHealthy", status=shadow_status, reason="r", last_transition_time="t")
            )
        return ServiceRegistrationStatus(health=health, conditions=conditions)

    found = shadow.summary(
        [
            ("d", written(Health.HEALTHY, "False")),
            ("a", written(Health.HEALTHY, "True")),
            ("c", written(Health.UNHEALTHY, "True")),
            ("b", written(Health.HEALTHY, "False")),
            ("e", written(Health.HEALTHY, None)),
            ("f", written(Health.HEALTHY, "Unknown")),
            ("g", None),
        ]
    )
    assert found == shadow.Summary(agree=1, would_pull=2, would_admit=1, disagreeing=("b", "c", "d"))


def test_a_shadow_check_is_a_probing_kind_with_its_own_field_names() -> None:
    spec = ServicePolicySpec.model_validate({"service": "pay", "shadowHealthCheck": {"path": "/ready"}})
    assert spec.shadow_health_check is not None and spec.shadow_health_check.path == "/ready"
    with pytest.raises(pydantic.ValidationError, match=r"spec\.shadowHealthCheck\.path must start with '/'"):
        ServicePolicySpec.model_validate({"service": "pay", "shadowHealthCheck": {"path": "ready"}})
    with pytest.raises(pydantic.ValidationError):
        ServicePolicySpec.model_validate({"service": "pay", "shadowHealthCheck": {"type": "ttl"}})


# -- registration status -------------------------------------------------------------------------


def test_status_carries_shadow_and_contract_conditions_and_moves_their_time_only_on_change() -> None:
    verdict = status.Verdict(
        Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1,
        shadow=("False", "BadStatus", "shadow says no"),
        contracts=(("lookup", True, "ContractKept", "ok"),),
    )  # fmt: skip
    first = status.desired(None, verdict, "t1")
    assert [c.type for c in first.conditions][-1] == "ShadowHealthy"
    [checked] = first.capabilities
    assert (checked.name, checked.conditions[0].type, checked.conditions[0].status) == (
        "lookup", "ContractVerified", "True",
    )  # fmt: skip
    same = status.desired(first, verdict, "t2")
    assert same == first and not status.differs(first, same)
    broken = status.Verdict(
        Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1,
        contracts=(("lookup", False, "SchemaViolation", "at answer: required"),),
    )  # fmt: skip
    later = status.desired(same, broken, "t3")
    assert later.capabilities[0].conditions[0].last_transition_time == "t3"
    assert "ShadowHealthy" not in {c.type for c in later.conditions}  # no shadow check any more
    cleared = status.to_patch(later, status.desired(later, status.Verdict(Health.HEALTHY, "r", "m", 1), "t4"))
    assert cleared["capabilities"] is None  # merge patch: the list is removed


def test_policy_status_has_the_budget_condition_when_a_budget_is_set() -> None:
    spent = PolicyState(
        "a", "p", "u", 1, "pay", 0, 2, 3, False, budget=budget.Standing(1, 1, window=300),
        shadow=shadow.Summary(agree=2),
    )  # fmt: skip
    written = desired(None, spent, "t1")
    condition = next(c for c in written["conditions"] if c["type"] == "BudgetExhausted")
    assert (condition["status"], condition["reason"]) == ("True", "BudgetSpent")
    assert written["budget"] == {"allowed": 1, "spent": 1}
    assert written["shadow"]["agree"] == 2
    plain = desired(written, PolicyState("a", "p", "u", 2, "pay", 0, 2, 3, False), "t2")
    assert plain["budget"] is None and plain["shadow"] is None
    assert [c["type"] for c in plain["conditions"]] == ["Panic"]


# -- verified contracts --------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "integer"}},
}
CONTRACT = Contract(path="/ask")


@pytest.mark.parametrize(
    ("code", "answer", "reason"),
    [
        (200, b'{"answer": 42}', "ContractKept"),
        (503, b'{"answer": 42}', "BadStatus"),
        (200, b"<html>", "NotJson"),
        (200, b'{"answer": "many"}', "SchemaViolation"),
        (200, b"{}", "SchemaViolation"),
    ],
)
def test_a_contract_answer_is_judged_against_the_output_schema(code: int, answer: bytes, reason: str) -> None:
    found = judge(code, answer, SCHEMA, f"{CONTRACT.method} {CONTRACT.path}")
    assert (found.passed, found.reason) == (reason == "ContractKept", reason)


def test_a_contract_needs_an_output_schema_and_a_clean_path() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs an outputSchema"):
        Capability.model_validate({"name": "ask", "contract": {"path": "/ask"}})
    with pytest.raises(pydantic.ValidationError, match="must not contain spaces"):
        Contract.model_validate({"path": "/ask\r\nHost: evil"})
    with pytest.raises(pydantic.ValidationError):
        Contract.model_validate({"path": "/ask", "intervalSeconds": 5})


def test_contracts_are_due_when_never_checked_or_past_their_interval() -> None:
    capability = Capability.model_validate(
        {"name": "ask", "outputSchema": SCHEMA, "contract": {"path": "/ask", "intervalSeconds": 60}}
    )
    spec = ServiceRegistrationSpec(
        endpoint="http://a.b:80", capabilities=[capability, Capability(name="plain")]
    )
    assert [c.name for c in verification.due(spec, {}, 10.0)] == ["ask"]
    checked = {"ask": (10.0, Verification(True, "ContractKept", "ok"))}
    assert verification.due(spec, checked, 69.0) == []
    assert verification.next_due(spec, checked, 40.0) == 30.0
    assert [c.name for c in verification.due(spec, checked, 70.0)] == ["ask"]
    assert verification.rows(spec, checked) == (("ask", True, "ContractKept", "ok"),)


def _verified_body(name: str, verified: bool) -> dict[str, Any]:
    found = body(name, service="lookups")
    found["spec"]["capabilities"] = [{"name": "ask", "outputSchema": SCHEMA, "contract": {"path": "/ask"}}]
    found["status"]["capabilities"] = [
        {
            "name": "ask",
            "conditions": [
                {"type": "ContractVerified", "status": "True" if verified else "False", "reason": "r"}
            ],
        }
    ]
    return found


def test_verified_true_answers_only_instances_whose_contract_passed() -> None:
    index = Index()
    index.observe("ADDED", _verified_body("kept", True))
    index.observe("ADDED", _verified_body("broken", False))
    query = parse(MultiDict(capability="ask", verified="true"), "services")
    assert sorted(i.name for i in index.candidates(query, None) if query.matches(i)) == ["kept"]
    everyone = parse(MultiDict(capability="ask"), "services")
    assert len([i for i in index.candidates(everyone, None) if everyone.matches(i)]) == 2
    broken = index.items[("a", "broken")]
    assert any("not verified" in r for r in query.why_not(broken))
    assert broken.view["capabilities"][0]["verified"] is False
    with pytest.raises(BadParameter, match="needs a capability"):
        parse(MultiDict(verified="true"), "services")
    with pytest.raises(BadParameter, match="not true or false"):
        parse(MultiDict(capability="ask", verified="yes"), "services")


# -- in the prober (real probes, a recording stand-in for the API) --------------------------------


async def test_the_prober_holds_a_transition_past_the_budget_until_a_re_probe_confirms_it() -> None:
    from tests.targets import http_target  # noqa: PLC0415
    from tests.unit.test_prober import RecordingApi, add, http_spec, make, registration  # noqa: PLC0415

    with http_target() as down, http_target() as blip:
        api = RecordingApi()
        prober = make(api)
        policy = ServicePolicySpec(
            service="pay", health_disruption_budget=DisruptionBudget(max_unhealthy=1, max_hold_seconds=60)
        )
        prober.policies = lambda namespace, service: ("pay", policy) if service == "pay" else None
        for name, target in (("a", down), ("b", blip)):
            add(
                api,
                prober,
                registration(name, {**http_spec(target.port, failureThreshold=1), "service": "pay"}),
            )
            await prober.probe_now(("ns", name))
        down.mode = "fail"
        await prober.probe_now(("ns", "a"))  # within the budget: written at once
        assert api.objects[("ns", "a")]["status"]["health"] == "Unhealthy"
        blip.mode = "fail"
        await prober.probe_now(("ns", "b"))  # past it: held
        assert api.objects[("ns", "b")]["status"]["health"] == "Healthy"
        assert ("b", "Warning", "BudgetExhausted") in api.events
        blip.mode = "ok"
        await prober.probe_now(("ns", "b"))  # the re-probe passes: refuted, nothing written
        assert api.objects[("ns", "b")]["status"]["health"] == "Healthy"
        assert prober.tracked[("ns", "b")].budget_held_since is None
        blip.mode = "fail"
        await prober.probe_now(("ns", "b"))  # held again ...
        await prober.probe_now(("ns", "b"))  # ... and confirmed by the re-probe
        assert api.objects[("ns", "b")]["status"]["health"] == "Unhealthy"
        assert prober.metrics.budget_holds.labels("confirmed")._value.get() == 1
        standing, _ = prober.policy_summary("ns", "pay")
        assert standing == budget.Standing(allowed=1, spent=2, window=300)


async def test_the_prober_records_a_shadow_check_and_never_acts_on_it() -> None:
    from tests.targets import http_target  # noqa: PLC0415
    from tests.unit.test_prober import RecordingApi, add, http_spec, make, registration  # noqa: PLC0415

    with http_target() as web:
        api = RecordingApi()
        prober = make(api)
        policy = ServicePolicySpec.model_validate(
            {"service": "pay", "shadowHealthCheck": {"port": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}}
        )
        prober.policies = lambda namespace, service: ("strict", policy) if service == "pay" else None
        add(api, prober, registration("a", {**http_spec(web.port), "service": "pay"}))
        await prober.probe_now(("ns", "a"))
        status = api.objects[("ns", "a")]["status"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert status["health"] == "Healthy" and conditions["Ready"]["status"] == "True"
        assert conditions["ShadowHealthy"]["status"] == "False"
        assert conditions["ShadowHealthy"]["reason"] == "ConnectionRefused"
        assert prober.metrics.shadow_disagreements.labels("would_pull")._value.get() == 1
        _, summary = prober.policy_summary("ns", "pay")
        assert summary == shadow.Summary(would_pull=1, disagreeing=("a",))
