"""The Helm chart: lint, render, schema, install into the real API server, and RBAC proven both
ways (the chart's permissions suffice; removing any one rule fails with a clear 403)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import HttpTarget, http_target

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

CHART = kube.REPO_ROOT / "deploy" / "helm" / "svcreg"
RELEASE_NS = "svcreg-system"
# `helm template` assumes an old Kubernetes unless told; the chart needs ValidatingAdmissionPolicy (1.30+).
KUBE_VERSION = "v1.36.3"

# Each documented option set; each must lint, render, and be accepted by the API server.
OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "replicas": {
        "discovery": {"replicas": 3},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
    },
    "autoscaling": {
        "discovery": {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}}
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "from": [{"namespaceSelector": {"matchLabels": {"svcreg-client": "true"}}}],
        }
    },
    "service-monitor": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"team": "x"}}},
    "flags": {
        "tokenAudiences": ["svcreg"],
        "probeAllow": ["10.0.0.0/8"],
        "corsOrigins": ["https://ui.example"],
        "maxWaitSeconds": 60,
        "logLevel": "DEBUG",
        "probeConcurrency": 50,
    },
    "no-consumer-roles": {"rbac": {"consumerRoles": False}},
    "admission-webhook": {
        "admissionWebhook": {
            "enabled": True,
            "secretName": "svcreg-admission",
            "certManagerCertificate": "svcreg-admission",
        }
    },
    "no-registration-api": {"registrationApi": {"enabled": False}},
    "bring-your-own-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}},
    "image": {
        "image": {"repository": "registry.example/svcreg", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
    },
    "scheduling": {
        "operator": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "system-cluster-critical",
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "X", "value": "1"}],
            "podAnnotations": {"a": "b"},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        },
        "service": {"type": "NodePort", "port": 9090, "annotations": {"team": "search"}},
    },
}


@dataclass
class Helm:
    env: dict[str, str]
    directory: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["helm", *args], check=False, env=self.env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def values_file(self, values: dict[str, Any]) -> str:
        path = self.directory / f"values-{abs(hash(repr(values)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def render(self, values: dict[str, Any], *extra: str, release: str = "svcreg") -> list[dict[str, Any]]:
        out = self(
            "template",
            release,
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "-n",
            RELEASE_NS,
            "-f",
            self.values_file(values),
            *extra,
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def helm(k8s: Kube, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm")
    env = k8s.env | {
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Helm(env, home)


def kinds(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Deployment"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


# --- lint, render, schema ------------------------------------------------------------------


def test_chart_crds_are_exactly_deploy_crds() -> None:
    ours = sorted(p.name for p in (CHART / "crds").iterdir())
    assert ours == sorted(p.name for p in kube.CRD_DIR.iterdir())
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (kube.CRD_DIR / name).read_bytes(), name


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_lint_strict_is_clean(helm: Helm, option: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", helm.values_file(OPTIONS[option]))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_pod_is_hardened(helm: Helm, option: str) -> None:
    docs = helm.render(OPTIONS[option])
    assert deployments(docs)
    for deployment in deployments(docs):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        box = container(deployment)
        assert box["securityContext"]["readOnlyRootFilesystem"] is True
        assert box["securityContext"]["allowPrivilegeEscalation"] is False
        assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert box["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert box["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert box["resources"]["requests"]
        assert {"name": "tmp", "mountPath": "/tmp"} in box["volumeMounts"]


def test_defaults_render_one_operator_of_a_prober_group_cluster_wide(helm: Helm) -> None:
    objects = kinds(helm.render({}))
    operator = objects[("Deployment", "svcreg")]
    assert operator["spec"]["replicas"] == 1
    # Sharing probing makes two pods safe at once: a rolling update keeps probing going.
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    args = container(operator)["args"]
    assert args[0] == "run" and "--standalone" not in args and "--prober-group=svcreg" in args
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in container(operator)["env"]
    }
    assert env["POD_NAME"] == "metadata.name" and env["POD_IP"] == "status.podIP"
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    assert "topologySpreadConstraints" not in operator["spec"]["template"]["spec"]
    lease_role = objects[("Role", "svcreg-prober-group")]
    assert lease_role["metadata"]["namespace"] == RELEASE_NS
    assert lease_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "create", "update", "delete"],
        }
    ]
    assert not any(a.startswith("--namespace") for a in args)
    assert container(operator)["image"] == "ghcr.io/svcreg/svcreg:0.1.0"
    assert ("Deployment", "svcreg-discovery") not in objects
    for absent in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"):
        assert not [key for key in objects if key[0] == absent], absent
    assert [key for key in objects if key[0] == "Role"] == [("Role", "svcreg-prober-group")]

    assert ("ClusterRole", "svcreg-operator") in objects
    assert ("ClusterRole", "svcreg-reader") in objects and ("ClusterRole", "svcreg-heartbeat") in objects
    heartbeat = objects[("ClusterRole", "svcreg-heartbeat")]
    assert heartbeat["rules"] == [
        {"apiGroups": ["svcreg.io"], "resources": ["serviceregistrations"], "verbs": ["heartbeat"]}
    ]
    assert heartbeat["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    reader = objects[("ClusterRole", "svcreg-reader")]
    assert reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert objects[("Service", "svcreg")]["spec"]["selector"] == {
        "app.kubernetes.io/name": "svcreg",
        "app.kubernetes.io/instance": "svcreg",
    }


def test_operator_replicas_spread_over_nodes(helm: Helm) -> None:
    operator = kinds(helm.render({"operator": {"replicas": 3}}))[("Deployment", "svcreg")]
    assert operator["spec"]["replicas"] == 3
    [spread] = operator["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_operator_rbac_is_exactly_what_svcreg_uses(helm: Helm) -> None:
    objects = kinds(helm.render({}))
    assert objects[("ClusterRole", "svcreg-operator")]["rules"] == [
        {
            "apiGroups": ["svcreg.io"],
            "resources": ["serviceregistrations"],
            "verbs": ["get", "list", "watch", "delete"],
        },
        {"apiGroups": ["svcreg.io"], "resources": ["serviceregistrations/status"], "verbs": ["patch"]},
        # ServicePolicies: read, and their status written (healthy, total, Panic).
        {"apiGroups": ["svcreg.io"], "resources": ["servicepolicies"], "verbs": ["list", "watch"]},
        {"apiGroups": ["svcreg.io"], "resources": ["servicepolicies/status"], "verbs": ["patch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        # healthCheck.tls.caBundleRef: one named ConfigMap in the registration's namespace.
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        # The registration API writes as the calling ServiceAccount, and may do nothing else.
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["serviceaccounts"],
            "verbs": ["impersonate:serviceaccount"],
        },
        {
            "apiGroups": ["svcreg.io"],
            "resources": ["serviceregistrations"],
            "verbs": [
                "impersonate-on:serviceaccount:create",
                "impersonate-on:serviceaccount:patch",
                "impersonate-on:serviceaccount:delete",
            ],
        },
    ]
    # CA bundles from Secrets only when asked for; ConfigMaps can be turned off.
    from_secrets = kinds(helm.render({"probeCaBundles": {"configMaps": False, "secrets": True}}))
    resources = [r["resources"] for r in from_secrets[("ClusterRole", "svcreg-operator")]["rules"]]
    assert ["secrets"] in resources and ["configmaps"] not in resources
    secret_rule = next(
        r for r in from_secrets[("ClusterRole", "svcreg-operator")]["rules"] if r["resources"] == ["secrets"]
    )
    assert secret_rule["verbs"] == ["get"]
    # Without impersonation (older API servers), svcreg writes with rights of its own.
    legacy = kinds(helm.render({"registrationApi": {"impersonate": False}}))
    assert legacy[("ClusterRole", "svcreg-operator")]["rules"][-1] == {
        "apiGroups": ["svcreg.io"],
        "resources": ["serviceregistrations"],
        "verbs": ["create", "patch"],
    }
    assert objects[("ClusterRole", "svcreg-reviews")]["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    for key, role in objects.items():
        if key[0] in ("ClusterRole", "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], key


def test_watch_namespaces_make_namespaced_roles(helm: Helm) -> None:
    objects = kinds(helm.render({**OPTIONS["namespaced"], "discovery": {"replicas": 1}}))
    docs = helm.render({**OPTIONS["namespaced"], "discovery": {"replicas": 1}})
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"}
    assert roles == {
        ("team-a", "svcreg-operator"),
        ("team-b", "svcreg-operator"),
        ("team-a", "svcreg-discovery"),
        ("team-b", "svcreg-discovery"),
        (RELEASE_NS, "svcreg-prober-group"),  # the group's Leases live beside the operator
    }
    assert ("ClusterRole", "svcreg-operator") not in objects
    assert ("ClusterRole", "svcreg-discovery") not in objects
    assert ("ClusterRole", "svcreg-reviews") in objects  # reviews are cluster-scoped in any mode
    for deployment in deployments(docs):
        args = container(deployment)["args"]
        assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_discovery_replicas_pdb_and_hpa(helm: Helm) -> None:
    objects = kinds(helm.render(OPTIONS["replicas"]))
    replicas = objects[("Deployment", "svcreg-discovery")]
    assert replicas["spec"]["replicas"] == 3
    args = container(replicas)["args"]
    assert "--discovery-only" in args and "--standalone" not in args
    assert "--operator-url=http://svcreg-operator.svcreg-system.svc:8080" in args
    assert replicas["spec"]["template"]["spec"]["serviceAccountName"] == "svcreg-discovery"
    assert objects[("ClusterRole", "svcreg-discovery")]["rules"] == [
        {
            "apiGroups": ["svcreg.io"],
            "resources": ["serviceregistrations"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["svcreg.io"], "resources": ["servicepolicies"], "verbs": ["list", "watch"]},
    ]
    pdb = objects[("PodDisruptionBudget", "svcreg-discovery")]
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "discovery"
    assert ("Service", "svcreg-operator") in objects
    # The operator merges each replica's consumers through a headless Service of them.
    replicas = objects[("Service", "svcreg-discovery-replicas")]
    assert replicas["spec"]["clusterIP"] == "None"
    assert replicas["spec"]["selector"]["app.kubernetes.io/component"] == "discovery"
    operator_args = container(objects[("Deployment", "svcreg")])["args"]
    assert "--consumer-replica=http://svcreg-discovery-replicas.svcreg-system.svc:8080" in operator_args
    assert not any(
        a.startswith("--consumer-replica")
        for a in container(kinds(helm.render({}))[("Deployment", "svcreg")])["args"]
    )

    scaled = kinds(helm.render(OPTIONS["autoscaling"]))
    hpa = scaled[("HorizontalPodAutoscaler", "svcreg-discovery")]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert "replicas" not in scaled[("Deployment", "svcreg-discovery")]["spec"]


def test_the_admission_webhook_is_off_by_default_and_wired_when_on(helm: Helm) -> None:
    assert not any(d["kind"] == "ValidatingWebhookConfiguration" for d in helm.render({}))
    objects = kinds(helm.render(OPTIONS["admission-webhook"]))
    webhook = objects[("ValidatingWebhookConfiguration", "svcreg")]
    [hook] = webhook["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    service = hook["clientConfig"]["service"]
    assert (service["name"], service["namespace"], service["port"]) == (
        "svcreg-admission",
        "svcreg-system",
        443,
    )
    assert service["path"] == "/validate/serviceregistrations"
    assert (
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == "svcreg-system/svcreg-admission"
    )
    assert objects[("Service", "svcreg-admission")]["spec"]["ports"][0]["targetPort"] == 9443
    operator = container(objects[("Deployment", "svcreg")])
    assert "--admission-port=9443" in operator["args"]
    assert {"name": "admission", "mountPath": "/etc/svcreg/admission", "readOnly": True} in operator[
        "volumeMounts"
    ]
    # Only the operator holds the webhook's key.
    replicas = kinds(helm.render({**OPTIONS["admission-webhook"], "discovery": {"replicas": 2}}))
    assert "admission" not in {
        m["name"] for m in container(replicas[("Deployment", "svcreg-discovery")])["volumeMounts"]
    }


def test_network_policy_and_service_monitor(helm: Helm) -> None:
    policy = kinds(helm.render(OPTIONS["network-policy"]))[("NetworkPolicy", "svcreg")]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"][0]["from"] == OPTIONS["network-policy"]["networkPolicy"]["from"]
    # A ServiceMonitor only where the monitoring API exists.
    assert not [d for d in helm.render(OPTIONS["service-monitor"]) if d["kind"] == "ServiceMonitor"]
    with_api = helm.render(
        OPTIONS["service-monitor"], "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"
    )
    # The PrometheusRule likewise, carrying exactly the promtool-tested rules file.
    assert not [
        d for d in helm.render({"prometheusRule": {"enabled": True}}) if d["kind"] == "PrometheusRule"
    ]
    rule = kinds(
        helm.render(
            {"prometheusRule": {"enabled": True}}, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"
        )
    )[("PrometheusRule", "svcreg")]
    alerts = (
        Path(__file__).resolve().parents[2] / "deploy" / "helm" / "svcreg" / "files" / "svcreg-alerts.yaml"
    )
    assert rule["spec"] == yaml.safe_load(alerts.read_text())
    monitor = kinds(with_api)[("ServiceMonitor", "svcreg")]
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scheme": "http"}
    ]


def test_flags_image_and_scheduling_reach_the_pods(helm: Helm) -> None:
    args = container(kinds(helm.render(OPTIONS["flags"]))[("Deployment", "svcreg")])["args"]
    for flag in (
        "--token-audience=svcreg",
        "--probe-allow=10.0.0.0/8",
        "--cors-origin=https://ui.example",
        "--max-wait=60",
        "--log-level=DEBUG",
        "--probe-concurrency=50",
    ):
        assert flag in args
    imaged = kinds(helm.render(OPTIONS["image"]))[("Deployment", "svcreg")]
    assert container(imaged)["image"] == "registry.example/svcreg:1.2.3"
    assert imaged["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    scheduled = kinds(helm.render(OPTIONS["scheduling"]))
    pod = scheduled[("Deployment", "svcreg")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert "--verbose" in pod["containers"][0]["args"]
    assert {"name": "X", "value": "1"} in pod["containers"][0]["env"]
    assert scheduled[("Service", "svcreg")]["spec"]["type"] == "NodePort"
    assert scheduled[("Service", "svcreg")]["spec"]["ports"][0]["port"] == 9090


def test_registration_api_can_be_turned_off(helm: Helm) -> None:
    objects = kinds(helm.render(OPTIONS["no-registration-api"]))
    assert "--no-registration-api" in container(objects[("Deployment", "svcreg")])["args"]
    rules = objects[("ClusterRole", "svcreg-operator")]["rules"]
    assert [r["resources"] for r in rules if {"create", "patch"} & set(r["verbs"])] == [
        ["serviceregistrations/status"],
        ["servicepolicies/status"],
        ["events"],
    ]


def test_rbac_and_service_accounts_can_be_brought(helm: Helm) -> None:
    docs = helm.render(OPTIONS["bring-your-own-rbac"])
    assert not [
        d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRoleBinding")
    ]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"} == {
        "svcreg-reader",
        "svcreg-editor",
        "svcreg-heartbeat",
        "svcreg-reporter",
    }
    assert deployments(docs)[0]["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert not [
        d
        for d in helm.render(OPTIONS["no-consumer-roles"])
        if d["kind"] == "ClusterRole"
        and d["metadata"]["name"] in ("svcreg-reader", "svcreg-editor", "svcreg-heartbeat", "svcreg-reporter")
    ]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicaCount": 2}, "replicaCount"),
        ({"operator": {"replicas": 0}}, "replicas"),
        ({"probeConcurrency": "many"}, "probeConcurrency"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"logLevel": "LOUD"}, "logLevel"),
        ({"service": {"port": 70000}}, "port"),
        ({"maxWaitSeconds": 900}, "maxWaitSeconds"),
        ({"probeAllow": ["everything"]}, "probeAllow"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, values: dict[str, Any], named: str) -> None:
    result = helm("template", "svcreg", str(CHART), "-f", helm.values_file(values), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


# --- the real API server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(helm: Helm, k8s: Kube) -> Iterator[str]:
    """The chart with defaults, installed as release "svcreg" into svcreg-system."""
    helm("install", "svcreg", str(CHART), "-n", RELEASE_NS, "--create-namespace")
    yield "svcreg"
    helm("uninstall", "svcreg", "-n", RELEASE_NS, check=False)


def test_install_is_accepted_by_the_api_server(installed: str, k8s: Kube) -> None:
    apps = client.AppsV1Api(k8s.api)
    operator = apps.read_namespaced_deployment("svcreg", RELEASE_NS)
    assert operator.spec.strategy.type == "RollingUpdate"
    assert k8s.core.read_namespaced_service_account("svcreg", RELEASE_NS).metadata.name == "svcreg"
    roles = (
        "svcreg-operator",
        "svcreg-reviews",
        "svcreg-reader",
        "svcreg-editor",
        "svcreg-heartbeat",
        "svcreg-reporter",
    )
    for role in roles:
        assert k8s.rbac.read_cluster_role(role).rules
    assert k8s.core.read_namespaced_service("svcreg", RELEASE_NS).spec.ports[0].port == 8080


def test_install_with_every_optional_object(helm: Helm, k8s: Kube) -> None:
    watched = k8s.create_namespace("watched")
    namespace = k8s.create_namespace("opt")
    values = {
        "watchNamespaces": [watched],
        "discovery": {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": OPTIONS["network-policy"]["networkPolicy"],
        "rbac": {"consumerRoles": False},
        **OPTIONS["flags"],
    }
    release = "optional"
    try:
        helm("install", release, str(CHART), "-n", namespace, "-f", helm.values_file(values))
        listed = helm("get", "manifest", release, "-n", namespace).stdout
        made = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(listed) if d}
        for expected in [
            ("Deployment", "optional-svcreg"),
            ("Deployment", "optional-svcreg-discovery"),
            ("HorizontalPodAutoscaler", "optional-svcreg-discovery"),
            ("PodDisruptionBudget", "optional-svcreg-discovery"),
            ("NetworkPolicy", "optional-svcreg"),
            ("Role", "optional-svcreg-operator"),
        ]:
            assert expected in made, expected
        role = k8s.rbac.read_namespaced_role("optional-svcreg-operator", watched)
        assert role.rules[0].resources == ["serviceregistrations"]
    finally:
        helm("uninstall", release, "-n", namespace, check=False)


# --- RBAC proven both ways -----------------------------------------------------------------------


def operator_as(k8s: Kube, control_plane: Cluster, service_account: str, directory: Path) -> OperatorProcess:
    """As the chart runs it: a member of a prober group, its Lease in the release namespace."""
    process = OperatorProcess(
        control_plane, directory / "operator.log", "--probe-allow", "127.0.0.0/8",
        "--lease-namespace", RELEASE_NS, "--prober-group", service_account, standalone=False,
    )  # fmt: skip
    process.env["KUBECONFIG"] = str(k8s.kubeconfig_as(RELEASE_NS, service_account, directory / "kubeconfig"))
    return process


def bind_cluster_role(k8s: Kube, namespace: str, service_account: str, role: str) -> None:
    k8s.rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=f"{service_account}-{role}"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)],
        ),
    )


def watched_registration(k8s: Kube, target: HttpTarget) -> tuple[str, str]:
    namespace = k8s.create_namespace("rbac")
    spec: dict[str, Any] = {
        "service": "hello",
        "version": "1.0.0",
        "endpoint": target.url,
        "capabilities": ["greeting"],
        "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 0.5},
    }
    k8s.apply(registration("hello", spec), namespace)
    # One probed over TLS with a CA bundle from a ConfigMap: svcreg needs get on configmaps.
    pinned = {**spec, "endpoint": target.url.replace("http://", "https://")}
    pinned["healthCheck"] = {
        **spec["healthCheck"],
        "tls": {"caBundleRef": {"kind": "ConfigMap", "name": "probe-ca", "key": "ca.crt"}},
    }
    k8s.apply(registration("hello-pinned", pinned), namespace)
    return namespace, "hello"


def test_the_chart_permissions_run_the_whole_flow(
    installed: str, k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    with http_target() as target:
        namespace, name = watched_registration(k8s, target)
        k8s.create_service_account(namespace, "consumer")
        bind_cluster_role(k8s, namespace, "consumer", "svcreg-reader")
        bind_cluster_role(k8s, namespace, "consumer", "svcreg-heartbeat")
        k8s.apply(
            registration("beats", {"endpoint": "http://beats.example:80", "healthCheck": {"type": "ttl"}}),
            namespace,
        )
        operator = operator_as(k8s, control_plane, "svcreg", tmp_path).start()
        try:
            k8s.kubectl("wait", "--for=condition=Ready", f"svcreg/{name}", "-n", namespace, "--timeout=60s")
            token = k8s.token(namespace, "consumer")
            url = f"http://127.0.0.1:{operator.port}"
            headers = {"Authorization": f"Bearer {token}"}
            answer = httpx.get(f"{url}/v1/capabilities/greeting", headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            assert [i["name"] for i in answer.json()["items"]] == [name]
            beat = httpx.post(f"{url}/v1/heartbeat/{namespace}/beats", headers=headers, timeout=30)
            assert beat.status_code == 200, beat.text
            # The registration API, as the caller (impersonated), with the caller's own rights.
            k8s.grant(namespace, "consumer", ["create", "patch", "delete"])
            put = httpx.put(
                f"{url}/v1/registrations/{namespace}/via-http",
                headers=headers,
                json={"spec": {"endpoint": target.url}},
                timeout=30,
            )
            assert put.status_code == 201, put.text
            removed = httpx.delete(
                f"{url}/v1/registrations/{namespace}/via-http", headers=headers, timeout=30
            )
            assert removed.status_code == 200, removed.text
            k8s.kubectl(
                "wait",
                "--for=jsonpath={.status.health}=Healthy",
                "svcreg/beats",
                "-n",
                namespace,
                "--timeout=60s",
            )
            events = k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
            assert [e.reason for e in events.items if e.reporting_component == "svcreg.io/operator"] == [
                "Healthy"
            ]
        finally:
            operator.stop()
        log = operator.log_text()
        assert not re.search(r"403|[Ff]orbidden|Not enough permissions", log), log[-5000:]


# Each rule of the chart's roles, the resource its absence must name in a 403, and what has to
# happen for svcreg to need it.
RULES = [
    ("svcreg-operator", 0, "serviceregistrations", "list"),
    ("svcreg-operator", 1, "serviceregistrations/status", "patch"),
    ("svcreg-operator", 2, "servicepolicies", "list"),
    ("svcreg-operator", 3, "servicepolicies/status", "patch"),  # once a policy exists
    ("svcreg-operator", 4, "endpointslices", "list"),
    ("svcreg-operator", 5, "events", "create"),
    ("svcreg-operator", 6, "configmaps", "get"),
    ("svcreg-operator", 7, "serviceaccounts", "impersonate:serviceaccount"),
    ("svcreg-operator", 8, "serviceregistrations", "impersonate-on:serviceaccount:patch"),
    ("svcreg-reviews", 0, "tokenreviews", "create"),
    ("svcreg-reviews", 1, "subjectaccessreviews", "create"),
    ("svcreg-prober-group", 0, "leases", "create"),
]


@pytest.mark.parametrize("rule", RULES, ids=[f"{r[2]}-{r[3]}" for r in RULES])
def test_removing_any_rule_fails_with_a_clear_403(
    installed: str, k8s: Kube, control_plane: Cluster, tmp_path: Path, rule: tuple[str, int, str, str]
) -> None:
    role, index, resource, verb = rule
    # A test copy of the chart's roles, minus one rule, bound to a ServiceAccount of its own.
    account = f"minus-{role.removeprefix('svcreg-')}-{index}"
    k8s.create_service_account(RELEASE_NS, account)
    for source in ("svcreg-operator", "svcreg-reviews"):
        rules = k8s.rbac.read_cluster_role(source).rules
        if source == role:
            del rules[index]
        copy = f"{account}-{source}"
        k8s.rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=copy), rules=rules)
        )
        k8s.rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=copy),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=copy
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=RELEASE_NS)],
            )
        )
    # The prober group's Role lives in the release namespace.
    rules = k8s.rbac.read_namespaced_role("svcreg-prober-group", RELEASE_NS).rules
    if role == "svcreg-prober-group":
        del rules[index]
    copy = f"{account}-prober-group"
    k8s.rbac.create_namespaced_role(
        RELEASE_NS, client.V1Role(metadata=client.V1ObjectMeta(name=copy), rules=rules)
    )
    k8s.rbac.create_namespaced_role_binding(
        RELEASE_NS,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=copy),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=copy),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=RELEASE_NS)],
        ),
    )
    clear = re.compile(rf'(403|[Ff]orbidden).*cannot {verb} resource \\?"{re.escape(resource)}\\?"')
    with http_target() as target:
        namespace, _ = watched_registration(k8s, target)
        k8s.create_service_account(namespace, "consumer")
        bind_cluster_role(k8s, namespace, "consumer", "svcreg-reader")
        if resource == "servicepolicies/status":
            policy = {"apiVersion": "svcreg.io/v1alpha1", "kind": "ServicePolicy", "metadata": {"name": "p"}}
            k8s.apply({**policy, "spec": {"service": "anything"}}, namespace)
        operator = operator_as(k8s, control_plane, account, tmp_path).launch()
        try:
            if verb.startswith("impersonate"):
                # The registration API writes as the caller, after the caller's
                # SubjectAccessReview passes (an update is an apply: the caller needs patch).
                k8s.grant(namespace, "consumer", ["create", "patch", "get", "list"])
                operator.wait_until(lambda: operator.ready() is not None, "/readyz to answer")
                answer = httpx.put(
                    f"http://127.0.0.1:{operator.port}/v1/registrations/{namespace}/via-http",
                    headers={"Authorization": f"Bearer {k8s.token(namespace, 'consumer')}"},
                    json={"spec": {"endpoint": target.url}},
                    timeout=30,
                )
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "WriteFailed"
            if role == "svcreg-reviews":
                operator.wait_until(lambda: operator.ready() is not None, "/readyz to answer")
                token = k8s.token(namespace, "consumer")
                answer = httpx.get(
                    f"http://127.0.0.1:{operator.port}/v1/services",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "ReviewUnavailable"
            _wait_for_log(operator, clear)
        finally:
            operator.stop()


def _wait_for_log(operator: OperatorProcess, pattern: re.Pattern[str]) -> None:
    """Wait for the 403 to be logged; the process may exit over it (a crash-loop with a clear
    reason is fine), but it must say why and not sit silent."""
    deadline = time.monotonic() + 90
    while not pattern.search(operator.log_text()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no clear 403 matching {pattern.pattern!r}; log:\n{operator.log_text()[-4000:]}"
            )
        time.sleep(0.2)
