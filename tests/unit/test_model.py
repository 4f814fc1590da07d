"""Behaviour of the resource model that the schema comparison cannot show."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from svcreg.core.model import Capability, HealthCheck, ServiceRegistration, ServiceRegistrationSpec


def _spec(**fields: Any) -> ServiceRegistrationSpec:
    return ServiceRegistrationSpec.model_validate({"endpoint": "http://a.b.svc:8000", **fields})


def test_capability_shorthand_is_an_object_with_a_name() -> None:
    spec = _spec(capabilities=["greet", {"name": "farewell", "version": "1.2.3"}])
    assert spec.capabilities == [Capability(name="greet"), Capability(name="farewell", version="1.2.3")]


@pytest.mark.parametrize(
    ("endpoint", "check"),
    [("http://a:1", "http"), ("https://a:1", "http"), ("grpc://a:50051", "grpc"), ("tcp://a:5432", "tcp")],
)
def test_check_type_follows_the_endpoint_scheme(endpoint: str, check: str) -> None:
    assert _spec(endpoint=endpoint).check_type() == check


def test_explicit_check_type_wins_and_service_ref_defaults_to_tcp() -> None:
    assert _spec(healthCheck={"type": "ttl"}).check_type() == "ttl"
    ref = ServiceRegistrationSpec.model_validate({"serviceRef": {"name": "web", "port": "http"}})
    assert ref.check_type() == "tcp"


def test_service_defaults_to_the_instance_name() -> None:
    registration = ServiceRegistration.model_validate(
        {"metadata": {"name": "orders-1", "namespace": "shop"}, "spec": {"endpoint": "http://a:1"}}
    )
    assert registration.service == "orders-1"
    assert registration.key == ("shop", "orders-1")
    assert _spec(service="orders").service_name("orders-1") == "orders"


def test_expected_status_ranges() -> None:
    assert HealthCheck(expected_status="200,204,300-399").expected_codes() == [
        (200, 200),
        (204, 204),
        (300, 399),
    ]


def test_errors_name_the_field() -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        _spec(healthCheck={"intervalSeconds": 2, "timeoutSeconds": 3})
    assert "spec.healthCheck.timeoutSeconds must be below" in str(error.value)
    with pytest.raises(pydantic.ValidationError) as error:
        _spec(endpoint="tcp://db.svc")
    assert "spec.endpoint needs a port" in str(error.value)


def test_defaults_match_what_the_api_server_fills_in() -> None:
    dumped = _spec().model_dump(by_alias=True, exclude_none=True)
    assert dumped["weight"] == 100 and dumped["maintenance"] is False
    assert dumped["healthCheck"]["intervalSeconds"] == 10
    assert dumped["healthCheck"]["timeoutSeconds"] == 2


def test_capability_contracts_are_bounded_json_schemas() -> None:
    import pydantic  # noqa: PLC0415

    from svcreg.core.contracts import contract_problem  # noqa: PLC0415
    from svcreg.core.model import ServiceRegistrationSpec  # noqa: PLC0415

    def spec(schema: object) -> ServiceRegistrationSpec:
        return ServiceRegistrationSpec.model_validate(
            {"endpoint": "http://x:80", "capabilities": [{"name": "c", "outputSchema": schema}]}
        )

    assert contract_problem(spec({"type": ["object", "null"], "properties": {"a": True}})) is None
    # The shape the policy checks at apply is refused by the model too...
    for wrong in ("text", {"type": "objekt"}, {"required": "a"}, {str(i): 1 for i in range(65)}):
        with pytest.raises(pydantic.ValidationError):
            spec(wrong)
    with pytest.raises(pydantic.ValidationError, match="16384 bytes"):
        spec({"description": "x" * 17_000})
    # ...and what only the JSON Schema meta-schema knows is found by contract_problem.
    problem = contract_problem(spec({"type": "object", "minProperties": -1}))
    assert problem is not None and problem[0] == "spec.capabilities[0].outputSchema"
