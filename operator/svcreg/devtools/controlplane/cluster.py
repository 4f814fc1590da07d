"""Start, inspect and stop a local control plane: etcd and kube-apiserver on loopback, and with
``node=True`` a real node beside them (``svcreg.devtools.controlplane.node``).

The processes run in the background in their own session, so ``svcreg cluster up`` can return
and a later ``svcreg cluster down`` (or a test session's teardown) stops them. Each process is
recorded with its pid *and* its start time, so ``down`` never signals an unrelated process that
happens to reuse a pid.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import yaml

from svcreg.devtools.controlplane import build, pki, progress
from svcreg.devtools.controlplane import node as node_mod
from svcreg.devtools.controlplane.ports import free_port

STATE_FILE = "cluster.json"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
READY_TIMEOUT_SECONDS = 180.0


class ClusterError(RuntimeError):
    """The control plane could not be started; the message says why and where the logs are."""


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: str
    log: str


@dataclass(frozen=True)
class Cluster:
    """A running control plane as recorded in its state directory."""

    directory: str
    server: str
    kubeconfig: str
    path_dir: str
    etcd_url: str
    processes: tuple[ProcessRecord, ...]
    node: bool = False  # a node (kubelet, containerd, scheduler, ...) runs beside it

    def env(self) -> dict[str, str]:
        """Environment for child processes: the kubeconfig and the built tools first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PATH": f"{self.path_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def exports(self) -> str:
        """Shell lines for ``eval "$(svcreg cluster up)"``."""
        return (
            f"export KUBECONFIG={shlex.quote(self.kubeconfig)}\n"
            f'export PATH={shlex.quote(self.path_dir)}:"$PATH"\n'
        )


def default_directory() -> Path:
    configured = os.environ.get("SVCREG_CLUSTER_DIR")
    return Path(configured).expanduser() if configured else build.cache_root() / "cluster"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left to collect
        return None
    return fields[19]


def _alive(record: ProcessRecord) -> bool:
    return _start_time(record.pid) == record.start_time


def _load(directory: Path) -> Cluster | None:
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    data["processes"] = tuple(ProcessRecord(**p) for p in data["processes"])
    return Cluster(**data)


def _ssl_context(directory: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(directory / "pki" / "ca.crt"))
    context.load_cert_chain(str(directory / "pki" / "admin.crt"), str(directory / "pki" / "admin.key"))
    return context


def _ready(cluster: Cluster) -> bool:
    try:
        response = httpx.get(
            f"{cluster.server}/readyz", verify=_ssl_context(Path(cluster.directory)), timeout=5
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def status(directory: Path | None = None) -> Cluster | None:
    """The running cluster in ``directory``, or None when any of its processes is gone."""
    cluster = _load(directory or default_directory())
    if cluster is None or not all(_alive(p) for p in cluster.processes):
        return None
    return cluster


def _spawn(name: str, command: list[str], log: Path) -> ProcessRecord:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _CHILDREN[process.pid] = process
    for _ in range(100):
        started = _start_time(process.pid)
        if started is not None:
            return ProcessRecord(name=name, pid=process.pid, start_time=started, log=str(log))
        if process.poll() is not None:
            break
        time.sleep(0.01)
    raise ClusterError(f"{name} exited at once; see {log}:\n{_tail(log)}")


# Popen objects of processes this Python process started, so stopping them also reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kubeconfig(path: Path, server: str, keys: pki.Pki) -> None:
    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "svcreg-local",
                "cluster": {"server": server, "certificate-authority-data": b64(keys.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "svcreg-admin",
                "user": {
                    "client-certificate-data": b64(keys.admin_cert),
                    "client-key-data": b64(keys.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "svcreg-local", "context": {"cluster": "svcreg-local", "user": "svcreg-admin"}}
        ],
        "current-context": "svcreg-local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def up(
    directory: Path | None = None,
    report: progress.Reporter = progress.stderr_reporter,
    *,
    node: bool = False,
) -> Cluster:
    """Start etcd and kube-apiserver unless they already run in ``directory``; wait for /readyz.
    With ``node``, also a node beside them, and wait until it is Ready."""
    directory = directory or default_directory()
    running = _reusable(directory, node, report)
    if running is not None:
        return running
    binaries = build.ensure_binaries(report)
    node_binaries = build.ensure_node_binaries(report) if node else None
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    keys = pki.generate(directory / "pki")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    records: list[ProcessRecord] = []
    # With a node, the API server listens on the node's bridge address, which pods reach.
    address = node_mod.NODE_IP if node else "127.0.0.1"
    server = f"https://{address}:{api_port}"
    cluster = Cluster(
        directory=str(directory),
        server=server,
        kubeconfig=str(directory / "kubeconfig"),
        path_dir=str(binaries.path_dir),
        etcd_url=etcd_url,
        processes=(),
        node=node,
    )

    def save() -> None:
        state = asdict(cluster) | {"processes": [asdict(r) for r in records]}
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    try:
        records.append(
            _spawn("etcd", _etcd_command(binaries.etcd, directory, etcd_url, peer_url), logs / "etcd.log")
        )
        save()
        if node:
            node_mod.network_up()
        command = _apiserver_command(
            binaries.kube_apiserver, directory, etcd_url, address, api_port, keys, node
        )
        records.append(_spawn("kube-apiserver", command, logs / "kube-apiserver.log"))
        cluster = Cluster(**{**asdict(cluster), "processes": tuple(records)})
        save()
        _kubeconfig(Path(cluster.kubeconfig), server, keys)
        _wait_ready(cluster, report)
        if node_binaries is not None:

            def spawn(name: str, command: list[str]) -> ProcessRecord:
                nonlocal cluster
                record = _spawn(name, command, logs / f"{name}.log")
                records.append(record)
                cluster = Cluster(**{**asdict(cluster), "processes": tuple(records)})
                save()
                return record

            layout = node_mod.Layout(directory / "node")
            node_mod.start(layout, keys, server, node_binaries, spawn, report)
            _wait_node_ready(cluster, report)
    except BaseException:
        down(directory, report=progress.silent)
        raise
    report(f"control plane ready at {server} in {progress.elapsed(started)}; logs in {logs}")
    return cluster


def _reusable(directory: Path, node: bool, report: progress.Reporter) -> Cluster | None:
    """The control plane already running in ``directory`` as asked; a stale or partial one is
    removed (None), one of the other kind (with or without a node) refused."""
    running = status(directory)
    if running is not None and _ready(running):
        if running.node != node:
            have = "with" if running.node else "without"
            raise ClusterError(
                f"a control plane {have} a node already runs in {directory}; "
                "stop it first with: svcreg cluster down"
            )
        report(f"control plane already running at {running.server}")
        return running
    if running is not None or (directory / STATE_FILE).exists():
        report("found a stale or partial control plane; replacing it")
        down(directory, report=progress.silent)
    if node:
        missing = node_mod.missing_prerequisites()
        if missing:
            raise ClusterError(
                "a node needs " + ", ".join(missing) + " (bash scripts/install.sh installs them)"
            )
    return None


def _etcd_command(etcd: Path, directory: Path, etcd_url: str, peer_url: str) -> list[str]:
    return [
        str(etcd),
        "--name=svcreg",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=svcreg={peer_url}",
        "--unsafe-no-fsync",  # a throwaway test store: durability is not worth the fsyncs
        "--quota-backend-bytes=8589934592",
        "--log-level=warn",
    ]


def _apiserver_command(  # noqa: PLR0917 - one value per flag group
    apiserver: Path, directory: Path, etcd_url: str, address: str, port: int, keys: pki.Pki, node: bool
) -> list[str]:
    return [
        str(apiserver),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={port}",
        f"--cert-dir={directory / 'pki'}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--client-ca-file={keys.ca_cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={keys.sa_public}",
        f"--service-account-signing-key-file={keys.sa_private}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false",
        "--v=1",
        *(_node_flags(keys) if node else _plain_flags()),
    ]


def _plain_flags() -> list[str]:
    # No controller-manager creates default ServiceAccounts, so the admission plugin that
    # requires them would refuse every pod.
    return ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]


def _node_flags(keys: pki.Pki) -> list[str]:
    """A node's kubelet authorizes as a node; the API server reaches the kubelet (logs, exec) at
    its InternalIP with the admin client certificate."""
    return [
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={keys.admin_cert}",
        f"--kubelet-client-key={keys.admin_key}",
        f"--kubelet-certificate-authority={keys.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def node_ready(cluster: Cluster) -> bool:
    """Whether the node reports Ready."""
    try:
        response = httpx.get(
            f"{cluster.server}/api/v1/nodes/{node_mod.NODE_NAME}",
            verify=_ssl_context(Path(cluster.directory)),
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    conditions = response.json().get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _wait_until(
    cluster: Cluster, check: Callable[[Cluster], bool], what: str, log: str, report: progress.Reporter
) -> None:
    """Wait for ``check`` while every recorded process lives; a process that exits, or a wait
    past READY_TIMEOUT_SECONDS, is a ClusterError quoting the log that says why."""
    started = time.monotonic()
    last_report = started
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        for record in cluster.processes:
            if not _alive(record):
                raise ClusterError(
                    f"{record.name} exited while starting; see {record.log}:\n{_tail(Path(record.log))}"
                )
        if check(cluster):
            return
        if time.monotonic() - last_report > 5:
            report(f"  waiting for {what} ({progress.elapsed(started)})")
            last_report = time.monotonic()
        time.sleep(0.25)
    path = Path(cluster.directory) / "logs" / log
    raise ClusterError(f"{what}: not within {READY_TIMEOUT_SECONDS:.0f}s; see {path}:\n" + _tail(path))


def _wait_node_ready(cluster: Cluster, report: progress.Reporter) -> None:
    _wait_until(cluster, node_ready, f"node {node_mod.NODE_NAME} to be Ready", "kubelet.log", report)
    report(f"node {node_mod.NODE_NAME} Ready at {node_mod.NODE_IP}")


def _wait_ready(cluster: Cluster, report: progress.Reporter) -> None:
    _wait_until(cluster, _ready, "kube-apiserver /readyz", "kube-apiserver.log", report)


def _stop(record: ProcessRecord, timeout: float = 15.0) -> None:
    if not _alive(record):
        return
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(record.pid)
        if child is not None and child.poll() is not None:
            break
        if not _alive(record):
            break
        time.sleep(0.05)
    else:
        os.kill(record.pid, signal.SIGKILL)
    child = _CHILDREN.pop(record.pid, None)
    if child is not None:
        child.wait(timeout=timeout)


def restart(
    directory: Path,
    name: str,
    *,
    down_seconds: float = 0.0,
    report: progress.Reporter = progress.silent,
) -> Cluster:
    """Stop one component (``etcd`` or ``kube-apiserver``), leave it down ``down_seconds``,
    start it again with the same command line and record its new pid. For fault tests: the
    honest way to show recovery from an API server or etcd that goes away."""
    cluster = _load(directory)
    if cluster is None:
        raise ClusterError(f"no control plane recorded in {directory}")
    record = next((p for p in cluster.processes if p.name == name), None)
    if record is None or not _alive(record):
        raise ClusterError(f"{name} is not running in {directory}")
    raw = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    command = [part.decode() for part in raw.split(b"\0") if part]
    report(f"stopping {name} (pid {record.pid}) for {down_seconds:g}s")
    _stop(record)
    time.sleep(down_seconds)
    fresh = _spawn(name, command, Path(record.log))
    cluster = replace(cluster, processes=tuple(fresh if p.name == name else p for p in cluster.processes))
    state = asdict(cluster) | {"processes": [asdict(r) for r in cluster.processes]}
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
    _wait_ready(cluster, report)
    return cluster


def down(directory: Path | None = None, report: progress.Reporter = progress.stderr_reporter) -> bool:
    """Stop exactly the processes recorded in ``directory`` and remove its state.

    Returns whether anything was running.
    """
    directory = directory or default_directory()
    cluster = _load(directory)
    was_running = False
    if cluster is not None:
        # In reverse order of starting: the node's parts, then the API server (so it does not
        # log a storm of etcd connection errors), then etcd.
        for record in reversed(cluster.processes):
            if _alive(record):
                was_running = True
                report(f"stopping {record.name} (pid {record.pid})")
                _stop(record)
    layout = node_mod.Layout(directory / "node")
    if (cluster is not None and cluster.node) or layout.root.exists():
        proxy = next(
            (c.install_dir() / "kube-proxy" for c in build.NODE_COMPONENTS if c.name == "node"), None
        )
        node_mod.teardown(layout, proxy, report)
    if directory.exists():
        shutil.rmtree(directory)
    return was_running
