"""``svcreg dev --node``: the same demo, run in the cluster instead of on the host.

It starts the local control plane with its node (unless one with a node is running), builds the
svcreg image and loads it into the node, installs the Helm chart with it, runs the demo targets
as a Deployment with one Service per example (the examples' endpoints become those Services'
cluster DNS names, so every probe goes through CoreDNS and kube-proxy), binds a reader
ServiceAccount to the chart's ``svcreg-reader`` role, sends the ttl example's heartbeats, and
prints a curl to the release's Service address. Ctrl-C stops all of it: the control plane when
this command started it, else the release and the demo objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from svcreg.core import model
from svcreg.devtools import dev, helm, image
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, node, progress

DEMO = "svcreg-demo"  # the Deployment serving every example's Service
DEMO_LABELS = {"app.kubernetes.io/name": DEMO}
PORT = 80


def demo_documents(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The demo Deployment, one Service per example in front of it, and the examples pointed at
    those Services (a serviceRef example gets its named Service and port)."""
    services: dict[str, str] = {}  # Service name -> port name
    pointed = []
    for doc in examples:
        spec = dict(doc.get("spec") or {})
        name = doc["metadata"]["name"]
        if spec.get("endpoint"):
            services[name] = "http"
            spec["endpoint"] = f"http://{name}.{dev.NAMESPACE}.svc:{PORT}"
        reference = spec.get("serviceRef") or {}
        if reference.get("name"):
            port = reference.get("port")
            services[reference["name"]] = port if isinstance(port, str) else "http"
        pointed.append(doc | {"spec": spec})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEMO, "labels": DEMO_LABELS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": DEMO_LABELS},
            "template": {
                "metadata": {"labels": DEMO_LABELS},
                "spec": {
                    "containers": [
                        {
                            "name": "demo",
                            "image": node.TOOLS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["serve", "8080"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }
    fronts = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": DEMO_LABELS},
            "spec": {
                "selector": DEMO_LABELS,
                "ports": [{"name": port, "port": PORT, "targetPort": 8080}],
            },
        }
        for name, port in sorted(services.items())
    ]
    return [deployment, *fronts, *pointed]


def reader_documents() -> list[dict[str, Any]]:
    """The demo's reader ServiceAccount, bound to the chart's consumer roles."""
    return [d for d in dev.rbac_documents() if d["kind"] != "ClusterRole"]


def _service_url(env: dict[str, str]) -> str:
    """The release's Service address, which the host reaches through kube-proxy's rules."""
    found = kube.kubectl("get", "service", helm.NAME, "-n", helm.NAMESPACE, "-o", "json", env=env).stdout
    return f"http://{json.loads(found)['spec']['clusterIP']}:8080"


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise cluster.ClusterError(f"discovery at {url} did not become ready in {timeout:.0f}s")
        time.sleep(0.5)


def _announce(url: str, token: str, kubeconfig: str) -> None:
    curl = f"curl -s -H {shlex.quote('Authorization: Bearer ' + token)} {url}/v1/capabilities"
    code = "from svcreg.client import DiscoveryClient; print(DiscoveryClient().resolve('greet'))"
    consumer = shlex.join([
        "kubectl", "run", "consumer", "-n", dev.NAMESPACE, "--rm", "-i", "--restart=Never",
        f"--image={image.IMAGE}", "--image-pull-policy=Never",
        "--overrides=" + json.dumps({"spec": {"serviceAccountName": dev.ACCOUNT}}),
        "--", "python", "-c", code,
    ])  # fmt: skip
    print(
        "\nsvcreg dev --node is ready: the chart runs in the cluster, the demo targets are pods.\n"
        f"Discovery, through the release's Service, as the reader ServiceAccount "
        f"{dev.NAMESPACE}/{dev.ACCOUNT}:\n\n  {curl}\n\n"
        f"kubectl: export KUBECONFIG={shlex.quote(kubeconfig)}; kubectl get svcreg -w\n"
        f"An in-cluster caller (the mounted token, the client's default URL):\n\n  {consumer}\n\n"
        "Ctrl-C stops everything svcreg dev started.\n",
        flush=True,
    )


def run(directory: Path | None = None) -> int:
    already = cluster.status(directory)
    if already is not None and not already.node:
        print(
            "svcreg dev --node: a control plane without a node is running; stop it first "
            "(svcreg cluster down)",
            file=sys.stderr,
        )
        return 1
    report = progress.stderr_reporter
    release: helm.Release | None = None
    env: dict[str, str] = {}
    signal.signal(signal.SIGTERM, dev.interrupt)
    try:
        running = cluster.up(directory, report=report, node=True)
        env = running.env()
        archive = image.build_image(kube.REPO_ROOT, report=report)
        node.import_image(node.Layout(Path(running.directory) / "node"), archive)
        release = helm.Release(env, Path(running.directory) / "helm")
        if not release.installed():
            report(f"installing the chart as {helm.NAMESPACE}/{helm.NAME}")
            release.install()
        examples = dev.example_documents()
        ttl = [
            d["metadata"]["name"]
            for d in examples
            if model.ServiceRegistrationSpec.model_validate(d.get("spec") or {}).check_type() == "ttl"
        ]
        report("applying the demo targets, their Services, the examples and a reader ServiceAccount")
        dev.apply(demo_documents(examples) + reader_documents(), env)
        token = kube.kubectl(
            "create", "token", dev.ACCOUNT, "-n", dev.NAMESPACE, "--duration=24h", env=env
        ).stdout.strip()
        url = _service_url(env)
        _wait_ready(url)
        _announce(url, token, running.kubeconfig)
        asyncio.run(dev.heartbeats(url, token, ttl))
    except KeyboardInterrupt:
        print("\nsvcreg dev: stopping", file=sys.stderr)
    except (cluster.ClusterError, node.NodeError, helm.HelmError) as error:
        print(f"svcreg dev --node: {error}", file=sys.stderr)
        return 1
    finally:
        if already is None:
            cluster.down(directory, report=report)
        elif env:
            _remove_demo(env, release)
    return 0


def _remove_demo(env: dict[str, str], release: helm.Release | None) -> None:
    """On a cluster this command did not start: remove what it added, keep the rest."""
    dev.delete(demo_documents(dev.example_documents()) + reader_documents(), env)
    if release is not None and release.installed():
        release.uninstall()
