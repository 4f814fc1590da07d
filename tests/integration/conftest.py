"""One real kube-apiserver and etcd for the whole run, started through ``svcreg cluster`` code.

If the control plane cannot start, every integration test errors with the reason: nothing in
this tier is ever skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import config

from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress

from .kubehelpers import Kube

_POLICY_PROBE = {
    "apiVersion": "svcreg.io/v1alpha1",
    "kind": "ServiceRegistration",
    "metadata": {"name": "policy-probe"},
    "spec": {"endpoint": "http://probe.example:80", "capabilities": ["Not_A_Label"]},
}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.Cluster]:
    directory = Path(tmp_path_factory.mktemp("control-plane"))
    try:
        running = cluster.up(directory, report=progress.stderr_reporter)
    except Exception as error:
        pytest.fail(f"the local control plane did not start: {error}", pytrace=False)
    try:
        yield running
    finally:
        cluster.down(directory, report=progress.silent)


@pytest.fixture(scope="session")
def k8s(control_plane: cluster.Cluster) -> Kube:
    api = config.new_client_from_config(config_file=control_plane.kubeconfig)
    helper = Kube(cluster=control_plane, api=api)
    kube.install_crd(helper.env)
    _wait_for_policy(helper)
    return helper


def _wait_for_policy(helper: Kube, timeout: float = 60) -> None:
    """A ValidatingAdmissionPolicy takes effect a moment after it is created: wait until it refuses."""
    deadline = time.monotonic() + timeout
    while True:
        result = helper.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            "-",
            input=yaml.safe_dump(_POLICY_PROBE),
            check=False,
        )
        if result.returncode != 0 and "spec.capabilities[0]" in result.stderr:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the capabilities policy never took effect: {result.stdout}{result.stderr}")
        time.sleep(0.2)


@pytest.fixture
def namespace(k8s: Kube) -> str:
    return k8s.create_namespace()
