"""The admission webhook's review: the same verdict as the prober's, worded for kubectl."""

from __future__ import annotations

from typing import Any

from svcreg.operator.admission import review


def _request(operation: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    obj = None if spec is None else {"metadata": {"name": "r1"}, "spec": spec}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": operation, "name": "r1", "object": obj},
    }


def test_a_capability_schema_that_is_not_json_schema_is_refused_naming_the_field() -> None:
    spec = {
        "endpoint": "http://a.svc:80",
        "capabilities": [{"name": "x", "outputSchema": {"minProperties": -1}}],
    }
    answer = review(_request("CREATE", spec))
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview" and response["uid"] == "u-1"
    assert response["allowed"] is False and response["status"]["code"] == 422
    assert response["status"]["message"].startswith(
        'ServiceRegistration "r1" is invalid: spec.capabilities[0].outputSchema'
    )


def test_a_model_rule_is_refused_with_its_own_words() -> None:
    spec = {"endpoint": "http://a.svc:80", "healthCheck": {"intervalSeconds": 2, "timeoutSeconds": 5}}
    message = review(_request("UPDATE", spec))["response"]["status"]["message"]
    assert "spec.healthCheck.timeoutSeconds must be below spec.healthCheck.intervalSeconds" in message


def test_valid_specs_and_deletes_are_allowed() -> None:
    spec = {"endpoint": "http://a.svc:80", "capabilities": [{"name": "x", "inputSchema": {"type": "object"}}]}
    assert review(_request("CREATE", spec))["response"] == {"uid": "u-1", "allowed": True}
    assert review(_request("DELETE", None))["response"]["allowed"] is True
