"""The node runs real pods: images built here, scheduled, networked, served through Services and
cluster DNS, and ``svcreg cluster down`` leaves nothing of it behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx

from svcreg.devtools.controlplane import cluster, node

from .conftest import Kubectl, wait_until

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: %(image)s
          imagePullPolicy: Never
          args: [serve, "8080"]
          securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def _namespace(kubectl: Kubectl) -> str:
    name = f"node-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    return name


def test_pods_run_and_a_service_answers_through_cluster_dns(kubectl: Kubectl) -> None:
    ns = _namespace(kubectl)
    kubectl("apply", "-n", ns, "-f", "-", input=WEB % {"image": node.TOOLS_IMAGE})
    kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=120s")
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "json"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {node.NODE_NAME}
    assert all(p["status"]["podIP"].startswith("10.244.0.") for p in pods)
    # Both endpoints in the Service's EndpointSlice, filled by the controller-manager.
    wait_until(
        lambda: (
            len(
                [
                    a
                    for s in json.loads(kubectl("get", "endpointslices", "-n", ns, "-o", "json"))["items"]
                    for e in s.get("endpoints") or []
                    for a in e["addresses"]
                    if (e.get("conditions") or {}).get("ready")
                ]
            )
            == 2
        ),
        "both pods ready in the Service's EndpointSlice",
    )
    # A client pod reaches the Service by its cluster DNS name, through kube-proxy's rules. Like
    # any client of a Service that has just appeared, it retries (the kubelet restarts it on
    # failure, with backoff); what an earlier attempt printed is part of the failure message.
    kubectl(
        "run",
        "client",
        "-n",
        ns,
        f"--image={node.TOOLS_IMAGE}",
        "--image-pull-policy=Never",
        "--restart=OnFailure",
        "--",
        "get",
        f"http://web.{ns}.svc.cluster.local/",
    )
    phase = "jsonpath={.status.phase}"
    try:
        wait_until(
            lambda: kubectl("get", "pod", "client", "-n", ns, "-o", phase) == "Succeeded",
            "the client pod to succeed",
            timeout=180,
        )
    except AssertionError as error:
        shown = kubectl("get", "pod", "client", "-n", ns, "-o", "yaml", check=False, stderr=True)
        earlier = kubectl("logs", "-n", ns, "client", "--previous", check=False, stderr=True)
        events = kubectl("get", "events", "-n", ns, check=False, stderr=True)
        raise AssertionError(f"{error}\n{shown}\nearlier attempt:\n{earlier}\nevents:\n{events}") from None
    # kubectl logs goes API server -> kubelet, at the node's InternalIP.
    answered = kubectl("logs", "-n", ns, "client").strip()
    assert answered in {p["metadata"]["name"] for p in pods}


def test_status_shows_the_node(node_cluster: cluster.Cluster) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "cluster", "status", "--dir", node_cluster.directory],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(rf"^node:\s+{node.NODE_NAME} at {node.NODE_IP}, Ready$", shown, re.M), shown
    for part in (
        "containerd",
        "kubelet",
        "kube-proxy",
        "kube-scheduler",
        "kube-controller-manager",
        "coredns",
    ):
        assert re.search(rf"^{part}:\s+pid \d+", shown, re.M), shown


def _until_announced(process: subprocess.Popen[str], timeout: float = 900) -> list[str]:
    """The curl ``svcreg dev --node`` prints once it is ready, split into arguments."""
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    seen = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if line.strip().startswith("curl "):
                return shlex.split(line)
    finally:
        killer.cancel()
    raise AssertionError(f"svcreg dev --node ended without announcing itself:\n{''.join(seen)[-3000:]}")


def test_svcreg_dev_node_runs_the_demo_in_the_cluster(
    node_cluster: cluster.Cluster, kubectl: Kubectl
) -> None:
    """Runs after the chart's tests have uninstalled their release."""
    command = [sys.executable, "-m", "svcreg.cli", "dev", "--node", "--dir", node_cluster.directory]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=node_cluster.env())
    try:
        curl = _until_announced(process)
        header, url = curl[curl.index("-H") + 1], curl[-1]
        base = url.removesuffix("/v1/capabilities")
        # The host reaches the release's Service address; discovery answers the reader's token
        # with the demo's capabilities, each instance a pod probed through its Service's DNS name.
        auth = {"Authorization": header.split(": ", 1)[1]}

        def greeting() -> list[dict[str, object]]:
            answer = httpx.get(f"{base}/v1/capabilities/greet", headers=auth, timeout=10)
            return list(answer.json().get("items") or []) if answer.status_code == 200 else []

        wait_until(lambda: any(i.get("health") == "Healthy" for i in greeting()), "greet served Healthy")
        assert greeting()[0]["endpoint"] == "http://hello-service.default.svc:80"
        assert kubectl("get", "pods", "-n", "svcreg-system", "-o", "name").strip()
        # The serviceRef example: both demo pods behind its Service are instances.
        wait_until(
            lambda: (
                len(
                    (json.loads(kubectl("get", "svcreg", "web", "-o", "json")).get("status") or {}).get(
                        "instances", []
                    )
                )
                == 2
            ),
            "the serviceRef example's two instances",
        )
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=300) == 0
    # Ctrl-C on a cluster it did not start removes what it added: the release and the demo.
    assert kubectl("get", "deployments,services", "-n", "svcreg-system", "-o", "name").strip() == ""
    assert kubectl("get", "svcreg,deployments", "-n", "default", "-o", "name").strip() == ""


def _left_behind(directory: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if directory in command or "containerd-shim" in command:
                found.append(f"process {entry.name}: {command[:120]}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(directory) or "/netns/cni-" in point:
            found.append(f"mount {point}")
    found += [f"netns {p}" for p in Path("/run/netns").glob("cni-*")]
    for command in ("iptables", "ip6tables"):
        if shutil.which(command):
            saved = subprocess.run([f"{command}-save"], capture_output=True, text=True, check=False).stdout
            found += [f"{command}: {line}" for line in saved.splitlines() if "KUBE-" in line]
    if subprocess.run(["ip", "link", "show", node.BRIDGE], capture_output=True, check=False).returncode == 0:
        found.append(f"link {node.BRIDGE}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*{node.CGROUP_ROOT}")]
    if node.SHIM_SOCKETS.is_dir():
        found += [f"socket {p}" for p in node.SHIM_SOCKETS.iterdir()]
    return found


def test_down_leaves_no_process_mount_namespace_rule_or_cgroup(
    node_cluster: cluster.Cluster, kubectl: Kubectl
) -> None:
    """Runs last: takes the node down with pods still running on it."""
    ns = _namespace(kubectl)
    kubectl("apply", "-n", ns, "-f", "-", input=WEB % {"image": node.TOOLS_IMAGE})
    kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=120s")
    assert _left_behind(node_cluster.directory)  # the check sees a running node
    cluster.down(Path(node_cluster.directory))
    assert _left_behind(node_cluster.directory) == []
    assert not Path(node_cluster.directory).exists()
