"""What only a running cluster shows: the controller-manager's EndpointSlices behind serviceRef,
the garbage collector removing a crashed pod's self-registration, the chart's ClusterRoles
aggregated into view and edit, and helm upgrade and uninstall. Runs before test_node.py, whose
last test takes the node down."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from svcreg.devtools import image
from svcreg.devtools.controlplane import node, pki

from .conftest import RELEASE_NS, Kubectl, uninstall, upgrade, wait_until

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: %(tools)s
          imagePullPolicy: Never
          args: [serve, "8080"]
          ports: [{name: http, containerPort: 8080}]
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  selector: {app: app}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: svcreg.io/v1alpha1
kind: ServiceRegistration
metadata: {name: app}
spec:
  serviceRef: {name: app, port: http}
  capabilities: [by-service]
  healthCheck: {type: http, path: /healthz, intervalSeconds: 2, timeoutSeconds: 1}
"""


def _namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    return name


def _instances(kubectl: Kubectl, ns: str) -> list[dict[str, object]]:
    status = json.loads(kubectl("get", "svcreg", "app", "-n", ns, "-o", "json")).get("status") or {}
    return list(status.get("instances") or [])


def _pods(kubectl: Kubectl, ns: str, selector: str) -> list[dict[str, object]]:
    return list(json.loads(kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))["items"])


def test_service_ref_follows_a_real_deployment(release: str, kubectl: Kubectl) -> None:
    ns = _namespace(kubectl, "ref")
    kubectl("apply", "-n", ns, "-f", "-", input=APP % {"tools": node.TOOLS_IMAGE})
    kubectl("rollout", "status", "-n", ns, "deployment/app", "--timeout=120s")
    pods = {p["status"]["podIP"] for p in _pods(kubectl, ns, "app=app")}  # type: ignore[index]
    # Every ready pod behind the Service is an instance, from the EndpointSlices the
    # controller-manager fills.
    wait_until(
        lambda: {i["address"] for i in _instances(kubectl, ns) if i.get("health") == "Healthy"} == pods,
        "both pods to be Healthy instances",
    )
    # One pod's health endpoint starts failing: that instance turns Unhealthy, the other not.
    victim, well = _pods(kubectl, ns, "app=app")

    def health(pod: dict[str, object]) -> object:
        address = pod["status"]["podIP"]  # type: ignore[index]
        return next((i.get("health") for i in _instances(kubectl, ns) if i["address"] == address), None)

    kubectl("exec", "-n", ns, victim["metadata"]["name"], "--", "/nodetools", "fail")  # type: ignore[index]
    wait_until(
        lambda: health(victim) == "Unhealthy" and health(well) == "Healthy",
        "the failing pod's instance to turn Unhealthy while the other stays Healthy",
    )
    # Deleting a pod removes it; the Deployment's replacement becomes an instance instead.
    kubectl("delete", "pod", "-n", ns, victim["metadata"]["name"], "--wait=true")  # type: ignore[index]
    gone = victim["status"]["podIP"]  # type: ignore[index]
    wait_until(
        lambda: (
            gone not in {i["address"] for i in _instances(kubectl, ns)}
            and len([i for i in _instances(kubectl, ns) if i.get("health") == "Healthy"]) == 2
        ),
        "the deleted pod to leave and its replacement to be a Healthy instance",
    )
    # Scaled to zero: no instance is left to serve.
    kubectl("scale", "-n", ns, "deployment/app", "--replicas=0")
    wait_until(lambda: _instances(kubectl, ns) == [], "no instances once scaled to zero")


SELF = """
apiVersion: v1
kind: Pod
metadata: {name: self-registering}
spec:
  serviceAccountName: registrar
  containers:
    - name: app
      image: %(image)s
      imagePullPolicy: Never
      env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: SVCREG_SERVICE_PORT, value: "8080"}
        - {name: SVCREG_SERVICE_CHECK, value: none}
        - {name: SVCREG_SERVICE_TAGS, value: "self,gc"}
      command:
        - python
        - -c
        - |
          import asyncio
          from svcreg.client.selfregister import SelfRegistration
          async def main():
              registration = SelfRegistration.from_env()  # the downward API and SVCREG_SERVICE_*
              await registration.start()
              print("registered", flush=True)
              await asyncio.Event().wait()
          asyncio.run(main())
"""


def test_the_garbage_collector_removes_a_killed_pods_self_registration(
    release: str, kubectl: Kubectl
) -> None:
    ns = _namespace(kubectl, "gc")
    kubectl("create", "serviceaccount", "registrar", "-n", ns)
    kubectl("create", "rolebinding", "registrar", "-n", ns, "--clusterrole=edit",
            f"--serviceaccount={ns}:registrar")  # fmt: skip
    kubectl("apply", "-n", ns, "-f", "-", input=SELF % {"image": image.IMAGE})
    try:
        wait_until(
            lambda: kubectl("get", "svcreg", "self-registering", "-n", ns, check=False).strip() != "",
            "the pod to register itself",
        )
    except AssertionError as error:
        logs = kubectl("logs", "self-registering", "-n", ns, check=False, stderr=True)
        raise AssertionError(f"{error}; the pod said:\n{logs[-3000:]}") from None
    stored = json.loads(kubectl("get", "svcreg", "self-registering", "-n", ns, "-o", "json"))
    assert [o["kind"] for o in stored["metadata"]["ownerReferences"]] == ["Pod"]
    pod_ip = kubectl("get", "pod", "self-registering", "-n", ns, "-o", "jsonpath={.status.podIP}")
    assert stored["spec"]["endpoint"] == f"http://{pod_ip}:8080" and stored["spec"]["tags"] == ["self", "gc"]
    # No clean shutdown: the pod is killed and removed at once.
    kubectl("delete", "pod", "self-registering", "-n", ns, "--grace-period=0", "--force")
    wait_until(
        lambda: (
            "NotFound" in kubectl("get", "svcreg", "self-registering", "-n", ns, check=False, stderr=True)
        ),
        "the garbage collector to delete the registration",
    )


def test_the_chart_roles_aggregate_into_view_and_edit(release: str, kubectl: Kubectl) -> None:
    ns = _namespace(kubectl, "agg")
    for account, role in (("viewer", "view"), ("editor", "edit")):
        kubectl("create", "serviceaccount", account, "-n", ns)
        kubectl("create", "rolebinding", account, "-n", ns, f"--clusterrole={role}",
                f"--serviceaccount={ns}:{account}")  # fmt: skip

    def can(account: str, verb: str) -> bool:
        answer = kubectl(
            "auth", "can-i", verb, "serviceregistrations.svcreg.io", "-n", ns,
            f"--as=system:serviceaccount:{ns}:{account}", check=False,
        )  # fmt: skip
        return answer.strip() == "yes"

    # The controller-manager's aggregation controller fills view and edit from the chart's roles.
    wait_until(lambda: can("viewer", "list") and can("editor", "create"), "aggregation into view and edit")
    assert not can("viewer", "create")


def test_helm_upgrade_changes_a_value_and_keeps_serving(release: str, kubectl: Kubectl) -> None:
    upgrade("--set", "probeConcurrency=50")
    selector = "app.kubernetes.io/component=operator"
    found = kubectl("get", "deployment", "-n", RELEASE_NS, "-l", selector, "-o", "json")
    deployment = json.loads(found)["items"][0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--probe-concurrency=50" in args
    kubectl("rollout", "status", "-n", RELEASE_NS, f"deployment/{deployment['metadata']['name']}",
            "--timeout=180s")  # fmt: skip


TLS_CONSUMER = """
apiVersion: v1
kind: Pod
metadata: {name: tls-consumer}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
    - name: consumer
      image: %(image)s
      imagePullPolicy: Never
      env:
        - {name: SVCREG_URL, value: "https://svcreg.svcreg-system.svc:8080"}
        - {name: SVCREG_CA_FILE, value: /etc/svcreg-ca/ca.crt}
      volumeMounts: [{name: ca, mountPath: /etc/svcreg-ca}]
      command:
        - python
        - -c
        - |
          from svcreg.client import DiscoveryClient
          print(DiscoveryClient().resolve("tls-check"))
  volumes: [{name: ca, configMap: {name: svcreg-ca}}]
"""


def test_helm_upgrade_to_tls_serves_https_to_in_cluster_callers(
    release: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """tls.secretName: the pods serve HTTPS with the Secret's certificate, the kubelet's probes
    pass over HTTPS (the rollout completes), and a consumer trusting the CA is answered."""
    ca, cert, key = pki.serving_pair(
        tmp_path, ["svcreg.svcreg-system.svc", "svcreg-operator.svcreg-system.svc"]
    )
    files = (f"--from-file=tls.crt={cert}", f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca}")
    kubectl("create", "secret", "generic", "svcreg-tls", "-n", RELEASE_NS, *files)
    upgrade("--set", "tls.secretName=svcreg-tls")
    ns = _namespace(kubectl, "tls")
    kubectl("create", "serviceaccount", "reader", "-n", ns)
    kubectl("create", "rolebinding", "reader", "-n", ns, "--clusterrole=svcreg-reader",
            f"--serviceaccount={ns}:reader")  # fmt: skip
    kubectl("create", "configmap", "svcreg-ca", "-n", ns, f"--from-file=ca.crt={ca}")
    registration = {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": "tls-check"},
        "spec": {"endpoint": "http://tls-check.example:80", "capabilities": ["tls-check"],
                 "healthCheck": {"type": "none"}},
    }  # fmt: skip
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(registration))
    # Right after a rolling upgrade the registration may belong to the departing pod's share
    # until its Lease is gone: the consumer asks once it has been evaluated.
    kubectl("wait", "-n", ns, "--for=condition=Ready", "svcreg/tls-check", "--timeout=100s")
    kubectl("apply", "-n", ns, "-f", "-", input=TLS_CONSUMER % {"image": image.IMAGE})
    wait_until(
        lambda: (
            kubectl("get", "pod", "tls-consumer", "-n", ns, "-o", "jsonpath={.status.phase}")
            in ("Succeeded", "Failed")
        ),
        "the consumer to finish",
    )
    logs = kubectl("logs", "tls-consumer", "-n", ns, stderr=True)
    assert "http://tls-check.example:80" in logs, logs[-2000:]
    upgrade("--set", "tls.secretName=")  # back to plain HTTP for the tests after this one


def test_helm_uninstall_leaves_only_the_crds(release: str, kubectl: Kubectl) -> None:
    """Runs last of the chart's tests (test_node.py, after it, needs no release)."""
    selector = f"app.kubernetes.io/instance={release}"
    kinds = "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets"
    assert kubectl("get", kinds, "-A", "-l", selector, "-o", "name").strip()
    uninstall()
    wait_until(
        lambda: (
            kubectl("get", kinds, "-A", "-l", selector, "-o", "name").strip() == ""
            and kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").strip() == ""
            and kubectl("get", "pods", "-n", RELEASE_NS, "-o", "name").strip() == ""
        ),
        "every object of the release and its pods to be gone",
    )
    # As Helm does, the CRDs stay: registrations are users' data.
    assert kubectl("get", "crd", "serviceregistrations.svcreg.io", "-o", "name").strip()
