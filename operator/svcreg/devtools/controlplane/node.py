"""A real node beside the local control plane: kubelet, containerd, runc, CNI, kube-proxy,
cluster DNS, a scheduler and a controller-manager, all on this machine.

Everything the node creates lives under the cluster's directory or has a name of its own, so
``teardown`` can remove exactly that and nothing else:

- the pod bridge ``svcreg0`` with the node's address ``10.244.0.1/24``; pods get addresses of
  ``10.244.0.0/24`` (CNI bridge + host-local), in network namespaces containerd creates; the API
  server listens on the node address so pods reach it, and no traffic leaves the machine;
- containerd with its root, state and socket in ``node/containerd`` (Debian's containerd and
  runc; its CRI plugin with ``restrict_oom_score_adj``, since root here may not lower oom scores);
- pod cgroups under ``/svcreg`` (cgroupfs driver; v1 and hybrid hierarchies allowed);
- kube-proxy's rules (iptables; removed with ``kube-proxy --cleanup``);
- images built locally with no registry: the sandbox ("pause") and ``nodetools`` images from the
  static ``nodetools`` binary, committed by buildah (vfs storage under ``node/images``) and
  imported into containerd.

Cluster DNS is CoreDNS built from Go modules, run as a host process on the node address (the
kubelet's ``clusterDNS``), answering ``*.svc.cluster.local`` from the API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from svcreg.devtools.controlplane import build, pki, progress
from svcreg.devtools.controlplane.ports import free_port

BRIDGE = "svcreg0"
NODE_IP = pki.NODE_IP
NODE_NAME = pki.NODE_NAME
POD_CIDR = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "/svcreg"
PAUSE_IMAGE = "localhost/svcreg/pause:v1"
TOOLS_IMAGE = "localhost/svcreg/nodetools:v1"
CNI_BIN = Path("/usr/lib/cni")
HOST_COMMANDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "buildah", "iptables", "ip")


class NodeError(RuntimeError):
    """The node could not be brought up; the message says why and where the logs are."""


def missing_prerequisites() -> list[str]:
    """Host programs the node needs that are not installed (scripts/install.sh installs them)."""
    missing = [command for command in HOST_COMMANDS if shutil.which(command) is None]
    missing += [f"{CNI_BIN}/{p}" for p in ("bridge", "host-local", "loopback") if not (CNI_BIN / p).exists()]
    if os.geteuid() != 0:
        missing.append("root (a node creates network namespaces, mounts and cgroups)")
    return missing


@dataclass(frozen=True)
class Layout:
    """Where the node keeps what it creates, under the cluster's directory."""

    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def config(self) -> Path:
        return self.root / "config"


def run(*command: str, check: bool = True, timeout: float = 300, cwd: Path | None = None) -> str:
    """A host command's output; NodeError quoting its error output when it fails (``check``)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    if check and result.returncode != 0:
        what = " ".join(command[:8])
        raise NodeError(f"{what} failed ({result.returncode}):\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def buildah(storage: Path, *args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    """buildah with its image store (vfs: no overlay mounts to clean up) under ``storage``."""
    store = ("--root", str(storage / "storage"), "--runroot", str(storage / "run"), "--storage-driver", "vfs")
    return run("buildah", *store, *args, cwd=cwd, timeout=timeout).strip()


def network_up() -> None:
    """The pod bridge with the node's address, before the API server binds to it."""
    if run("ip", "link", "show", BRIDGE, check=False) == "":
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_configs(layout: Layout, keys: pki.Pki) -> dict[str, Path]:
    """containerd's, CNI's, the kubelet's, kube-proxy's and CoreDNS's configuration files."""
    state = layout.containerd / "state"
    containerd = f"""version = 2
root = "{layout.containerd / "root"}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{layout.socket}"
[ttrpc]
  address = "{layout.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{layout.cni_conf}"
"""
    cni = {
        "cniVersion": "0.4.0",
        "name": "svcreg-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.root / "cni-ipam"),
                },
            }
        ],
    }
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "tlsCertFile": str(keys.node_serving_cert),
        "tlsPrivateKeyFile": str(keys.node_serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(keys.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "maxPods": 110,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "localStorageCapacityIsolation": False,
    }
    proxy = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{free_port()}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "clientConnection": {"kubeconfig": str(layout.config / "admin.kubeconfig")},
        # Service traffic is masqueraded, so a reply from a pod on the same bridge comes back
        # through the node and is un-NATed.
        "iptables": {"masqueradeAll": True},
        # Leave the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    corefile = f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.config / "admin.kubeconfig"}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""
    return {
        "containerd": _write(layout.config / "containerd.toml", containerd),
        "cni": _write(layout.cni_conf / "10-svcreg.conflist", json.dumps(cni, indent=2)),
        "kubelet": _write(layout.config / "kubelet.yaml", yaml.safe_dump(kubelet)),
        "proxy": _write(layout.config / "kube-proxy.yaml", yaml.safe_dump(proxy)),
        "corefile": _write(layout.config / "Corefile", corefile),
    }


def kubeconfig(path: Path, server: str, keys: pki.Pki, cert: Path, key: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(keys.ca_cert)}}
        ],
        "users": [{"name": "user", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
        "current-context": "local",
    }
    _write(path, yaml.safe_dump(config)).chmod(0o600)
    return path


Spawn = Callable[[str, list[str]], object]


def start(  # noqa: PLR0917 - each is a separate, named input
    layout: Layout,
    keys: pki.Pki,
    server: str,
    binaries: build.NodeBinaries,
    spawn: Spawn,
    report: progress.Reporter,
) -> None:
    """Start the node's processes through ``spawn`` (which records them with the cluster's) and
    load its images. The caller waits for the node to be Ready."""
    layout.root.mkdir(parents=True, exist_ok=True)
    admin = kubeconfig(layout.config / "admin.kubeconfig", server, keys, keys.admin_cert, keys.admin_key)
    node = kubeconfig(
        layout.config / "kubelet.kubeconfig", server, keys, keys.node_client_cert, keys.node_client_key
    )
    files = write_configs(layout, keys)
    spawn("containerd", ["containerd", "--config", str(files["containerd"])])
    _wait_for(layout.socket.exists, "containerd's socket", 60)
    load_images(layout, binaries, report)
    spawn("coredns", [str(binaries.coredns), "-conf", str(files["corefile"])])
    spawn(
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}",
            f"--service-account-private-key-file={keys.sa_private}",
            f"--root-ca-file={keys.ca_cert}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--cluster-name=svcreg",
            "--v=1",
        ],
    )
    spawn(
        "kube-scheduler",
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--v=1",
        ],
    )
    make_cgroups(CGROUP_ROOT)
    spawn(
        "kubelet",
        [
            str(binaries.kubelet),
            f"--config={files['kubelet']}",
            f"--kubeconfig={node}",
            f"--root-dir={layout.kubelet}",
            f"--cert-dir={layout.kubelet / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
    )
    spawn("kube-proxy", [str(binaries.kube_proxy), f"--config={files['proxy']}", "--v=1"])


def load_images(layout: Layout, binaries: build.NodeBinaries, report: progress.Reporter) -> None:
    """The sandbox and tools images, from the static nodetools binary, into containerd."""
    for image, entrypoint in ((PAUSE_IMAGE, ["/nodetools", "pause"]), (TOOLS_IMAGE, ["/nodetools"])):
        archive = layout.images / (image.rsplit("/", 1)[1].replace(":", "-") + ".tar")
        if not archive.exists():
            container = buildah(layout.images, "from", "scratch")
            try:
                tool = str(binaries.nodetools)
                buildah(layout.images, "copy", "--chmod", "0755", container, tool, "/nodetools")
                config = ("--entrypoint", json.dumps(entrypoint), "--user", "65534")
                buildah(layout.images, "config", *config, container)
                buildah(layout.images, "commit", "--rm", container, image)
            except NodeError:
                buildah(layout.images, "rm", container)
                raise
            buildah(layout.images, "push", image, f"oci-archive:{archive}:{image}")
        import_image(layout, archive)
    report(f"images {PAUSE_IMAGE} and {TOOLS_IMAGE} loaded into the node's containerd")


def import_image(layout: Layout, archive: Path) -> None:
    """Load an OCI archive into the node's containerd, where the kubelet's pods find it."""
    run("ctr", "--address", str(layout.socket), "--namespace", "k8s.io", "images", "import", str(archive))


def container_pid(layout: Layout, container_id: str) -> int:
    """The host pid of a running container's main process; ``container_id`` as a pod's status
    reports it (``containerd://<id>``)."""
    wanted = container_id.removeprefix("containerd://")
    tasks = run("ctr", "--address", str(layout.socket), "--namespace", "k8s.io", "tasks", "ls")
    for line in tasks.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == wanted:
            return int(fields[1])
    raise NodeError(f"no running task for container {wanted}")


def in_network_of(pid: int, *command: str) -> str:
    """Run a host command (iptables, say) inside the network namespace of process ``pid``."""
    return run("nsenter", "--target", str(pid), "--net", *command)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise NodeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (the node's directory): containerd's shims
    outlive containerd, and are found this way."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


def _cgroup_pids(root: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / root.lstrip("/")
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def make_cgroups(root: str) -> None:
    """The kubelet's cgroupRoot, in every v1 hierarchy (it must exist before the kubelet starts);
    a new cpuset cgroup gets its parent's cpus and memory nodes, as v1 requires."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if not hierarchy.is_dir() or hierarchy.name == "unified" or hierarchy.is_symlink():
            continue
        base = hierarchy / root.lstrip("/")
        base.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (base / name).read_text().strip():
                (base / name).write_text((hierarchy / name).read_text())


def _remove_cgroups(root: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / root.lstrip("/")
        if not base.is_dir():
            continue
        for directory in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefixes):
            points.append(point)
    return sorted(points, key=len, reverse=True)


SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6 puts every shim's socket here


def _remove_stale_shim_sockets() -> None:
    """Sockets of shims that were killed: files no live process listens on any more."""
    if not SHIM_SOCKETS.is_dir():
        return
    listening = {
        line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:] if "/" in line
    }
    for socket_file in SHIM_SOCKETS.iterdir():
        if str(socket_file) not in listening:
            with contextlib.suppress(OSError):
                socket_file.unlink()


def _remove_kube_chains() -> None:
    """What ``kube-proxy --cleanup`` leaves: the KUBE-* chains the kubelet and kube-proxy add to
    the host's tables (KUBE-FIREWALL, ...), and the jumps to them."""
    for command in ("iptables", "ip6tables"):
        if shutil.which(command) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = run(command, "-t", table, "-S", check=False).splitlines()
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and not parts[1].startswith("KUBE-") and "KUBE-" in rule:
                    run(command, "-t", table, "-D", *parts[1:], check=False)
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                run(command, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(command, "-t", table, "-X", chain, check=False)


def teardown(layout: Layout, proxy: Path | None, report: progress.Reporter = progress.silent) -> None:
    """Remove what the node made, after its recorded processes were stopped: the pods' processes
    and containerd's shims, their mounts and network namespaces, kube-proxy's rules, the bridge,
    the pods' cgroups. Safe to run twice and on a half-started node."""
    marker = str(layout.root)
    for _ in range(3):
        victims = _processes_using(marker) + _cgroup_pids(CGROUP_ROOT)
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    for point in _mounts_under((marker, "/run/netns/cni-", "/var/run/netns/cni-")):
        run("umount", "-l", point, check=False)
    # The pods' network namespaces (containerd names them cni-<uuid>) and what libcni caches of
    # them under its fixed directory, by this network's name.
    for netns in Path("/run/netns").glob("cni-*"):
        with contextlib.suppress(OSError):
            netns.unlink()
    for cached in Path("/var/lib/cni/results").glob("*"):
        if cached.name.startswith(("svcreg-pods-", "cni-loopback-")):
            with contextlib.suppress(OSError):
                cached.unlink()
    _remove_stale_shim_sockets()
    if proxy is not None and proxy.exists():
        run(str(proxy), "--cleanup", check=False, timeout=60)
    _remove_kube_chains()
    run("ip", "link", "delete", BRIDGE, check=False)
    _remove_cgroups(CGROUP_ROOT)
    report("node removed: processes, mounts, network namespaces, kube-proxy rules, bridge, cgroups")
