"""What the chart does when things go wrong in a real cluster: the operator pod killed and
rescheduled, the operator cut off from the API server (a partition it suspects), and most
Services scaled to zero. Runs after test_chart.py and before test_kube_features.py, whose last
test uninstalls the release."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from svcreg.devtools import image
from svcreg.devtools.controlplane import cluster, node

from .conftest import RELEASE_NS, Kubectl, wait_until

FLEET = 5  # namespaces, each one Deployment behind a Service, registered by its DNS name

TARGET = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: %(tools)s
          imagePullPolicy: Never
          args: [serve, "8080"]
          volumeMounts: [{name: tmp, mountPath: /tmp}]  # where "nodetools fail" leaves its mark
      volumes: [{name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: svcreg.io/v1alpha1
kind: ServiceRegistration
metadata: {name: web}
spec:
  endpoint: http://web.%(ns)s.svc:80
  capabilities: [fleet]
  # Tolerant of a busy 2-core machine: one slow answer is no failure, two refusals are.
  healthCheck: {type: http, path: /healthz, intervalSeconds: 4, timeoutSeconds: 3, failureThreshold: 2}
"""

CONSUMER = """
apiVersion: v1
kind: Pod
metadata: {name: consumer}
spec:
  serviceAccountName: consumer
  containers:
    - name: consumer
      image: %(image)s
      imagePullPolicy: Never
      command: [python, -c, "import time; time.sleep(86400)"]
"""

# One discovery query as an in-cluster caller makes it: the mounted token, the default URL.
QUERY = "from svcreg.client import DiscoveryClient; print(DiscoveryClient().resolve('fleet'))"


def _health(kubectl: Kubectl, ns: str) -> tuple[str | None, dict[str, str]]:
    """The registration's health and each condition's lastTransitionTime."""
    found = json.loads(kubectl("get", "svcreg", "web", "-n", ns, "-o", "json"))
    status = found.get("status") or {}
    times = {c["type"]: c.get("lastTransitionTime", "") for c in status.get("conditions") or []}
    return status.get("health"), times


@pytest.fixture(scope="module")
def fleet(release: str, kubectl: Kubectl) -> Iterator[list[str]]:
    suffix = uuid.uuid4().hex[:5]
    namespaces = [f"fleet{i}-{suffix}" for i in range(FLEET)]
    for ns in namespaces:
        kubectl("create", "namespace", ns)
        kubectl("apply", "-n", ns, "-f", "-", input=TARGET % {"tools": node.TOOLS_IMAGE, "ns": ns})
    for ns in namespaces:
        kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=120s")
    wait_until(lambda: all(_health(kubectl, ns)[0] == "Healthy" for ns in namespaces), "the fleet Healthy")
    # The first one's target fails its health check: a registration that is rightly Unhealthy.
    [pod] = json.loads(kubectl("get", "pods", "-n", namespaces[0], "-l", "app=web", "-o", "json"))["items"]
    kubectl("exec", "-n", namespaces[0], pod["metadata"]["name"], "--", "/nodetools", "fail")
    wait_until(lambda: _health(kubectl, namespaces[0])[0] == "Unhealthy", "the failing target Unhealthy")
    yield namespaces
    for ns in namespaces:
        kubectl("delete", "namespace", ns, "--wait=false")


def _operator_pod(kubectl: Kubectl) -> dict[str, Any]:
    selector = "app.kubernetes.io/component=operator"
    pods = json.loads(kubectl("get", "pods", "-n", RELEASE_NS, "-l", selector, "-o", "json"))["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) <= 1, [p["metadata"]["name"] for p in running]
    return running[0] if running else {}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _metric(pod: dict[str, Any], name: str) -> float:
    """The sum of a metric's samples on the pod's /metrics (reached at its pod IP)."""
    text = httpx.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _readyz(pod: dict[str, Any]) -> httpx.Response:
    return httpx.get(f"http://{pod['status']['podIP']}:8080/readyz", timeout=5)


def test_killing_the_operator_pod_loses_no_registration_and_makes_no_transition(
    fleet: list[str], kubectl: Kubectl
) -> None:
    before = {ns: _health(kubectl, ns) for ns in fleet}
    assert [health for health, _ in before.values()] == ["Unhealthy"] + ["Healthy"] * (FLEET - 1)
    killed = _operator_pod(kubectl)
    kubectl("delete", "pod", "-n", RELEASE_NS, killed["metadata"]["name"], "--grace-period=0", "--force")

    def replacement() -> dict[str, Any]:
        pod = _operator_pod(kubectl)
        return pod if pod and pod["metadata"]["uid"] != killed["metadata"]["uid"] and _ready(pod) else {}

    wait_until(lambda: bool(replacement()), "the Deployment to run a Ready replacement", timeout=180)
    pod = replacement()
    # The replacement joins the prober group and takes the share once the killed pod's Lease
    # expires, then probes every target at least twice (each 4 s): what it writes after that is
    # its own verdict.
    wait_until(
        lambda: _metric(pod, "svcreg_probes_total{") >= 2 * FLEET,
        "the replacement to probe the fleet twice",
        timeout=180,
    )
    after = {ns: _health(kubectl, ns) for ns in fleet}
    assert after == before  # same health, same lastTransitionTime on every condition


@pytest.fixture
def consumer(fleet: list[str], kubectl: Kubectl) -> Iterator[str]:
    ns = fleet[-1]
    kubectl("create", "serviceaccount", "consumer", "-n", ns)
    kubectl("create", "rolebinding", "consumer", "-n", ns, "--clusterrole=svcreg-reader",
            "--serviceaccount", f"{ns}:consumer")  # fmt: skip
    kubectl("apply", "-n", ns, "-f", "-", input=CONSUMER % {"image": image.IMAGE})
    kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/consumer", "--timeout=120s")
    yield ns
    kubectl("delete", "pod", "consumer", "-n", ns, "--grace-period=0", "--force", check=False)


def _partition(node_cluster: cluster.Cluster, pod: dict[str, Any], action: str) -> None:
    """Add (``-I``) or remove (``-D``) rules in the pod's own network namespace that reset its
    connections to the API server, by Service address and by its real one."""
    layout = node.Layout(Path(node_cluster.directory) / "node")
    [state] = pod["status"]["containerStatuses"]
    pid = node.container_pid(layout, state["containerID"])
    api_service = cluster.SERVICE_CIDR.rsplit(".", 1)[0] + ".1"
    for address, port in ((api_service, "443"), (node.NODE_IP, "6443")):
        node.in_network_of(
            pid, "iptables", action, "OUTPUT", "-p", "tcp", "-d", address, "--dport", port,
            "-j", "REJECT", "--reject-with", "tcp-reset",
        )  # fmt: skip


def test_discovery_keeps_answering_while_a_partition_is_suspected(
    fleet: list[str], consumer: str, kubectl: Kubectl, node_cluster: cluster.Cluster
) -> None:
    wait_until(lambda: _ready(_operator_pod(kubectl)), "the operator Ready")
    wait_until(
        lambda: _health(kubectl, consumer)[0] == "Healthy", "the consumer's namespace's target Healthy"
    )
    pod = _operator_pod(kubectl)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    query = ("exec", "-n", consumer, "consumer", "--", "python", "-c", QUERY)
    answered = kubectl(*query)
    assert f"web.{fleet[-1]}.svc" in answered
    _partition(node_cluster, pod, "-I")
    try:
        wait_until(lambda: _readyz(pod).json().get("partitionSuspected") is True, "the partition suspected")
        # Suspected, discovery stays ready: /readyz answers 200, the kubelet keeps the pod Ready
        # in the Service, and an in-cluster caller (reviewed before the cut) is answered from
        # the index through cluster DNS and the Service.
        assert _readyz(pod).status_code == 200
        assert _metric(pod, "svcreg_partition_suspected") == 1
        assert _ready(_operator_pod(kubectl))
        try:
            assert kubectl(*query) == answered
        except AssertionError as error:
            logs = kubectl("logs", "-n", RELEASE_NS, pod["metadata"]["name"], check=False, stderr=True)
            raise AssertionError(f"{error}\noperator log:\n{logs[-4000:]}") from None
        endpoints = json.loads(kubectl("get", "endpointslices", "-n", RELEASE_NS, "-o", "json"))["items"]
        addresses = {a for s in endpoints for e in s.get("endpoints") or [] for a in e["addresses"]}
        assert pod["status"]["podIP"] in addresses
    finally:
        _partition(node_cluster, pod, "-D")
    wait_until(lambda: _readyz(pod).json().get("partitionSuspected") is False, "the partition cleared")
    # Neither probe of the kubelet failed over it: the container was never restarted.
    assert _operator_pod(kubectl)["status"]["containerStatuses"][0]["restartCount"] == restarts


def test_most_services_scaled_to_zero_turn_unhealthy_without_suspecting_a_partition(
    fleet: list[str], kubectl: Kubectl
) -> None:
    """Connections refused by a Service with no endpoints are the truth about that Service,
    however many there are: they are written, and nothing is held."""
    pod = _operator_pod(kubectl)
    # No partition suspected to begin with (a previous test's cut is over).
    wait_until(lambda: _readyz(pod).json().get("partitionSuspected") is False, "no partition suspected")
    held = _metric(pod, "svcreg_held_transitions_total")
    scaled, kept = fleet[1:-1], fleet[-1]
    for ns in scaled:
        kubectl("scale", "-n", ns, "deployment/web", "--replicas=0")
    wait_until(
        lambda: all(_health(kubectl, ns)[0] == "Unhealthy" for ns in scaled),
        "every scaled-to-zero Service's registration Unhealthy",
    )
    assert _health(kubectl, kept)[0] == "Healthy"
    assert _readyz(pod).json()["partitionSuspected"] is False
    assert _metric(pod, "svcreg_held_transitions_total") == held
    assert _ready(_operator_pod(kubectl))
    for ns in scaled:
        kubectl("scale", "-n", ns, "deployment/web", "--replicas=1")
    wait_until(
        lambda: all(_health(kubectl, ns)[0] == "Healthy" for ns in scaled), "the Services back Healthy"
    )
