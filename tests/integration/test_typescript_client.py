"""The TypeScript client (clients/typescript) against a real svcreg on the real API server:
its own tests run under Node's test runner, and its generated types match the snapshot of
/openapi.json they were generated from."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcreg.devtools.controlplane.cluster import Cluster
from svcreg.devtools.kubectl import REPO_ROOT
from tests.targets import AppTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

CLIENT = REPO_ROOT / "clients" / "typescript"


def _npm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "the TypeScript client needs Node.js >= 20 with npm (bash scripts/install.sh)", pytrace=False
        )
    if not (CLIENT / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, capture_output=True)
    return subprocess.run(
        [npm, *args], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def served(
    k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    ns = k8s.create_namespace("ts")
    k8s.create_service_account(ns, "reader")
    k8s.grant(ns, "reader", ["get", "list", "watch"])
    heavy, light = AppTarget("heavy"), AppTarget("light")
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "path": "/health"}
    for name, target, weight in (("heavy", heavy, 100), ("light", light, 0)):
        spec = {"service": "orders", "endpoint": target.url, "capabilities": ["greet"], "weight": weight}
        k8s.apply(registration(name, {**spec, "healthCheck": check}), ns)
    log = tmp_path_factory.mktemp("typescript") / "operator.log"
    operator = OperatorProcess(control_plane, log, "--namespace", ns, "--probe-allow", "127.0.0.0/8").start()
    for name in ("heavy", "light"):
        k8s.kubectl("wait", "--for=condition=Ready", f"svcreg/{name}", "-n", ns, "--timeout=60s")
    yield {
        "SVCREG_URL": f"http://127.0.0.1:{operator.port}",
        "SVCREG_TOKEN": k8s.token(ns, "reader"),
        "SVCREG_TEST_NAMESPACE": ns,
        "SVCREG_TEST_HEAVY_URL": heavy.url,
    }
    operator.stop()
    heavy.close()
    light.close()


def test_the_typescript_client_passes_its_tests_against_real_discovery(served: dict[str, str]) -> None:
    ran = _npm("test", env=os.environ | served)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "# pass 4" in ran.stdout and "# fail 0" in ran.stdout, ran.stdout[-2000:]


def test_the_generated_types_are_those_of_the_snapshot(tmp_path: Path) -> None:
    """src/schema.ts is what openapi-typescript makes of openapi.json today (the unit tests keep
    openapi.json equal to the server's document)."""
    out = tmp_path / "schema.ts"
    made = _npm("exec", "--", "openapi-typescript", "openapi.json", "-o", str(out))
    assert made.returncode == 0, made.stderr[-2000:]
    assert out.read_text() == (CLIENT / "src" / "schema.ts").read_text(), "run npm run generate"
