"""Health semantics beyond one check's passes and failures, on the real API server: verified
capability contracts, shadow health checks and the health disruption budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import AppTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

AUDIENCE = "svcreg"
CHECK = {"path": "/health", "intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}


@dataclass
class Stage:
    operator: OperatorProcess
    ns: str
    token: str
    target: AppTarget

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.operator.port}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def names(self, path: str, **params: Any) -> list[str]:
        answer = self.get(path, **params)
        assert answer.status_code == 200, answer.text
        return sorted(i["name"] for i in answer.json()["items"])


@pytest.fixture(scope="module")
def stage(k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    ns = k8s.create_namespace("hs")
    k8s.create_service_account(ns, "reader")
    k8s.grant(ns, "reader", ["get", "list", "watch"])
    target = AppTarget("app")
    operator = OperatorProcess(
        control_plane, tmp_path_factory.mktemp("semantics") / "operator.log",
        "--namespace", ns, "--probe-allow", "127.0.0.0/8", "--token-audience", AUDIENCE,
    ).start()  # fmt: skip
    try:
        yield Stage(operator, ns, k8s.token(ns, "reader", [AUDIENCE]), target)
    finally:
        operator.stop()
        target.close()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


def _get(k8s: Kube, kind: str, name: str, ns: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(k8s.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)
    return found


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def _wait_health(k8s: Kube, ns: str, health: str, *names: str) -> None:
    for name in names:
        k8s.kubectl(
            "wait", f"--for=jsonpath={{.status.health}}={health}", f"svcreg/{name}", "-n", ns, "--timeout=60s"
        )


# -- verified capability contracts ---------------------------------------------------------------

ANSWER = {"type": "object", "required": ["target", "path"], "properties": {"target": {"type": "string"}}}


def test_a_contract_without_an_output_schema_is_refused_at_apply(k8s: Kube, stage: Stage) -> None:
    spec = {
        "endpoint": stage.target.url,
        "capabilities": [{"name": "lookup", "contract": {"path": "/lookup"}}],
    }
    refused = k8s.apply(registration("no-schema", spec), stage.ns, check=False)
    assert refused.returncode != 0
    assert "spec.capabilities[0].contract: needs an outputSchema" in refused.stderr


def test_a_capability_is_verified_only_when_its_contract_answer_validates(k8s: Kube, stage: Stage) -> None:
    """The prober sends each contract and records ContractVerified per capability; discovery's
    verified=true answers only instances whose contract passed, and each capability says so."""
    kept = {
        "name": "lookup",
        "outputSchema": ANSWER,
        "contract": {"method": "POST", "path": "/lookup", "body": {"q": 1}},
    }
    broken = {
        "name": "lookup",
        "outputSchema": {"type": "object", "required": ["answer"]},
        "contract": {"path": "/lookup"},
    }
    for name, capability in (("kept", kept), ("broken", broken)):
        spec = {
            "service": "lookups",
            "endpoint": stage.target.url,
            "healthCheck": CHECK,
            "capabilities": [capability],
        }
        k8s.apply(registration(name, spec), stage.ns)
    for name, status in (("kept", "True"), ("broken", "False")):
        k8s.kubectl(
            "wait", f"--for=jsonpath={{.status.capabilities[0].conditions[0].status}}={status}",
            f"svcreg/{name}", "-n", stage.ns, "--timeout=60s",
        )  # fmt: skip
    [checked] = _get(k8s, "svcreg", "broken", stage.ns)["status"]["capabilities"]
    [verified] = checked["conditions"]
    assert (checked["name"], verified["type"], verified["reason"]) == (
        "lookup",
        "ContractVerified",
        "SchemaViolation",
    )
    assert "'answer' is a required property" in verified["message"]
    assert stage.target.calls.get("/lookup", 0) >= 2
    _wait_health(k8s, stage.ns, "Healthy", "kept", "broken")
    stage.operator.wait_until(
        lambda: stage.names("/v1/capabilities/lookup", verified="true") == ["kept"],
        "verified=true to answer only the instance whose contract passed",
    )
    assert stage.names("/v1/capabilities/lookup") == ["broken", "kept"]  # unverified, still served
    assert stage.names("/v1/services", service="lookups", capability="lookup", verified="true") == ["kept"]
    views = {
        i["name"]: i["capabilities"][0]["verified"]
        for i in stage.get("/v1/services", service="lookups").json()["items"]
    }
    assert views == {"kept": True, "broken": False}
    bad = stage.get("/v1/services", service="lookups", verified="true")
    assert bad.status_code == 400 and "verified" in bad.text
    assert stage.operator.metric("svcreg_contract_checks_total", result="failed") >= 1


# -- shadow health checks ------------------------------------------------------------------------


def test_a_shadow_check_is_recorded_and_never_changes_an_answer(k8s: Kube, stage: Stage) -> None:
    """A policy's candidate check that fails where the real one passes: each registration says
    ShadowHealthy=False (it would pull it), the policy sums it up, the metric counts it, and
    discovery still serves both."""
    for name in ("shade-0", "shade-1"):
        k8s.apply(
            registration(name, {"service": "shade", "endpoint": stage.target.url, "healthCheck": CHECK}),
            stage.ns,
        )
    _wait_health(k8s, stage.ns, "Healthy", "shade-0", "shade-1")
    policy = {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServicePolicy",
        "metadata": {"name": "shade"},
        "spec": {"service": "shade", "shadowHealthCheck": {"path": "/missing", "failureThreshold": 1}},
    }
    k8s.apply(policy, stage.ns)
    for name in ("shade-0", "shade-1"):
        k8s.kubectl(
            "wait", "--for=condition=ShadowHealthy=false", f"svcreg/{name}", "-n", stage.ns, "--timeout=60s"
        )
    shadow = _condition(_get(k8s, "svcreg", "shade-0", stage.ns), "ShadowHealthy")
    assert shadow is not None and shadow["reason"] == "BadStatus"
    assert "would take this instance out of rotation" in shadow["message"]
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.shadow.wouldPull}=2", "svcpol/shade", "-n", stage.ns, "--timeout=60s"
    )
    summary = _get(k8s, "svcpol", "shade", stage.ns)["status"]["shadow"]
    assert summary == {"agree": 0, "wouldPull": 2, "wouldAdmit": 0, "disagreeing": ["shade-0", "shade-1"]}
    assert stage.operator.metric("svcreg_shadow_disagreements_total", direction="would_pull") >= 2
    assert stage.operator.metric("svcreg_shadow_disagreeing") >= 2
    # Never acted on: both stay Healthy, Ready and served.
    assert stage.names("/v1/services", service="shade") == ["shade-0", "shade-1"]
    for name in ("shade-0", "shade-1"):
        obj = _get(k8s, "svcreg", name, stage.ns)
        assert obj["status"]["health"] == "Healthy" and _condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    # Promoting a check means removing the shadow: the condition goes with it.
    k8s.kubectl(
        "patch",
        "svcpol",
        "shade",
        "-n",
        stage.ns,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/shadowHealthCheck"}]',
    )
    stage.operator.wait_until(
        lambda: _condition(_get(k8s, "svcreg", "shade-0", stage.ns), "ShadowHealthy") is None,
        "the ShadowHealthy condition to go with the shadow check",
    )


# -- health disruption budget --------------------------------------------------------------------


def _healthy_since(k8s: Kube, ns: str, name: str) -> str:
    condition = _condition(_get(k8s, "svcreg", name, ns), "Healthy")
    assert condition is not None
    return str(condition["lastTransitionTime"])


def test_past_its_disruption_budget_a_service_keeps_its_instances_until_confirmation(
    k8s: Kube, stage: Stage
) -> None:
    """Budget of one: the first instance to fail turns Unhealthy at once and spends it
    (BudgetExhausted on the policy, with an Event). Then a one-probe blip on a second instance
    is held and refuted by the re-probe, so it never leaves rotation (its Healthy condition never
    moves); a third that really dies is written Unhealthy once the re-probe confirms it."""
    paths = {"steady-a": "/a", "steady-b": "/b", "steady-c": "/c"}
    for name, path in paths.items():
        spec = {"service": "steady", "endpoint": stage.target.url, "healthCheck": {**CHECK, "path": path}}
        k8s.apply(registration(name, spec), stage.ns)
    policy = {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServicePolicy",
        "metadata": {"name": "steady"},
        "spec": {
            "service": "steady",
            "panicThresholdPercent": 0,
            "healthDisruptionBudget": {"maxUnhealthy": 1, "windowSeconds": 600, "maxHoldSeconds": 120},
        },
    }
    k8s.apply(policy, stage.ns)
    _wait_health(k8s, stage.ns, "Healthy", *paths)
    k8s.kubectl(
        "wait", "--for=condition=BudgetExhausted=false", "svcpol/steady", "-n", stage.ns, "--timeout=60s"
    )

    stage.target.failing["/a"] = -1  # a dies: within the budget, written at once
    _wait_health(k8s, stage.ns, "Unhealthy", "steady-a")
    k8s.kubectl("wait", "--for=condition=BudgetExhausted", "svcpol/steady", "-n", stage.ns, "--timeout=60s")
    policy_status = _get(k8s, "svcpol", "steady", stage.ns)["status"]
    assert policy_status["budget"] == {"allowed": 1, "spent": 1}
    events = k8s.core.list_namespaced_event(stage.ns, field_selector="involvedObject.name=steady")
    assert any(
        e.reason == "BudgetExhausted" and e.involved_object.kind == "ServicePolicy" for e in events.items
    )

    since = _healthy_since(k8s, stage.ns, "steady-b")
    before = stage.target.calls.get("/b", 0)
    stage.target.failing["/b"] = 1  # b blips once
    stage.operator.wait_until(
        lambda: stage.target.failing["/b"] == 0 and stage.target.calls.get("/b", 0) >= before + 4,
        "b's blip and the probes after it",
    )
    assert _healthy_since(k8s, stage.ns, "steady-b") == since
    assert _get(k8s, "svcreg", "steady-b", stage.ns)["status"]["health"] == "Healthy"
    events = k8s.core.list_namespaced_event(stage.ns, field_selector="involvedObject.name=steady-b")
    assert "BudgetExhausted" in {e.reason for e in events.items}
    assert stage.operator.metric("svcreg_budget_holds_total", outcome="held") >= 1

    stage.target.failing["/c"] = -1  # c really dies: confirmed by the re-probe, then written
    _wait_health(k8s, stage.ns, "Unhealthy", "steady-c")
    assert stage.operator.metric("svcreg_budget_holds_total", outcome="confirmed") >= 1
    stage.target.failing.clear()
