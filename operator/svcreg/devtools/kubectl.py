"""Small helpers around the Kubernetes API shared by the CLI, tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "deploy" / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
CRD_NAME = "serviceregistrations.svcreg.io"


def install_crd(env: dict[str, str]) -> None:
    """Apply the CRD and its capabilities policy, and wait until the API serves the resource."""
    kubectl("apply", "-f", str(CRD_DIR), env=env)
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", env=env)


def kubectl(
    *args: str, env: dict[str, str], input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with the given environment (KUBECONFIG and PATH of a local cluster)."""
    return subprocess.run(
        ["kubectl", *args], env=env, input=input, capture_output=True, text=True, check=check, timeout=timeout
    )
