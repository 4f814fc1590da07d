"""Build the control-plane binaries from pinned Go modules and cache them by version.

Release downloads are not reachable where svcreg is developed, but the Go module proxy is, so
kube-apiserver, kubectl, etcd and helm are compiled from the small wrapper modules committed in
``gomod/`` (their ``go.sum`` pins every dependency). A build goes to a directory named by the
component, its version and a hash of its inputs, and is marked complete only after it
succeeded, so an interrupted build is redone and a finished one costs nothing next time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from svcreg.devtools.controlplane import progress

GOMOD_DIR = Path(__file__).parent / "gomod"
KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
_COMPLETE = ".complete"


def cache_root() -> Path:
    """Where built binaries and local clusters live: ``$SVCREG_CACHE`` or ``~/.cache/svcreg``."""
    configured = os.environ.get("SVCREG_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "svcreg"


def _kubernetes_ldflags() -> tuple[str, ...]:
    """Stamp the version so ``/version`` and ``kubectl version`` report the real release."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(flags)


@dataclass(frozen=True)
class Component:
    """One wrapper module and the commands built from it."""

    name: str
    version: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: tuple[str, ...]
    module_root: Path = GOMOD_DIR  # tools outside the control plane (bench/) keep their own

    @property
    def module_dir(self) -> Path:
        return self.module_root / self.name

    def input_hash(self) -> str:
        """A hash of everything that decides the output, so an edited go.sum rebuilds."""
        digest = hashlib.sha256()
        for path in sorted(self.module_dir.iterdir()):
            if path.is_file():
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
        digest.update(" ".join(self.packages + self.ldflags).encode())
        return digest.hexdigest()[:12]

    def install_dir(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.version}-{self.input_hash()}"

    def is_built(self) -> bool:
        return (self.install_dir() / _COMPLETE).exists()


COMPONENTS = (
    Component(
        name="k8s",
        version=KUBERNETES_VERSION,
        packages=("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"),
        binaries=("kube-apiserver", "kubectl"),
        ldflags=_kubernetes_ldflags(),
    ),
    Component(
        name="etcd",
        version=ETCD_VERSION,
        packages=(".",),
        binaries=("etcd",),
        ldflags=("-s", "-w"),
    ),
    Component(
        name="helm",
        version=HELM_VERSION,
        packages=("helm.sh/helm/v3/cmd/helm",),
        binaries=("helm",),
        ldflags=("-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
    ),
)


PROMETHEUS_VERSION = "v0.316.0"  # the Go module of Prometheus 3.16: promtool checks svcreg's alerts
PROMTOOL = Component(
    name="promtool",
    version=PROMETHEUS_VERSION,
    packages=("github.com/prometheus/prometheus/cmd/promtool",),
    binaries=("promtool",),
    ldflags=("-s", "-w"),
)

COREDNS_VERSION = "v1.15.0"

# The node beside the control plane (``svcreg cluster up --node``): built only when asked for, so
# the plain control plane stays as quick to build as it is.
NODE_COMPONENTS = (
    Component(
        name="node",
        version=KUBERNETES_VERSION,
        packages=tuple(
            f"k8s.io/kubernetes/cmd/{command}"
            for command in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
        ),
        binaries=("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"),
        ldflags=_kubernetes_ldflags(),
    ),
    Component(
        name="coredns",
        version=COREDNS_VERSION,
        packages=("github.com/coredns/coredns",),
        binaries=("coredns",),
        ldflags=("-s", "-w"),
    ),
    Component(
        name="nodetools",
        version="v1",
        packages=(".",),
        binaries=("nodetools",),
        ldflags=("-s", "-w"),
    ),
)


class BuildError(RuntimeError):
    """A Go build failed; the message carries the tail of its output."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the built commands, and one directory holding all of them for ``PATH``."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    helm: Path
    path_dir: Path


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the 'go' command is not on PATH; install Go >= 1.26 to build the control plane")
    return go


def build_component(component: Component, report: progress.Reporter = progress.stderr_reporter) -> Path:
    """Build one component unless its cache entry is complete; return its directory."""
    target = component.install_dir()
    if component.is_built():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        _go(),
        "build",
        "-v",
        "-trimpath",
        "-mod=readonly",
        "-ldflags",
        " ".join(component.ldflags),
        "-o",
        str(staging) + os.sep,
        *component.packages,
    ]
    what = f"{', '.join(component.binaries)} {component.version}"
    report(f"building {what} from Go modules (cold builds take minutes; cached in {target.parent})")
    started = time.monotonic()
    tail: list[str] = []
    compiled = 0
    last_line = ""
    lock = threading.Lock()
    process = subprocess.Popen(
        command,
        cwd=component.module_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")},
    )
    assert process.stderr is not None

    def reader() -> None:
        nonlocal compiled, last_line
        for raw in process.stderr:  # type: ignore[union-attr]
            line = raw.rstrip()
            with lock:
                tail.append(line)
                del tail[:-40]
                if not line.startswith("go: downloading"):
                    compiled += 1
                last_line = line

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    while process.poll() is None:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with lock:
                report(f"  {what}: {progress.elapsed(started)} elapsed, {compiled} packages, at {last_line}")
    thread.join()
    if process.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"go build of {what} failed (exit {process.returncode}):\n" + "\n".join(tail[-20:]))
    (staging / _COMPLETE).write_text(f"{component.version}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    report(f"built {what} in {progress.elapsed(started)}")
    return target


@dataclass(frozen=True)
class NodeBinaries:
    """The node's commands: kubelet and its peers, cluster DNS, and the images' one binary."""

    kubelet: Path
    kube_proxy: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    coredns: Path
    nodetools: Path


def ensure_node_binaries(report: progress.Reporter = progress.stderr_reporter) -> NodeBinaries:
    """Build the node's components unless cached (a cold build takes minutes)."""
    found: dict[str, Path] = {}
    for component in NODE_COMPONENTS:
        directory = build_component(component, report)
        for command in component.binaries:
            found[command.replace("-", "_")] = directory / command
    return NodeBinaries(**found)


def ensure_promtool(report: progress.Reporter = progress.stderr_reporter) -> Path:
    """promtool, built unless cached: ``promtool check rules`` and ``test rules`` on the alerts."""
    return build_component(PROMTOOL, report) / "promtool"


def ensure_binaries(report: progress.Reporter = progress.stderr_reporter) -> Binaries:
    """Build whatever is missing and refresh the ``PATH`` directory of links to the binaries."""
    found: dict[str, Path] = {}
    for component in COMPONENTS:
        directory = build_component(component, report)
        for command in component.binaries:
            found[command] = directory / command
    path_dir = cache_root() / "path"
    path_dir.mkdir(parents=True, exist_ok=True)
    for name, binary in found.items():
        link = path_dir / name
        if link.is_symlink() or link.exists():
            if link.resolve() == binary.resolve():
                continue
            link.unlink()
        link.symlink_to(binary)
    return Binaries(
        kube_apiserver=found["kube-apiserver"],
        kubectl=found["kubectl"],
        etcd=found["etcd"],
        helm=found["helm"],
        path_dir=path_dir,
    )
