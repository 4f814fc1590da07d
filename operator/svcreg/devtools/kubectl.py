"""Small helpers around the Kubernetes API shared by the CLI, tests and benchmarks."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "deploy" / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
CRD_NAME = "serviceregistrations.svcreg.io"
POLICY_CRD_NAME = "servicepolicies.svcreg.io"


def install_crd(env: dict[str, str]) -> None:
    """Apply the CRD and its capabilities policy, and wait until the API serves the resource."""
    kubectl("apply", "-f", str(CRD_DIR), env=env)
    for name in (CRD_NAME, POLICY_CRD_NAME):
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", env=env)


def kubectl(
    *args: str, env: dict[str, str], input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with the given environment (KUBECONFIG and PATH of a local cluster)."""
    return subprocess.run(
        ["kubectl", *args], env=env, input=input, capture_output=True, text=True, check=check, timeout=timeout
    )


WEBHOOK_NAME = "svcreg.io"


def admission_webhook(
    url: str, ca_pem: bytes, namespace_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends registration creates and updates to the
    operator's admission webhook at ``url`` (trusted with ``ca_pem``). ``failurePolicy: Ignore``:
    an operator that is down never blocks an apply (the prober still marks a bad spec)."""
    webhook: dict[str, Any] = {
        "name": "serviceregistrations.svcreg.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "timeoutSeconds": 5,
        "matchPolicy": "Equivalent",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
        "rules": [
            {
                "apiGroups": ["svcreg.io"],
                "apiVersions": ["*"],
                "resources": ["serviceregistrations"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
    }
    if namespace_labels:
        webhook["namespaceSelector"] = {"matchLabels": namespace_labels}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_NAME},
        "webhooks": [webhook],
    }


def install_admission_webhook(env: dict[str, str], manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", env=env, input=json.dumps(manifest))
