"""The local control plane is a real Kubernetes API server with working auth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kubernetes import client

from svcreg.devtools.controlplane import build, cluster, progress

from .kubehelpers import Kube


def test_server_reports_the_pinned_release(k8s: Kube) -> None:
    info = client.VersionApi(k8s.api).get_code()
    assert info.git_version == build.KUBERNETES_VERSION
    assert (info.major, info.minor) == ("1", "36")
    assert build.KUBERNETES_VERSION in k8s.kubectl("version").stdout


def test_tokens_are_issued_reviewed_and_authorized_by_rbac(k8s: Kube, namespace: str) -> None:
    k8s.create_service_account(namespace, "reader")
    k8s.create_service_account(namespace, "stranger")
    k8s.grant(namespace, "reader", ["get", "list", "watch"])
    auth = client.AuthenticationV1Api(k8s.api)
    authz = client.AuthorizationV1Api(k8s.api)

    token = k8s.token(namespace, "reader", audiences=["svcreg"])
    review = auth.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["svcreg"]))
    )
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:reader"
    wrong_audience = auth.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["someone-else"]))
    )
    assert not wrong_audience.status.authenticated

    def may_list(user: str) -> bool:
        sar = authz.create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=user,
                    groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                    resource_attributes=client.V1ResourceAttributes(
                        group="svcreg.io", resource="serviceregistrations", verb="list", namespace=namespace
                    ),
                )
            )
        )
        return bool(sar.status.allowed)

    assert may_list(f"system:serviceaccount:{namespace}:reader")
    assert not may_list(f"system:serviceaccount:{namespace}:stranger")


def test_up_is_idempotent(control_plane: cluster.Cluster) -> None:
    again = cluster.up(Path(control_plane.directory), report=progress.silent)
    assert again.server == control_plane.server
    assert [p.pid for p in again.processes] == [p.pid for p in control_plane.processes]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcreg.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_up_env_status_down_leaves_no_process(tmp_path: Path) -> None:
    """A second, separate cluster through the CLI: exports, status, and a clean stop."""
    env = {**os.environ, "SVCREG_CLUSTER_DIR": str(tmp_path / "cli-cluster")}
    up = _cli("cluster", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("export KUBECONFIG=")
    assert "export PATH=" in up.stdout
    env_output = _cli("cluster", "env", env=env)
    assert env_output.stdout == up.stdout
    state = cluster.status(tmp_path / "cli-cluster")
    assert state is not None
    pids = [p.pid for p in state.processes]
    shell = subprocess.run(
        ["bash", "-c", f'eval "$({sys.executable} -m svcreg.cli cluster env)"; kubectl get --raw /readyz'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.stdout.strip() == "ok", shell.stderr
    assert _cli("cluster", "status", env=env).returncode == 0

    down = _cli("cluster", "down", env=env)
    assert down.returncode == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
        )
    assert not (tmp_path / "cli-cluster").exists()
    assert _cli("cluster", "status", env=env).returncode == 1
    assert _cli("cluster", "env", env=env).returncode == 1


def test_down_of_nothing_is_harmless(tmp_path: Path) -> None:
    assert cluster.down(tmp_path / "never-started", report=progress.silent) is False
