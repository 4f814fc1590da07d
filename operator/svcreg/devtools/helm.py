"""The chart on the local node: install, upgrade and uninstall one release with the image built
here (``svcreg image build``), used by ``svcreg dev --node`` and the node tests alike.

Helm keeps its configuration, cache and data under ``home`` (never the user's ~/.config/helm),
and runs with the cluster's environment (its KUBECONFIG, and PATH holding the helm built here).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from svcreg.devtools import image
from svcreg.devtools.controlplane import cluster, node
from svcreg.devtools.kubectl import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "svcreg"
# The client's default URL is http://svcreg.svcreg-system.svc:8080: this name and namespace
# make the release's Service that URL.
NAME, NAMESPACE = "svcreg", "svcreg-system"


class HelmError(RuntimeError):
    """helm refused or failed; the message carries its error output."""


@dataclass
class Release:
    env: dict[str, str]
    home: Path
    name: str = NAME
    namespace: str = NAMESPACE
    _env: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._env = self.env | {
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def _helm(self, *args: str, timeout: float = 360) -> str:
        command = ["helm", *args]
        done = subprocess.run(
            command, env=self._env, capture_output=True, text=True, check=False, timeout=timeout
        )
        if done.returncode != 0:
            raise HelmError(f"helm {args[0]} {self.name}: {done.stderr.strip()}")
        return done.stdout

    def install(self, *values: str) -> None:
        """Install with the locally built image (never pulled) and the SSRF policy opened to the
        node's pod and Service ranges (probes reach pods and Services there), ``values`` (helm
        flags such as ``--set k=v``) on top; wait until its pods are Ready."""
        repository, tag = image.IMAGE.rsplit(":", 1)
        self._helm(
            "install", self.name, str(CHART), "--namespace", self.namespace, "--create-namespace",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",
            "--set", f"probeAllow={{{node.POD_CIDR},{cluster.SERVICE_CIDR}}}",
            *values, "--wait", "--timeout", "5m",
        )  # fmt: skip

    def upgrade(self, *values: str) -> None:
        """Upgrade, keeping the installed values, with ``values`` on top; wait for the rollout."""
        self._helm(
            "upgrade", self.name, str(CHART), "-n", self.namespace, "--reuse-values", *values, "--wait"
        )

    def uninstall(self) -> None:
        """Uninstall and wait until its objects are gone (the CRD stays, as Helm does)."""
        self._helm("uninstall", self.name, "-n", self.namespace, "--wait")

    def installed(self) -> bool:
        return bool(self._helm("list", "-n", self.namespace, "-q", "--filter", f"^{self.name}$").strip())
