"""The CRD and its capabilities policy against the real API server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from svcreg.core.model import ServiceRegistration
from svcreg.devtools import kubectl as kube
from svcreg.kube import errors as kube_errors
from svcreg.kube.api import KubeApi

from .kubehelpers import Kube


def _examples() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(Path(kube.EXAMPLES_DIR).glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_every_example_applies_and_reads_back_with_defaults(k8s: Kube, namespace: str) -> None:
    examples = _examples()
    assert len(examples) >= 8
    k8s.kubectl("apply", "-n", namespace, "-f", str(kube.EXAMPLES_DIR))
    for example in examples:
        stored = k8s.get_registration(namespace, example["metadata"]["name"])
        check = stored["spec"]["healthCheck"]
        assert stored["spec"]["weight"] == example["spec"].get("weight", 100)
        assert stored["spec"]["maintenance"] is False
        assert check["intervalSeconds"] == example["spec"].get("healthCheck", {}).get("intervalSeconds", 10)
        assert check["timeoutSeconds"] == example["spec"].get("healthCheck", {}).get("timeoutSeconds", 2)
        assert check["failureThreshold"] == example["spec"].get("healthCheck", {}).get("failureThreshold", 3)
        assert check["expectedStatus"] == "200-399"
        # What the API server stored, defaults included, is what the Python model reads with
        # its own defaults: the two agree.
        parsed = ServiceRegistration.model_validate(stored)
        assert parsed.spec.model_dump(by_alias=True, exclude_none=True) == ServiceRegistration.model_validate(
            {**example, "metadata": {**example["metadata"], "namespace": namespace}}
        ).spec.model_dump(by_alias=True, exclude_none=True)


def test_printer_columns(k8s: Kube, namespace: str) -> None:
    k8s.kubectl("apply", "-n", namespace, "-f", str(kube.EXAMPLES_DIR / "002-hello-service.yaml"))
    table = k8s.kubectl("get", "svcreg", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SERVICE", "VERSION", "HEALTH", "ENDPOINT", "AGE"]
    assert table[1].split()[:4] == [
        "hello-service",
        "hello-service",
        "1.0.0",
        "http://hello-service.default.svc:3000",
    ]
    wide = k8s.kubectl("get", "sreg", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME",
        "SERVICE",
        "VERSION",
        "HEALTH",
        "ENDPOINT",
        "AGE",
        "READY",
        "WEIGHT",
        "SERVICEREF",
        "DISPLAY",
    ]
    assert wide[1].endswith("Hello Service")  # spec.displayName, as seed 002 showed it
    categories = k8s.kubectl("get", "svcreg", "-n", namespace, "-o", "name").stdout.split()
    assert categories == ["serviceregistration.svcreg.io/hello-service"]


def test_kubectl_explain_reads_well(k8s: Kube) -> None:
    explained = k8s.kubectl("explain", "serviceregistration.spec.healthCheck.timeoutSeconds").stdout
    assert "must be below intervalSeconds" in explained


def test_status_cannot_be_changed_through_the_main_resource(k8s: Kube, namespace: str) -> None:
    manifest = _examples()[0]
    manifest["status"] = {"health": "Healthy"}
    k8s.apply(manifest, namespace)
    name = manifest["metadata"]["name"]
    assert "status" not in k8s.get_registration(namespace, name) or not k8s.get_registration(namespace, name)[
        "status"
    ].get("health")
    k8s.kubectl(
        "patch",
        "svcreg",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"status": {"health": "Healthy"}}),
    )
    assert k8s.get_registration(namespace, name).get("status", {}).get("health") is None
    # Through the status subresource it works, and the spec's generation does not move.
    generation = k8s.get_registration(namespace, name)["metadata"]["generation"]
    k8s.kubectl(
        "patch",
        "svcreg",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"health": "Healthy"}}),
    )
    stored = k8s.get_registration(namespace, name)
    assert stored["status"]["health"] == "Healthy"
    assert stored["metadata"]["generation"] == generation


def _base(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name},
        "spec": {"service": "orders", "version": "1.0.0", "endpoint": "http://orders.shop.svc:8000"},
    }


def _with(path: str, value: Any, *, remove: str | None = None) -> dict[str, Any]:
    manifest = _base("bad")
    if remove:
        del manifest["spec"][remove]
    if path:
        node = manifest
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return manifest


# (case id, manifest, a substring the API server's refusal must contain: the field it names)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "both-endpoint-and-ref",
        _with("spec.serviceRef", {"name": "orders"}),
        "exactly one of spec.endpoint and spec.serviceRef",
    ),
    (
        "neither-endpoint-nor-ref",
        _with("", None, remove="endpoint"),
        "exactly one of spec.endpoint and spec.serviceRef",
    ),
    ("endpoint-not-url", _with("spec.endpoint", "orders:8000/x y"), "spec.endpoint"),
    # Probe request smuggling: a line break in the path or a header would let a tenant make
    # the prober send arbitrary requests (or Redis commands) to an internal host.
    (
        "path-smuggles-a-request",
        _with("spec.healthCheck", {"path": "/ HTTP/1.1\r\nHost: x\r\n\r\nFLUSHALL\r\n"}),
        "spec.healthCheck.path must not contain spaces",
    ),
    ("path-with-a-space", _with("spec.healthCheck", {"path": "/health z"}), "spec.healthCheck.path"),
    (
        "header-smuggles-a-line",
        _with("spec.healthCheck", {"headers": {"X-A": "v\r\nX-B: smuggled"}}),
        "spec.healthCheck.headers values must not contain control characters",
    ),
    (
        "endpoint-bad-scheme",
        _with("spec.endpoint", "ftp://orders.shop.svc:21"),
        "spec.endpoint scheme must be",
    ),
    ("endpoint-tcp-no-port", _with("spec.endpoint", "tcp://orders.shop.svc"), "spec.endpoint needs a port"),
    ("endpoint-too-long", _with("spec.endpoint", "http://a.io/" + "x" * 2100), "spec.endpoint"),
    ("service-not-label", _with("spec.service", "Orders_Svc"), "spec.service"),
    ("version-not-semver", _with("spec.version", "1.0"), "spec.version"),
    ("weight-negative", _with("spec.weight", -1), "spec.weight"),
    ("weight-too-big", _with("spec.weight", 10001), "spec.weight"),
    ("interval-zero", _with("spec.healthCheck", {"intervalSeconds": 0}), "spec.healthCheck.intervalSeconds"),
    (
        "interval-too-big",
        _with("spec.healthCheck", {"intervalSeconds": 3601}),
        "spec.healthCheck.intervalSeconds",
    ),
    (
        "timeout-not-below-interval",
        _with("spec.healthCheck", {"intervalSeconds": 5, "timeoutSeconds": 5}),
        "spec.healthCheck.timeoutSeconds",
    ),
    ("timeout-zero", _with("spec.healthCheck", {"timeoutSeconds": 0}), "spec.healthCheck.timeoutSeconds"),
    (
        "success-threshold-zero",
        _with("spec.healthCheck", {"successThreshold": 0}),
        "spec.healthCheck.successThreshold",
    ),
    (
        "failure-threshold-too-big",
        _with("spec.healthCheck", {"failureThreshold": 101}),
        "spec.healthCheck.failureThreshold",
    ),
    ("check-type-unknown", _with("spec.healthCheck", {"type": "icmp"}), "spec.healthCheck.type"),
    ("method-unknown", _with("spec.healthCheck", {"method": "DELETE"}), "spec.healthCheck.method"),
    (
        "expected-status-garbage",
        _with("spec.healthCheck", {"expectedStatus": "2xx"}),
        "spec.healthCheck.expectedStatus",
    ),
    ("path-relative", _with("spec.healthCheck", {"path": "healthz"}), "spec.healthCheck.path"),
    (
        "header-name-invalid",
        _with("spec.healthCheck", {"headers": {"Bad Header": "x"}}),
        "spec.healthCheck.headers",
    ),
    ("ttl-zero", _with("spec.healthCheck", {"type": "ttl", "ttlSeconds": 0}), "spec.healthCheck.ttlSeconds"),
    (
        "degraded-latency-negative",
        _with("spec.healthCheck", {"degradedLatencyMs": -1}),
        "spec.healthCheck.degradedLatencyMs",
    ),
    ("deregister-negative", _with("spec.deregisterAfterSeconds", -5), "spec.deregisterAfterSeconds"),
    ("tag-not-label", _with("spec.tags", ["Bad Tag"]), "spec.tags[0]"),
    ("tag-duplicate", _with("spec.tags", ["api", "api"]), "spec.tags[1]"),
    ("too-many-tags", _with("spec.tags", [f"t{i}" for i in range(33)]), "spec.tags"),
    ("metadata-key-invalid", _with("spec.metadata", {"bad key!": "x"}), "spec.metadata"),
    ("metadata-value-not-string", _with("spec.metadata", {"zone": 5}), "spec.metadata.zone"),
    (
        "service-ref-port-out-of-range",
        {
            **_with("", None, remove="endpoint"),
            "spec": {
                **_with("", None, remove="endpoint")["spec"],
                "serviceRef": {"name": "orders", "port": 70000},
            },
        },
        "spec.serviceRef.port",
    ),
    (
        "service-ref-name-invalid",
        {
            **_with("", None, remove="endpoint"),
            "spec": {**_with("", None, remove="endpoint")["spec"], "serviceRef": {"name": "Orders"}},
        },
        "spec.serviceRef.name",
    ),
    ("capability-not-label", _with("spec.capabilities", ["ok", "Not_A_Label"]), "spec.capabilities[1]"),
    ("capability-without-name", _with("spec.capabilities", [{"version": "1.0.0"}]), "spec.capabilities[0]"),
    (
        "capability-unknown-field",
        _with("spec.capabilities", [{"name": "x", "owner": "me"}]),
        "spec.capabilities[0]",
    ),
    (
        "capability-version-not-semver",
        _with("spec.capabilities", [{"name": "x", "version": "v2"}]),
        "spec.capabilities[0].version",
    ),
    ("capability-number", _with("spec.capabilities", [42]), "spec.capabilities[0]"),
    (
        "capability-schema-not-an-object",
        _with("spec.capabilities", [{"name": "x", "inputSchema": "text"}]),
        "spec.capabilities[0]",
    ),
    (
        "capability-schema-unknown-type",
        _with("spec.capabilities", [{"name": "x", "outputSchema": {"type": "objekt"}}]),
        "spec.capabilities[0]",
    ),
    (
        "tls-ca-bundle-of-another-kind",
        _with("spec.healthCheck", {"tls": {"caBundleRef": {"kind": "Pod", "name": "a", "key": "k"}}}),
        "spec.healthCheck.tls.caBundleRef.kind",
    ),
    (
        "tls-server-name-not-dns",
        _with("spec.healthCheck", {"tls": {"serverName": "Not A Name"}}),
        "spec.healthCheck.tls.serverName",
    ),
    ("capability-duplicate", _with("spec.capabilities", ["greet", {"name": "greet"}]), "spec.capabilities"),
    ("unknown-spec-field", _with("spec.colour", "blue"), 'unknown field "spec.colour"'),
    (
        "unknown-health-check-field",
        _with("spec.healthCheck", {"intervall": 5}),
        'unknown field "spec.healthCheck.intervall"',
    ),
    ("missing-spec", {k: v for k, v in _base("bad").items() if k != "spec"}, "spec"),
]


def test_there_are_at_least_25_distinct_invalid_cases() -> None:
    assert len({case for case, _, _ in INVALID}) == len(INVALID) >= 25


@pytest.mark.parametrize(("case", "manifest", "names"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    k8s: Kube, namespace: str, case: str, manifest: dict[str, Any], names: str
) -> None:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["name"] = case
    result = k8s.apply(manifest, namespace, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert names in result.stderr, result.stderr
    # Nothing was stored.
    assert k8s.kubectl("get", "svcreg", case, "-n", namespace, check=False).returncode != 0
    # The Python model, used where the API server is not in the loop, refuses it too.
    with pytest.raises(pydantic.ValidationError):
        ServiceRegistration.model_validate(manifest)


async def test_a_status_patch_meant_for_a_predecessor_is_refused_by_the_api_server(
    k8s: Kube, namespace: str
) -> None:
    """The precondition the status writer sends is honoured by the real API server: a
    registration deleted and recreated under the same name refuses its predecessor's verdict.
    (A uid in a status patch is ignored there; the resourceVersion is enforced.)"""
    api = KubeApi(k8s_client_configuration(k8s))
    try:
        k8s.apply(_base("reborn"), namespace)
        seen = k8s.get_registration(namespace, "reborn")["metadata"]["resourceVersion"]
        stored = await api.patch_status(namespace, "reborn", {"health": "Healthy"}, resource_version=seen)
        assert stored["status"]["health"] == "Healthy"
        seen = stored["metadata"]["resourceVersion"]
        k8s.kubectl("delete", "svcreg", "reborn", "-n", namespace)
        k8s.apply(_base("reborn"), namespace)
        with pytest.raises(kube_errors.Conflict):
            await api.patch_status(namespace, "reborn", {"health": "Unhealthy"}, resource_version=seen)
        assert "status" not in k8s.get_registration(namespace, "reborn") or (
            k8s.get_registration(namespace, "reborn")["status"].get("health") != "Unhealthy"
        )
    finally:
        await api.close()


def k8s_client_configuration(k8s: Kube) -> Any:
    from kubernetes import client, config  # noqa: PLC0415

    configuration = client.Configuration()
    config.load_kube_config(config_file=k8s.cluster.kubeconfig, client_configuration=configuration)
    return configuration
