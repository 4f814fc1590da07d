"""The validating admission webhook: kubectl apply of a registration the models refuse is refused
at once, naming the field (the CRD's schema cannot check that a capability schema is JSON Schema)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import pki
from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import free_port

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

LABEL = {"svcreg-test-admission": "on"}


@pytest.fixture(scope="module")
def admitted(k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A namespace whose registrations go through an operator's webhook (only it: the
    configuration selects it by label, so other tests' namespaces are untouched)."""
    keys = tmp_path_factory.mktemp("admission")
    ca, cert, key = pki.serving_pair(keys, ["localhost"])
    port = free_port()
    namespace = k8s.create_namespace("adm")
    k8s.core.patch_namespace(namespace, {"metadata": {"labels": LABEL}})
    operator = OperatorProcess(
        control_plane, keys / "operator.log", "--namespace", "adm-*",
        "--admission-port", str(port), "--admission-cert-file", str(cert), "--admission-key-file", str(key),
    ).start()  # fmt: skip
    manifest = kube.admission_webhook(
        f"https://localhost:{port}/validate/serviceregistrations", Path(ca).read_bytes(), LABEL
    )
    kube.install_admission_webhook(control_plane.env(), manifest)
    try:
        yield namespace
    finally:
        kube.kubectl(
            "delete", "validatingwebhookconfiguration", kube.WEBHOOK_NAME, "--ignore-not-found",
            env=control_plane.env(),
        )  # fmt: skip
        operator.stop()
        assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


def _apply(
    k8s: Kube, namespace: str, name: str, input_schema: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    spec = {
        "endpoint": "http://10.0.0.9:8080",
        "capabilities": [{"name": "analyse", "inputSchema": input_schema}],
    }
    return k8s.apply(registration(name, spec), namespace, check=False)


def test_an_invalid_capability_schema_is_refused_at_apply_naming_the_field(k8s: Kube, admitted: str) -> None:
    refused = _apply(k8s, admitted, "bad", {"type": "object", "minProperties": -1})
    assert refused.returncode != 0
    assert 'admission webhook "serviceregistrations.svcreg.io" denied the request' in refused.stderr
    assert "spec.capabilities[0].inputSchema" in refused.stderr, refused.stderr
    listed = k8s.kubectl("get", "svcreg", "-n", admitted, "-o", "name", check=False).stdout
    assert "bad" not in listed  # nothing stored
    assert _apply(k8s, admitted, "good", {"type": "object", "required": ["text"]}).returncode == 0
    # An update that breaks a stored registration is refused too; the stored one is unchanged.
    assert _apply(k8s, admitted, "good", {"type": "object", "minProperties": -2}).returncode != 0
    stored = k8s.get_registration(admitted, "good")
    assert stored["spec"]["capabilities"][0]["inputSchema"]["required"] == ["text"]


def test_a_reference_that_does_not_resolve_is_refused_at_apply_naming_the_field(
    k8s: Kube, admitted: str
) -> None:
    """An ``outputSchema`` whose ``$ref`` points nowhere (or off the schema, where jsonschema
    would fetch it) would break every contract check: refused at apply instead."""
    for name, reference in (("dangling", "#/$defs/missing"), ("remote", "http://169.254.169.254/latest")):
        spec = {
            "endpoint": "http://10.0.0.9:8080",
            "capabilities": [
                {"name": "analyse", "outputSchema": {"$ref": reference}, "contract": {"path": "/analyse"}}
            ],
        }
        refused = k8s.apply(registration(name, spec), admitted, check=False)
        assert refused.returncode != 0, name
        assert "spec.capabilities[0].outputSchema" in refused.stderr, refused.stderr
        assert "$ref" in refused.stderr, refused.stderr
