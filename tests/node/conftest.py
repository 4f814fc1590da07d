"""One control plane with a real node for the whole run (``svcreg cluster up --node``).

The node needs root and the host programs scripts/install.sh installs; without them every test
here errors with the reason: nothing in this tier is ever skipped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from svcreg.devtools import helm, image
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, node, progress


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.Cluster]:
    missing = node.missing_prerequisites()
    if missing:
        pytest.fail(f"the node needs {', '.join(missing)} (bash scripts/install.sh)", pytrace=False)
    directory = Path(tmp_path_factory.mktemp("node-cluster"))
    try:
        running = cluster.up(directory, report=progress.stderr_reporter, node=True)
    except Exception as error:
        pytest.fail(f"the local control plane with a node did not start: {error}", pytrace=False)
    try:
        yield running
    finally:
        cluster.down(directory, report=progress.silent)


class Kubectl:
    def __init__(self, running: cluster.Cluster) -> None:
        self.env = running.env()

    def __call__(self, *args: str, input: str | None = None, check: bool = True, stderr: bool = False) -> str:
        """kubectl's output (with ``stderr``, its error output too)."""
        try:
            result = kube.kubectl(*args, env=self.env, input=input, check=check, timeout=120)
        except subprocess.CalledProcessError as error:
            raise AssertionError(f"kubectl {' '.join(args)}: {error.stderr}") from error
        return result.stdout + (result.stderr if stderr else "")


@pytest.fixture(scope="session")
def kubectl(node_cluster: cluster.Cluster) -> Kubectl:
    return Kubectl(node_cluster)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


RELEASE_NS = helm.NAMESPACE  # the release's Service is the client's default URL


@pytest.fixture(scope="session")
def svcreg_image(node_cluster: cluster.Cluster) -> str:
    archive = image.build_image(kube.REPO_ROOT, report=progress.stderr_reporter)
    node.import_image(node.Layout(Path(node_cluster.directory) / "node"), archive)
    return image.IMAGE


_RELEASE: list[helm.Release] = []  # the installed release, for upgrade() and uninstall()


@pytest.fixture(scope="session")
def release(
    node_cluster: cluster.Cluster, svcreg_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    installed = helm.Release(node_cluster.env(), tmp_path_factory.mktemp("helm"))
    installed.install()
    _RELEASE.append(installed)
    yield installed.name
    if cluster.status(Path(node_cluster.directory)) is None:
        return  # test_node.py's last test took the whole cluster down: nothing left to uninstall
    if installed.installed():
        installed.uninstall()


def uninstall() -> None:
    """helm uninstall the release (its fixture's teardown then finds nothing to do)."""
    _RELEASE[0].uninstall()


def upgrade(*values: str) -> None:
    """helm upgrade the release, keeping its values, with ``values`` on top."""
    _RELEASE[0].upgrade(*values)
