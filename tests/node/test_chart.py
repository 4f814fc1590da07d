"""The Helm chart on the real node, with the image built here: its pods run, non-root with a
read-only root filesystem and passing probes, and an in-cluster consumer discovers for real
with ``DiscoveryClient()`` and no arguments (the mounted token, cluster DNS, the default URL)."""

from __future__ import annotations

import json
import uuid

from svcreg.devtools import image
from svcreg.devtools.controlplane import node

from .conftest import RELEASE_NS, Kubectl, wait_until


def test_the_chart_runs_non_root_read_only_with_passing_probes(release: str, kubectl: Kubectl) -> None:
    pods = json.loads(kubectl("get", "pods", "-n", RELEASE_NS, "-o", "json"))["items"]
    assert pods
    for pod in pods:
        [container] = pod["spec"]["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
        assert container["readinessProbe"] and container["livenessProbe"]
        [state] = pod["status"]["containerStatuses"]
        assert state["ready"] is True and state["restartCount"] == 0, state
        name = pod["metadata"]["name"]
        uid = kubectl("exec", "-n", RELEASE_NS, name, "--", "python", "-c", "import os; print(os.getuid())")
        assert uid.strip() not in ("", "0")
        write = (
            "import pathlib\ntry:\n pathlib.Path('/x').write_text('x')\nexcept OSError as e:\n print(e.errno)"
        )
        refused = kubectl("exec", "-n", RELEASE_NS, name, "--", "python", "-c", write)
        assert refused.strip() == "30"  # EROFS: the root filesystem is read-only


CONSUMER = """
apiVersion: v1
kind: Pod
metadata: {name: %(name)s}
spec:
  serviceAccountName: %(account)s
  restartPolicy: Never
  containers:
    - name: consumer
      image: %(image)s
      imagePullPolicy: Never
      command:
        - python
        - -c
        - |
          import httpx
          from svcreg.client import DiscoveryClient
          url = DiscoveryClient().resolve("greeting")
          print(httpx.get(url, timeout=10).text)
"""

WEB = """
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
        - {name: web, image: %(tools)s, imagePullPolicy: Never, args: [serve, "8080"]}
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
  endpoint: http://web.%(ns)s.svc.cluster.local:80
  capabilities: [greeting]
  healthCheck: {path: /, intervalSeconds: 2, timeoutSeconds: 1}
"""


def _finished(kubectl: Kubectl, ns: str, pod: str) -> str:
    phase = ""

    def done() -> bool:
        nonlocal phase
        phase = kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.phase}")
        return phase in ("Succeeded", "Failed")

    wait_until(done, f"pod {pod} to finish", timeout=180)
    return phase


def test_an_in_cluster_consumer_discovers_with_no_arguments(release: str, kubectl: Kubectl) -> None:
    ns = f"consumer-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    kubectl("apply", "-n", ns, "-f", "-", input=WEB % {"tools": node.TOOLS_IMAGE, "ns": ns})
    kubectl("wait", "-n", ns, "--for=jsonpath={.status.health}=Healthy", "svcreg/web", "--timeout=120s")
    for account in ("consumer", "stranger"):
        kubectl("create", "serviceaccount", account, "-n", ns)
    kubectl("create", "rolebinding", "consumer-reads", "-n", ns, "--clusterrole=svcreg-reader",
            f"--serviceaccount={ns}:consumer")  # fmt: skip
    pod = {"image": image.IMAGE}
    kubectl("apply", "-n", ns, "-f", "-", input=CONSUMER % {**pod, "name": "bound", "account": "consumer"})
    kubectl("apply", "-n", ns, "-f", "-", input=CONSUMER % {**pod, "name": "unbound", "account": "stranger"})
    assert _finished(kubectl, ns, "bound") == "Succeeded", kubectl("logs", "-n", ns, "bound")
    served = kubectl("logs", "-n", ns, "bound").strip()
    web = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "json"))["items"]
    assert served == web[0]["metadata"]["name"]  # the instance answered, through its Service
    assert _finished(kubectl, ns, "unbound") == "Failed"
    assert "403" in kubectl("logs", "-n", ns, "unbound")
